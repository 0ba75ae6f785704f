"""The video VAE's training step: mix clip lengths -> encode/decode -> losses -> backward -> step -> EMA,
then, once the adversarial phase has begun, the discriminator's step on the same clips.

The VAE is 1.2's pipeline (or its per-frame VAE alone), or one of 2.0's video VAEs (the Hunyuan
causal 3-D VAE, the Video DC-AE), which code a video in one network: :func:`autoencode` gives every
kind's training pass as one :class:`VAEOutput`.

The loop, engines, EMA, lr schedule, checkpoints, logging, guards, data and RNG are
:mod:`opensora.training.base`'s. The discriminator has an engine of its own (its AdamW and loss
scaler, at a constant lr), saved in each checkpoint as ``discriminator_model`` /
``discriminator_optimizer`` / ``discriminator_engine``. :func:`train_vae` runs a :class:`VAETrainConfig`.
"""

from __future__ import annotations

import functools
import random
from typing import Any

import torch
from torch import nn

from opensora.acceleration.engine import Engine
from opensora.errors import ConfigError
from opensora.eval.lpips import LPIPS, load_lpips
from opensora.eval.weights import MetricUnavailableError, weights_dir
from opensora.models.vae.dc_ae import VideoDCAE
from opensora.models.vae.hunyuan import AutoencoderKLCausal3D
from opensora.models.vae.pipeline import VAEOutput, VideoAutoencoderPipeline
from opensora.models.vae.spatial import SpatialVAE
from opensora.registry import MODELS, build_module
from opensora.training.base import BaseTrainer, StepOutput, TrainResult, count_parameters, run
from opensora.training.config import VAETrainConfig
from opensora.training.ema import unwrap
from opensora.training.vae_losses import (
    adaptive_generator_weight,
    hinge_discriminator_loss,
    hinge_generator_loss,
    kl_loss,
    reconstruction_loss,
)

DISCRIMINATOR = "discriminator_"  # the discriminator engine's key in self.engines and its checkpoint prefix
METRICS = ("rec_loss", "kl_loss", "z_rec_loss", "identity_loss", "g_loss", "d_weight", "d_loss", "d_grad_norm")
VIDEO_VAES = (AutoencoderKLCausal3D, VideoDCAE)  # one network codes the whole video: no spatial latents
TRAINABLE = (VideoAutoencoderPipeline, SpatialVAE, *VIDEO_VAES)


def train_vae(cfg: VAETrainConfig) -> TrainResult:
    """Run ``cfg`` to the end (``epochs`` or ``max_steps``); the process group is torn down afterwards."""
    return run(cfg, VAETrainer)


def mix_clip_length(video: torch.Tensor, strategy: str | None, image_ratio: float) -> torch.Tensor:
    """The release's mixed image/video batches, drawn from Python's (seeded, checkpointed) generator.

    ``mixed_video_image``: the first frame only, with probability ``image_ratio``;
    ``mixed_video_random``: the first 1..T frames, the length uniform; None: ``video`` as it is.
    """
    if strategy == "mixed_video_image" and random.random() < image_ratio:
        return video[:, :, :1]
    if strategy == "mixed_video_random":
        return video[:, :, : random.randint(1, video.shape[2])]
    return video


class VAETrainer(BaseTrainer):
    """Trains a VideoAutoencoderPipeline (its frozen parts stay frozen) and, optionally, a discriminator."""

    cfg: VAETrainConfig
    metric_names = METRICS

    # ---- building ---------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        cfg = self.cfg
        self.lpips = build_lpips(cfg, self.dims.device)
        model = build_module(cfg.model, MODELS)
        if not isinstance(model, TRAINABLE):
            names = ", ".join(kind.__name__ for kind in TRAINABLE)
            raise ConfigError(f"VAE training needs one of {names}; got {type(model).__name__}")
        if isinstance(model, VIDEO_VAES):
            check_video_vae_losses(cfg, model)
        elif cfg.spatial_vae_weights:
            spatial = model if isinstance(model, SpatialVAE) else model.spatial_vae
            spatial.load_diffusers_weights(cfg.spatial_vae_weights, cfg.spatial_vae_subfolder)
        if cfg.use_image_identity_loss and isinstance(model, VideoAutoencoderPipeline):
            spatial_channels = model.spatial_vae.module.config.latent_channels
            if model.out_channels != spatial_channels:
                raise ConfigError(
                    f"use_image_identity_loss needs the temporal latent to have the per-frame latent's "
                    f"{spatial_channels} channels, not {model.out_channels}; set use_image_identity_loss=False"
                )
        if cfg.freeze_encoder:
            model.freeze_encoder()
        return model.train()  # from_pretrained returns eval mode

    def build_extra(self) -> None:
        if self.cfg.discriminator is None:
            return
        discriminator = build_module(self.cfg.discriminator, MODELS).train()
        self.disc_params = count_parameters(discriminator)
        self.engines[DISCRIMINATOR] = self.make_engine(discriminator, self.cfg.discriminator_lr or self.cfg.lr)

    @property
    def disc_engine(self) -> Engine | None:
        return self.engines.get(DISCRIMINATOR)

    def _write_summary(self) -> None:
        super()._write_summary()
        cfg = self.cfg
        terms = [name for name, on in (("pixel L1", cfg.use_real_rec_loss), ("latent L1", cfg.use_z_rec_loss),
                                       ("image identity", cfg.use_image_identity_loss)) if on]  # fmt: skip
        if self.lpips is not None:
            terms.append(f"LPIPS-{cfg.lpips_net} x {cfg.perceptual_loss_weight}")
        self.log.info(f"losses: {', '.join(terms)}; clips mixed by {cfg.mixed_strategy}")
        if self.disc_engine is not None:
            self.log.info(
                f"discriminator {cfg.discriminator['type']}: {self.disc_params[0] / 1e6:.2f}M parameters; "
                f"hinge GAN losses from step {cfg.discriminator_start}"
            )

    # ---- the step ---------------------------------------------------------------------------------
    def train_step(self, micro_batches: list[dict[str, Any]]) -> StepOutput:
        adversarial = self.disc_engine is not None and self.state.step >= self.cfg.discriminator_start
        forward = functools.partial(self.generator_loss, adversarial=adversarial)
        results = self.accumulate(self.engine, micro_batches, forward, prepare=self.prepare, prepare_phase="prepare")
        grad_norm, stepped = self.optimizer_step()
        metrics = _mean_metrics([metrics for _, (metrics, _) in results])
        if adversarial:
            clips = [clips for _, (_, clips) in results]
            judged = self.accumulate(self.disc_engine, clips, self.discriminator_loss, phase="discriminator")
            with self.timer("optimizer"):
                metrics["d_grad_norm"], _ = self.disc_engine.clip_and_step(self.cfg.grad_clip)
            metrics["d_loss"] = float(torch.stack([loss for loss, _ in judged]).mean())
        return StepOutput(float(torch.stack([loss for loss, _ in results]).mean()), grad_norm, stepped, metrics)

    def prepare(self, batch: dict[str, Any]) -> torch.Tensor:
        video = batch["video"].to(self.dims.device, torch.float32)  # (B, 3, T, H, W) in [-1, 1]
        return mix_clip_length(video, self.cfg.mixed_strategy, self.cfg.mixed_image_ratio)

    def generator_loss(self, x: torch.Tensor, adversarial: bool) -> tuple[torch.Tensor, tuple[dict, Any]]:
        """The VAE's loss on ``x``; also returns its terms and, when adversarial, (x, reconstruction) for the
        discriminator."""
        cfg = self.cfg
        decode_pixels = cfg.use_real_rec_loss or adversarial
        out = autoencode(self.engine.model, x, cfg.sample_posterior, decode_pixels)
        terms = self.reconstruction_terms(x, out)
        # the zero keeps the loss in the graph when no term applies (an identity loss on a video clip)
        loss = sum(terms.values(), 0.0 * out.z.sum())
        if adversarial:
            g_loss = hinge_generator_loss(self.judge_frozen(out.x_rec))
            last_layer = unwrap(self.engine.model).last_decoder_layer()
            if cfg.adaptive_generator_weight:
                d_weight = adaptive_generator_weight(terms["rec_loss"], g_loss, last_layer, cfg.generator_factor)
            else:
                d_weight = torch.tensor(cfg.generator_factor)
            loss = loss + d_weight * cfg.discriminator_factor * g_loss
            terms.update(g_loss=g_loss, d_weight=d_weight)
        metrics = {name: value.detach() for name, value in terms.items()}
        return loss, (metrics, (x, out.x_rec.detach()) if adversarial else None)

    def reconstruction_terms(self, x: torch.Tensor, out: VAEOutput) -> dict[str, torch.Tensor]:
        cfg, terms = self.cfg, {}
        if cfg.use_real_rec_loss:
            terms["rec_loss"] = reconstruction_loss(x, out.x_rec, self.lpips, cfg.perceptual_loss_weight)
            if out.posteriors:  # the DC-AE's latent is deterministic
                terms["kl_loss"] = cfg.kl_loss_weight * kl_loss(out.posteriors)
        if cfg.use_z_rec_loss:
            terms["z_rec_loss"] = reconstruction_loss(out.x_z, out.x_z_rec)
        if cfg.use_image_identity_loss and x.shape[2] == 1:
            # an image's temporal latent should be its spatial latent: the temporal VAE passes images through
            terms["identity_loss"] = reconstruction_loss(out.x_z, out.z)
        return terms

    def judge_frozen(self, video: torch.Tensor) -> torch.Tensor:
        """The discriminator's logits of ``video`` with its weights frozen: the GAN loss trains only the VAE."""
        discriminator = unwrap(self.disc_engine.model)  # around the DDP wrapper: no gradient sync for this pass
        discriminator.requires_grad_(False)
        try:
            return discriminator(video)
        finally:
            discriminator.requires_grad_(True)

    def discriminator_loss(self, clips: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, None]:
        real, fake = clips
        discriminator = self.disc_engine.model
        loss = hinge_discriminator_loss(discriminator(real), discriminator(fake))
        return self.cfg.discriminator_factor * loss, None


def autoencode(model: nn.Module, x: torch.Tensor, sample: bool, decode_pixels: bool) -> VAEOutput:
    """The training pass of ``model`` (maybe wrapped for DDP, which must see the call) on ``x``."""
    vae = unwrap(model)
    if isinstance(vae, AutoencoderKLCausal3D):
        out = model(x, sample=sample)
        return VAEOutput(None, [out.posterior], out.z, None, out.x_rec)
    if isinstance(vae, VideoDCAE):
        out = model(x)
        return VAEOutput(None, [], out.z, None, out.x_rec)
    return model(x, sample=sample, decode_pixels=decode_pixels)


def check_video_vae_losses(cfg: VAETrainConfig, model: nn.Module) -> None:
    """A 2.0 video VAE has no spatial latents (nor, the DC-AE, a posterior): only pixel losses apply."""
    name = type(model).__name__
    for key in ("use_z_rec_loss", "use_image_identity_loss", "spatial_vae_weights"):
        if getattr(cfg, key):
            raise ConfigError(f"{key} needs the 1.2 pipeline's spatial latents, which {name} has not; unset it")
    if not cfg.use_real_rec_loss:
        raise ConfigError(f"{name} trains on pixel losses: set use_real_rec_loss=True")
    if isinstance(model, VideoDCAE) and cfg.kl_loss_weight > 0:
        raise ConfigError(f"the Video DC-AE's latent is deterministic (no KL): set kl_loss_weight=0, "
                          f"not {cfg.kl_loss_weight}")  # fmt: skip


def _mean_metrics(per_batch: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """{name: mean over the micro-batches that had it}."""
    names = {name for metrics in per_batch for name in metrics}
    return {
        name: float(torch.stack([metrics[name].float() for metrics in per_batch if name in metrics]).mean())
        for name in names
    }


def build_lpips(cfg: VAETrainConfig, device: torch.device) -> LPIPS | None:
    """The frozen LPIPS network of the perceptual loss; None when that loss is off."""
    if not (cfg.use_real_rec_loss and cfg.perceptual_loss_weight > 0):
        return None
    if not cfg.lpips_pretrained:
        return LPIPS(cfg.lpips_net).to(device)
    try:
        return load_lpips(cfg.lpips_net, weights_dir(cfg.lpips_weights), device)
    except MetricUnavailableError as exc:
        raise ConfigError(
            f"the perceptual loss (LPIPS {cfg.lpips_net}) {exc}; set lpips_weights=DIR, or perceptual_loss_weight=0"
        ) from None
