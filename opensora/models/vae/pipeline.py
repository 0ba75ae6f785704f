"""The Open-Sora 1.2 video VAE: a per-frame spatial VAE followed by a temporal VAE.

Videos are cut into micro-clips of ``micro_frame_size`` frames (17 -> 5 latent frames), each
encoded and decoded on its own, so memory does not grow with video length. Latents are
normalised by the release's shift and scale. Large frames are processed in overlapping
spatial tiles (see :mod:`opensora.models.vae.tiling`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from opensora.models.modeling import ModelMixin
from opensora.models.presets import preset_factory
from opensora.models.vae.distributions import DiagonalGaussian
from opensora.models.vae.spatial import SpatialVAE
from opensora.models.vae.temporal import TemporalVAE
from opensora.registry import MODELS, build_module

RELEASE_SCALE = (3.85, 2.32, 2.33, 3.06)
RELEASE_SHIFT = (-0.10, 0.34, 0.27, 0.98)
TEMPORAL_SD = dict(
    filters=128, num_res_blocks=4, channel_multipliers=(1, 2, 2, 4), temporal_downsample=(False, True, True)
)

MODELS.register("VideoAutoencoderKL", SpatialVAE)
MODELS.register("VAE_Temporal", preset_factory(TemporalVAE))
MODELS.register("VAE_Temporal_SD", preset_factory(TemporalVAE, TEMPORAL_SD))


@dataclass
class VAEOutput:
    """Every stage of one training pass through a video VAE, in its own (unnormalised) latent space.

    The pipeline fills every field; a VAE coding the video in one network (2.0's) has no spatial
    latents (``x_z``, ``x_z_rec`` None) and one posterior, or none if it is deterministic.
    """

    x_z: torch.Tensor | None  # spatial latents [B, 4, T, H/8, W/8]
    posteriors: list[DiagonalGaussian]  # the temporal posterior of each micro-clip
    z: torch.Tensor  # temporal latents sampled from them [B, 4, T', H/8, W/8]
    x_z_rec: torch.Tensor | None  # the temporal reconstruction of x_z
    x_rec: torch.Tensor | None  # pixels decoded from x_z_rec [B, 3, T, H, W]; None unless asked for


class VideoAutoencoderPipeline(ModelMixin):
    """Encode [B, 3, T, H, W] videos in [-1, 1] to [B, 4, T', H/8, W/8] latents and back.

    Arguments are the fields of the release's ``config.json``. Tiling of the per-frame VAE is a
    runtime setting (:meth:`set_tiling`): by default frames larger than 512 x 512 pixels are tiled.
    """

    IGNORED_CONFIG_KEYS = ("cal_loss",)

    def __init__(
        self,
        vae_2d: dict | None = None,
        vae_temporal: dict | None = None,
        micro_frame_size: int | None = 17,
        scale: tuple[float, ...] | float = RELEASE_SCALE,
        shift: tuple[float, ...] | float = RELEASE_SHIFT,
        freeze_vae_2d: bool = False,
    ) -> None:
        super().__init__()
        vae_2d = dict(vae_2d or {"type": "VideoAutoencoderKL", "micro_batch_size": 4})
        vae_temporal = dict(vae_temporal or {"type": "VAE_Temporal_SD"})
        self.register_config(
            vae_2d=vae_2d, vae_temporal=vae_temporal, micro_frame_size=micro_frame_size,
            scale=list(scale) if isinstance(scale, list | tuple) else scale,
            shift=list(shift) if isinstance(shift, list | tuple) else shift, freeze_vae_2d=freeze_vae_2d,
        )  # fmt: skip
        self.spatial_vae = build_module(vae_2d, MODELS, load_weights=False)  # weights come with the pipeline
        self.temporal_vae = build_module(vae_temporal, MODELS)
        self.micro_frame_size = micro_frame_size
        self.micro_z_frame_size = self.temporal_vae.latent_frames(micro_frame_size) if micro_frame_size else None
        self.out_channels = self.temporal_vae.out_channels
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32).reshape(1, -1, 1, 1, 1))
        self.register_buffer("shift", torch.tensor(shift, dtype=torch.float32).reshape(1, -1, 1, 1, 1))
        if freeze_vae_2d:
            self.spatial_vae.requires_grad_(False)
        self.set_tiling()

    # ---- runtime settings ---------------------------------------------------------------------
    def set_tiling(
        self, enabled: bool | None = None, tile: int = 64, overlap: int = 16, threshold: int = 512 * 512
    ) -> None:
        """Spatial tiling of the per-frame VAE (see :meth:`SpatialVAE.set_tiling`)."""
        self.spatial_vae.set_tiling(enabled, tile, overlap, threshold)

    def freeze_encoder(self) -> None:
        """Train the decoders only: latents (and features or models trained on them) stay valid."""
        self.spatial_vae.freeze_encoder()
        self.temporal_vae.freeze_encoder()

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute activations of both VAEs in the backward pass instead of storing them (training)."""
        self.spatial_vae.set_grad_checkpointing(enabled)
        self.temporal_vae.set_grad_checkpointing(enabled)

    def last_decoder_layer(self) -> torch.Tensor:
        """The weight of the temporal decoder's output convolution (where the release balanced its GAN loss)."""
        return self.temporal_vae.decoder.conv_out.conv.weight

    # ---- sizes --------------------------------------------------------------------------------
    def get_latent_size(self, size: tuple) -> list:
        """Latent (T, H, W) of a video (T, H, W); None entries stay None. 17 -> 5, 34 -> 10, 1 -> 1."""
        T, H, W = self.spatial_vae.get_latent_size(size)
        if T is not None:
            if self.micro_frame_size:
                chunks, rest = divmod(T, self.micro_frame_size)
                T = chunks * self.micro_z_frame_size + (self.temporal_vae.latent_frames(rest) if rest else 0)
            else:
                T = self.temporal_vae.latent_frames(T)
        return [T, H, W]

    # ---- encode -------------------------------------------------------------------------------
    def _frame_chunks(self, length: int, chunk: int | None) -> list[slice]:
        step = chunk or length
        return [slice(i, i + step) for i in range(0, length, step)]

    def _temporal_posteriors(self, x_z: torch.Tensor) -> list[DiagonalGaussian]:
        return [self.temporal_vae.encode(x_z[:, :, s]) for s in self._frame_chunks(x_z.shape[2], self.micro_frame_size)]

    def encode(self, x: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        """Video [B, 3, T, H, W] in [-1, 1] -> normalised latent; ``sample=False`` uses posterior means."""
        x_z = self.spatial_vae.encode(x, sample=sample, generator=generator)
        parts = self._temporal_posteriors(x_z)
        z = torch.cat([p.sample(generator) if sample else p.mode() for p in parts], dim=2)
        return (z - self.shift.to(z.dtype)) / self.scale.to(z.dtype)

    # ---- decode -------------------------------------------------------------------------------
    def decode(self, z: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Normalised latent [B, 4, T', h, w] -> video [B, 3, num_frames, 8h, 8w]."""
        z = z * self.scale.to(z.dtype) + self.shift.to(z.dtype)
        return self.spatial_vae.decode(self._decode_temporal(z, num_frames))

    def _decode_temporal(self, z: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Temporal latents [B, 4, T', h, w] -> spatial latents [B, 4, num_frames, h, w], micro-clip by micro-clip."""
        clips, remaining = [], num_frames
        for s in self._frame_chunks(z.shape[2], self.micro_z_frame_size):
            frames = min(self.micro_frame_size, remaining) if self.micro_frame_size else num_frames
            clips.append(self.temporal_vae.decode(z[:, :, s], num_frames=frames))
            remaining -= self.micro_frame_size or 0
        return torch.cat(clips, dim=2)

    def forward(self, x: torch.Tensor, sample: bool = True, decode_pixels: bool = True) -> VAEOutput:
        """The training pass: encode ``x`` [B, 3, T, H, W] and reconstruct it, keeping every stage.

        ``decode_pixels=False`` stops at the spatial latents (losses on latents only need no pixels).
        """
        x_z = self.spatial_vae.encode(x, sample=sample)
        posteriors = self._temporal_posteriors(x_z)
        z = torch.cat([p.sample() if sample else p.mode() for p in posteriors], dim=2)
        x_z_rec = self._decode_temporal(z, num_frames=x.shape[2])
        x_rec = self.spatial_vae.decode(x_z_rec) if decode_pixels else None
        return VAEOutput(x_z, posteriors, z, x_z_rec, x_rec)


def opensora_vae_v1_2(
    from_pretrained: str | None = None, micro_batch_size: int = 4, micro_frame_size: int = 17, **kwargs
) -> VideoAutoencoderPipeline:
    """The released 1.2 VAE: SDXL-shaped spatial VAE + VAE_Temporal_SD, release shift/scale."""
    vae_2d = {"type": "VideoAutoencoderKL", "micro_batch_size": micro_batch_size}
    build = preset_factory(VideoAutoencoderPipeline, dict(vae_2d=vae_2d, micro_frame_size=micro_frame_size))
    return build(from_pretrained=from_pretrained, **kwargs)


MODELS.register("VideoAutoencoderPipeline", preset_factory(VideoAutoencoderPipeline))
MODELS.register("OpenSoraVAE_V1_2", opensora_vae_v1_2)
