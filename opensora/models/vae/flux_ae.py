"""FLUX.1's image autoencoder, as Open-Sora 2.0's text-to-image-to-video mode uses it (``autoencoder_2d``).

A diffusers ``AutoencoderKL`` (no quant convs, 16 latent channels, 8x down) applied to every frame
of a video: [B, 3, T, H, W] in [-1, 1] <-> latents [B, 16, T, H/8, W/8], normalised as
``scale_factor * (z - shift_factor)``. The released weights are Black Forest Labs' ``ae.safetensors``;
:meth:`FluxAutoencoder.from_pretrained` renames them on load (:func:`convert_bfl_state_dict`).

An image coder has no time axis, so the class has no ``causal`` attribute: that flag describes the
video VAEs whose latent frames the MMDiT denoises, and this model only makes and reads images.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from opensora.errors import CheckpointError
from opensora.models.checkpoint_io import load_state_dict_file
from opensora.models.modeling import ModelMixin, load_weights
from opensora.models.presets import preset_factory
from opensora.registry import MODELS

PREFIX = "autoencoder."  # this module's names: autoencoder.<diffusers AutoencoderKL name>

# --------------------------------------------------------------------------- BFL names -> ours

# BFL name prefix -> ours (before PREFIX). {0}, {1} are the pattern's groups; {up} is the decoder
# level in diffusers' order: BFL numbers decoder levels by resolution (up.0 runs last), diffusers by use.
BFL_RENAMES: tuple[tuple[str, str], ...] = (
    (r"(encoder|decoder)\.mid\.block_1\.", "{0}.mid_block.resnets.0."),
    (r"(encoder|decoder)\.mid\.block_2\.", "{0}.mid_block.resnets.1."),
    (r"(encoder|decoder)\.mid\.attn_1\.norm\.", "{0}.mid_block.attentions.0.group_norm."),
    (r"(encoder|decoder)\.mid\.attn_1\.([qkv])\.", "{0}.mid_block.attentions.0.to_{1}."),
    (r"(encoder|decoder)\.mid\.attn_1\.proj_out\.", "{0}.mid_block.attentions.0.to_out.0."),
    (r"encoder\.down\.(\d+)\.block\.(\d+)\.", "encoder.down_blocks.{0}.resnets.{1}."),
    (r"encoder\.down\.(\d+)\.downsample\.", "encoder.down_blocks.{0}.downsamplers.0."),
    (r"decoder\.up\.(\d+)\.block\.(\d+)\.", "decoder.up_blocks.{up}.resnets.{1}."),
    (r"decoder\.up\.(\d+)\.upsample\.", "decoder.up_blocks.{up}.upsamplers.0."),
    (r"(encoder|decoder)\.norm_out\.", "{0}.conv_norm_out."),
)
_RULES = [(re.compile(pattern), template) for pattern, template in BFL_RENAMES]
# BFL's attention projections are 1x1 convolutions, diffusers' Linear layers
_LINEAR = re.compile(r"\.attentions\.0\.(to_q|to_k|to_v|to_out\.0)\.weight$")


def bfl_to_module_name(key: str, num_levels: int) -> str:
    """One BFL ``ae.safetensors`` name -> this module's (``num_levels`` = len(ch_mult))."""
    for pattern, template in _RULES:
        match = pattern.match(key)
        if match:
            groups = match.groups()
            up = num_levels - 1 - int(groups[0]) if groups[0].isdigit() else None
            key = template.format(*groups, up=up) + key[match.end() :]
            break
    return PREFIX + key.replace(".nin_shortcut.", ".conv_shortcut.")


def convert_bfl_state_dict(state_dict: Mapping[str, torch.Tensor], num_levels: int) -> dict[str, torch.Tensor]:
    """BFL ``ae.safetensors`` names and shapes -> this module's (``num_levels`` = len(ch_mult)).

    Names already in diffusers' AutoencoderKL layout match no rule and only gain the prefix, so a
    diffusers VAE file converts too. Names outside ``encoder.``/``decoder.`` (this module's own
    among them) pass through unchanged, for the loader's strict check to judge.
    """
    converted = {}
    for key, tensor in state_dict.items():
        if key.startswith(("encoder.", "decoder.")):
            key = bfl_to_module_name(key, num_levels)
            if _LINEAR.search(key) and tensor.ndim == 4:
                tensor = tensor.flatten(1)  # [C, C, 1, 1] -> [C, C]
        converted[key] = tensor
    return converted


# --------------------------------------------------------------------------- the model


class FluxAutoencoder(ModelMixin):
    """FLUX.1's autoencoder; the arguments are the keys of the release's ``img_flux_ae`` config.

    ``ch * m`` for ``m`` in ``ch_mult`` are the widths of the levels (each but the last halves the
    image), ``z_channels`` the latent channels. ``norm_num_groups`` is 32 in the release (BFL fixes
    it); tiny test models use fewer. ``resolution`` is recorded but shapes nothing.

    ``out_ch`` is the number of image channels decoded; the attribute ``out_channels`` is the latent
    channel count, as on every VAE of this package.
    """

    IGNORED_CONFIG_KEYS = ("cache_dir", "device_map", "torch_dtype")

    def __init__(
        self,
        resolution: int = 256,
        in_channels: int = 3,
        ch: int = 128,
        out_ch: int = 3,
        ch_mult: Sequence[int] = (1, 2, 4, 4),
        num_res_blocks: int = 2,
        z_channels: int = 16,
        scale_factor: float = 0.3611,
        shift_factor: float = 0.1159,
        norm_num_groups: int = 32,
    ) -> None:
        super().__init__()
        from diffusers import AutoencoderKL  # deferred: importing diffusers takes seconds

        self.register_config(
            resolution=resolution, in_channels=in_channels, ch=ch, out_ch=out_ch, ch_mult=list(ch_mult),
            num_res_blocks=num_res_blocks, z_channels=z_channels, scale_factor=scale_factor,
            shift_factor=shift_factor, norm_num_groups=norm_num_groups,
        )  # fmt: skip
        if not ch_mult:
            raise ValueError("ch_mult must name at least one level")
        widths = [ch * m for m in ch_mult]
        bad = [width for width in widths if width % norm_num_groups]
        if bad:
            raise ValueError(f"level widths {bad} (ch={ch} times ch_mult) are not divisible by "
                             f"norm_num_groups={norm_num_groups}")  # fmt: skip
        self.autoencoder = AutoencoderKL(
            in_channels=in_channels,
            out_channels=out_ch,
            down_block_types=["DownEncoderBlock2D"] * len(widths),
            up_block_types=["UpDecoderBlock2D"] * len(widths),
            block_out_channels=widths,
            layers_per_block=num_res_blocks,
            latent_channels=z_channels,
            norm_num_groups=norm_num_groups,
            sample_size=resolution,
            use_quant_conv=False,
            use_post_quant_conv=False,
        )
        self.scale_factor = scale_factor
        self.shift_factor = shift_factor
        self.out_channels = z_channels
        self.spatial_compression = 2 ** (len(widths) - 1)

    # ---- sizes --------------------------------------------------------------------------------
    def get_latent_size(self, size: Sequence[int | None]) -> list[int | None]:
        """Latent (T, H, W) of frames (T, H, W): [T, ceil(H/8), ceil(W/8)]; None stays None.

        This is the size whose decoding covers the frame (the pipeline crops the rest). Encoding a
        frame whose sides are not multiples of 8 gives floor(H/8): each stride-2 convolution pads
        only the bottom/right by one, so it drops an odd last row.
        """
        T, H, W = size
        f = self.spatial_compression
        return [T, None if H is None else math.ceil(H / f), None if W is None else math.ceil(W / f)]

    # ---- coding -------------------------------------------------------------------------------
    @staticmethod
    def _per_frame(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        frames = x.transpose(1, 2).flatten(0, 1)  # (B*T, C, H, W)
        return fn(frames).unflatten(0, (B, -1)).transpose(1, 2)  # (B, C', T, H', W')

    def encode(self, x: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        """Frames [B, 3, T, H, W] in [-1, 1] -> ``scale_factor * (z - shift_factor)`` [B, 16, T, H/8, W/8].

        z is drawn from the posterior (as BFL's encoder does) or, with ``sample=False``, its mean.
        """
        if x.ndim != 5 or x.shape[1] != self.config["in_channels"]:
            raise ValueError(f"expected frames [B, {self.config['in_channels']}, T, H, W], got {list(x.shape)}")

        def encode_frames(frames: torch.Tensor) -> torch.Tensor:
            posterior = self.autoencoder.encode(frames).latent_dist
            z = posterior.sample(generator) if sample else posterior.mode()  # (B*T, 16, h, w)
            return self.scale_factor * (z - self.shift_factor)

        return self._per_frame(encode_frames, x)

    def decode(self, z: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """Normalised latents [B, 16, T, h, w] -> frames [B, 3, T, 8h, 8w].

        ``num_frames`` is accepted where the video VAEs take it; each latent frame is one frame, so
        it must equal T when given.
        """
        if z.ndim != 5 or z.shape[1] != self.out_channels:
            raise ValueError(f"expected a latent [B, {self.out_channels}, T, H, W], got {list(z.shape)}")
        if num_frames is not None and num_frames != z.shape[2]:
            raise ValueError(f"the image autoencoder decodes {z.shape[2]} latent frames to {z.shape[2]} frames, "
                             f"not {num_frames}")  # fmt: skip

        def decode_frames(frames: torch.Tensor) -> torch.Tensor:
            return self.autoencoder.decode(frames / self.scale_factor + self.shift_factor).sample

        return self._per_frame(decode_frames, z)

    def forward(self, x: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reconstruct frames: decode(encode(x))."""
        return self.decode(self.encode(x, sample, generator))

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute the AutoencoderKL's block activations in the backward pass instead of storing them."""
        if enabled:
            self.autoencoder.enable_gradient_checkpointing()
        else:
            self.autoencoder.disable_gradient_checkpointing()

    # ---- loading ------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | os.PathLike,
        *,
        strict: bool = True,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str | None = None,
        subfolder: str | None = None,
        revision: str | None = None,
        defaults: Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> FluxAutoencoder:
        """Load a single weights file in BFL's layout (the release's ``flux1-dev-ae.safetensors``),
        diffusers' or this module's own; directories and hub ids load as for every model.

        A single file has no config: ``defaults`` and ``overrides`` over the constructor defaults
        (the release sizes) are the architecture.
        """
        path = Path(path_or_id).expanduser()
        if not path.is_file():
            return super().from_pretrained(
                path_or_id, strict=strict, device=device, dtype=dtype, subfolder=subfolder, revision=revision,
                defaults=defaults, **overrides,
            )  # fmt: skip
        if subfolder:
            raise CheckpointError(f"cannot load '{path}': subfolder '{subfolder}' given for a single file")
        kwargs = cls._constructor_kwargs(dict(defaults or {}), overrides, label=f"'{path}'")
        with torch.device("meta"):
            model = cls(**kwargs)
        levels = len(model.config["ch_mult"])
        state_dict = convert_bfl_state_dict(load_state_dict_file(path), levels)
        load_weights(model, state_dict, strict=strict, device=device, dtype=dtype, source=f"'{path}'")
        return model.eval()


MODELS.register("FluxAutoencoder", preset_factory(FluxAutoencoder))
MODELS.register("autoencoder_2d", preset_factory(FluxAutoencoder))  # the release's name
MODELS.register("flux_ae", preset_factory(FluxAutoencoder))
