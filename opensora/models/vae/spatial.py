"""The per-frame image VAE: diffusers' AutoencoderKL applied to every frame of a video."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from opensora.models.vae.distributions import DiagonalGaussian
from opensora.models.vae.tiling import TileSpec, tiled_apply

# The SD / SDXL VAE shape used by Open-Sora 1.2 (its weights come with the pipeline checkpoint).
SDXL_VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512],
    layers_per_block=2,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=32,
    sample_size=1024,
)
# Open-Sora 1.2 scaled spatial latents by the SD constant even with the SDXL VAE (whose config says 0.13025)
RELEASE_LATENT_SCALE = 0.18215


def _local_config(from_pretrained: str | None, subfolder: str | None) -> dict | None:
    if not from_pretrained:
        return None
    path = Path(from_pretrained, subfolder or "", "config.json")
    if not path.is_file():
        return None
    allowed = set(SDXL_VAE_CONFIG) | {
        "force_upcast",
        "use_quant_conv",
        "use_post_quant_conv",
        "mid_block_add_attention",
    }
    return {k: v for k, v in json.loads(path.read_text()).items() if k in allowed}


def _load_autoencoder(source: str, subfolder: str | None, cache_dir: str | None, local_files_only: bool) -> nn.Module:
    from diffusers import AutoencoderKL

    from opensora.errors import CheckpointError
    from opensora.models.hub import hub_offline

    try:
        return AutoencoderKL.from_pretrained(
            source, subfolder=subfolder, cache_dir=cache_dir, local_files_only=local_files_only or hub_offline()
        )
    except (OSError, ValueError) as exc:
        hint = f"; on a connected machine run 'hf download {source}'" if not Path(source).exists() else ""
        reason = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"cannot load the image VAE '{source}': {reason}{hint}") from None


class SpatialVAE(nn.Module):
    """Encodes/decodes [B, C, T, H, W] videos frame by frame, ``micro_batch_size`` frames at a time.

    The architecture comes from ``AutoencoderKL_config``, else from the ``config.json`` of a local
    ``from_pretrained`` directory, else it is the SD/SDXL VAE shape. Built on its own (the 1.0/1.1
    configs) it loads the diffusers weights of ``from_pretrained`` (a directory or hub id); inside the
    1.2 pipeline ``load_weights=False``, as the weights arrive with the pipeline checkpoint.
    """

    def __init__(
        self,
        AutoencoderKL_config: dict | None = None,  # noqa: N803 - the release's config key
        from_pretrained: str | None = None,
        subfolder: str | None = None,
        micro_batch_size: int | None = None,
        scaling_factor: float = RELEASE_LATENT_SCALE,
        latent_scale_constant: float | None = None,
        cache_dir: str | None = None,
        local_files_only: bool = False,
        load_weights: bool = True,
    ) -> None:
        super().__init__()
        from diffusers import AutoencoderKL  # deferred: importing diffusers takes seconds

        if from_pretrained and load_weights:
            self.module = _load_autoencoder(from_pretrained, subfolder, cache_dir, local_files_only)
        else:
            config = AutoencoderKL_config or _local_config(from_pretrained, subfolder) or SDXL_VAE_CONFIG
            self.module = AutoencoderKL(**config)
        self.micro_batch_size = micro_batch_size
        self.scaling_factor = latent_scale_constant if latent_scale_constant is not None else scaling_factor
        self.out_channels = self.module.config.latent_channels
        # each down block but the last halves the frame: 8x for the SD shape, 4x with three blocks
        self.factor = 2 ** (len(self.module.config.block_out_channels) - 1)
        self.patch_size = (1, self.factor, self.factor)
        self.set_tiling()

    def set_tiling(
        self, enabled: bool | None = None, tile: int = 64, overlap: int = 16, threshold: int = 512 * 512
    ) -> None:
        """Tile frames: always (True), never (False) or when larger than ``threshold`` pixels (None).

        ``tile`` and ``overlap`` are in latent positions (``factor`` pixels each, 8 for the SD shape).
        Only this per-frame VAE is tiled: its memory grows with the pixel count at full resolution.
        """
        self.tiling_enabled = enabled
        self.latent_tile = TileSpec(tile, overlap)
        self.pixel_tile = TileSpec(tile * self.factor, overlap * self.factor, align=self.factor)
        self.tiling_threshold = threshold

    def freeze_encoder(self) -> None:
        """Train the decoder only: latents of the encoder, and anything trained on them, stay valid."""
        self.module.encoder.requires_grad_(False)
        self.module.quant_conv.requires_grad_(False)

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute the AutoencoderKL's block activations in the backward pass instead of storing them."""
        if enabled:
            self.module.enable_gradient_checkpointing()
        else:
            self.module.disable_gradient_checkpointing()

    def _tiled(self, fn, frames: torch.Tensor, spec: TileSpec, scale: float, pixels: int) -> torch.Tensor:
        on = pixels > self.tiling_threshold if self.tiling_enabled is None else self.tiling_enabled
        return tiled_apply(fn, frames, spec, scale) if on else fn(frames)

    def load_diffusers_weights(self, path: str, subfolder: str | None = None) -> None:
        """Copy the weights of a diffusers AutoencoderKL (directory or hub id) into this VAE."""
        from diffusers import AutoencoderKL

        source = AutoencoderKL.from_pretrained(path, subfolder=subfolder)
        self.module.load_state_dict(source.state_dict())

    def get_latent_size(self, size: tuple) -> list:
        return [None if s is None else s // p for s, p in zip(size, self.patch_size)]

    def _per_frame(self, fn, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        frames = x.transpose(1, 2).flatten(0, 1)  # (B*T, C, H, W)
        step = self.micro_batch_size or frames.shape[0]
        out = torch.cat([fn(frames[i : i + step]) for i in range(0, frames.shape[0], step)])
        return out.unflatten(0, (B, -1)).transpose(1, 2)  # (B, C', T, H', W')

    def encode(self, x: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        """Frames in [-1, 1] -> scaled latents; ``sample=False`` takes the posterior mean."""

        def encode_frames(frames: torch.Tensor) -> torch.Tensor:
            posterior = self.module.encode(frames).latent_dist
            z = posterior.sample(generator) if sample else posterior.mean
            return z * self.scaling_factor

        pixels = x.shape[-2] * x.shape[-1]
        return self._per_frame(lambda f: self._tiled(encode_frames, f, self.pixel_tile, 1 / self.factor, pixels), x)

    def forward(self, x: torch.Tensor, sample: bool = True, decode_pixels: bool = True):
        """The training pass of this VAE on its own (1.0/1.1, or a stage before the temporal VAE).

        Returns a :class:`~opensora.models.vae.pipeline.VAEOutput` whose temporal fields repeat the
        spatial latents, so the VAE trainer's losses apply unchanged. No tiling: training crops are small.
        """
        from opensora.models.vae.pipeline import VAEOutput  # deferred: the pipeline module imports this one

        B = x.shape[0]
        frames = x.transpose(1, 2).flatten(0, 1)  # (B*T, 3, H, W)
        dist = self.module.encode(frames).latent_dist
        posterior = DiagonalGaussian(torch.cat([dist.mean, dist.logvar], dim=1))
        latent = posterior.sample() if sample else posterior.mode()  # (B*T, C, h, w)
        frames_rec = self.module.decode(latent).sample if decode_pixels else None

        def to_video(t: torch.Tensor) -> torch.Tensor:
            return t.unflatten(0, (B, -1)).transpose(1, 2)  # (B, C, T, h, w)

        z = to_video(latent) * self.scaling_factor
        return VAEOutput(z, [posterior], z, z, to_video(frames_rec) if decode_pixels else None)

    def last_decoder_layer(self) -> torch.Tensor:
        """The weight of the decoder's output convolution (where the GAN loss is balanced)."""
        return self.module.decoder.conv_out.weight

    def decode(self, z: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """Scaled latents [B, C, T, h, w] -> frames [B, 3, T, 8h, 8w].

        ``num_frames`` is accepted so the per-frame VAE of 1.0/1.1 decodes where the 1.2 pipeline
        does; each latent frame is one video frame, so it must equal T when given.
        """
        if num_frames is not None and num_frames != z.shape[2]:
            raise ValueError(f"the per-frame VAE decodes {z.shape[2]} latent frames to {z.shape[2]} frames, "
                             f"not {num_frames}")  # fmt: skip

        def decode_frames(frames: torch.Tensor) -> torch.Tensor:
            return self.module.decode(frames / self.scaling_factor).sample

        pixels = z.shape[-2] * z.shape[-1] * self.factor**2
        return self._per_frame(lambda f: self._tiled(decode_frames, f, self.latent_tile, self.factor, pixels), z)
