"""The diffusion training step: encode -> mask -> noise -> predict -> loss -> backward -> step -> EMA.

The loop, checkpoints, logging, guards, data and RNG live in :mod:`opensora.training.base`; this
file holds what is particular to a text-to-video diffusion model: the frozen VAE and text encoder
(or pre-extracted features), the noise scheduler, the conditioning masks and the loss.
:func:`train` runs a :class:`TrainConfig` to the end.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from opensora.datasets import FeatureDataset
from opensora.errors import ConfigError
from opensora.models.checkpoint_io import parse_dtype
from opensora.registry import MODELS, SCHEDULERS, build_module
from opensora.training.base import (
    BaseTrainer,
    StepOutput,
    TrainResult,
    build_dataset,
    check_data_path,
    feature_assignment,
    run,
)
from opensora.training.config import MMDiTTrainConfig, TrainConfig
from opensora.training.losses import diffusion_loss
from opensora.training.masks import MaskGenerator

__all__ = ["CONDITION_KEYS", "TrainResult", "Trainer", "feature_assignment", "train"]

CONDITION_KEYS = ("height", "width", "num_frames", "fps", "ar")  # batch fields the model and scheduler read


def train(cfg: TrainConfig) -> TrainResult:
    """Run ``cfg`` to the end (``epochs`` or ``max_steps``); the process group is torn down afterwards."""
    return run(cfg, Trainer)


class Trainer(BaseTrainer):
    """A diffusion model trained on latents: encoded on the fly by a frozen VAE, or stored features."""

    cfg: TrainConfig

    def build_dataset(self) -> Any:
        return latent_dataset(self.cfg)

    def build_model(self) -> nn.Module:
        cfg, dims = self.cfg, self.dims
        self.scheduler = build_module(cfg.scheduler, SCHEDULERS)
        self.masks = MaskGenerator(cfg.mask_ratios) if cfg.mask_ratios else None
        self.vae, self.text_encoder = (None, None) if cfg.use_features else build_encoders(cfg, dims.device)
        model = self.build_trained_model(cfg.model)
        if dims.sp_size > 1:
            from opensora.acceleration.sequence_parallel import apply_sequence_parallel

            apply_sequence_parallel(model, dims.sp_group)
        return model

    def train_step(self, micro_batches: list[dict[str, Any]]) -> StepOutput:
        def forward(inputs: tuple[torch.Tensor, dict[str, Any]]) -> tuple[torch.Tensor, None]:
            return self.loss(*inputs), None

        # encode: (B, C, T, H, W) latents, text and sizes; then the loss under autocast
        results = self.accumulate(self.engine, micro_batches, forward, prepare=self.encode)
        grad_norm, stepped = self.optimizer_step()
        return StepOutput(float(torch.stack([loss for loss, _ in results]).mean()), grad_norm, stepped)

    @torch.no_grad()
    def encode(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        """Latents [B, C, T, H, W] and the model's keyword arguments, from videos or stored features."""
        device = self.dims.device
        if self.cfg.use_features:
            x = batch["x"].to(device, torch.float32)
            y, mask = batch["y"].to(device), batch["mask"].to(device)  # (B, 1, L, C), (B, L)
        else:
            video = batch["video"].to(device, parse_dtype(self.cfg.dtype))  # (B, 3, T, H, W) in [-1, 1]
            x = self.vae.encode(video).float()  # (B, C, T', H/8, W/8)
            text = self.text_encoder.encode(list(batch["text"]))
            y, mask = text["y"].to(device), text["mask"].to(device)  # (B, 1, L, C), (B, L)
        kwargs = {"y": y, "mask": mask}
        kwargs.update({key: torch.as_tensor(batch[key], device=device) for key in CONDITION_KEYS if key in batch})
        return x, kwargs

    def loss(self, x: torch.Tensor, model_kwargs: dict[str, Any]) -> torch.Tensor:
        """Mean diffusion loss (rflow or IDDPM); conditioning frames (mask False) stay clean and are not scored."""
        frame_mask = self.masks.get_masks(x) if self.masks is not None else None  # (B, T), True = generated
        if frame_mask is not None and bool(frame_mask.all()):
            frame_mask = None  # plain generation: the model can skip its t = 0 branch
        if frame_mask is not None:
            model_kwargs = {**model_kwargs, "x_mask": frame_mask}
        # caption dropout (for classifier-free guidance) happens inside the model in training mode
        return diffusion_loss(self.engine.model, self.scheduler, x, model_kwargs, frame_mask=frame_mask).mean()


def latent_dataset(cfg: TrainConfig | MMDiTTrainConfig) -> Any:
    """Stored features with ``use_features``, else the configured video dataset."""
    if cfg.use_features:
        return FeatureDataset(check_data_path(cfg))
    return build_dataset(cfg)


def build_encoders(cfg: TrainConfig, device: torch.device) -> tuple[nn.Module, nn.Module]:
    """The frozen VAE (in the training dtype) and text encoder."""
    if cfg.vae is None or cfg.text_encoder is None:
        raise ConfigError("training on videos needs vae and text_encoder configs (or use_features=True)")
    vae = build_module(cfg.vae, MODELS).to(device, parse_dtype(cfg.dtype)).eval().requires_grad_(False)
    text_encoder = build_module(cfg.text_encoder, MODELS).to(device)
    return vae, text_encoder
