"""Open-Sora 2.0's training step for the MMDiT: encode -> condition -> noise -> predict -> loss.

The loop, checkpoints, logging, data and RNG are :mod:`opensora.training.base`'s; the math is
:mod:`opensora.training.mmdit_recipe`'s. A step takes latents (encoded on the fly by the frozen
2.0 VAE, or stored features), the T5 states and pooled CLIP vector of the captions, draws each
sample's conditioning mode and builds its reference condition, drops text for classifier-free
guidance, noises the packed latent at shifted logit-normal timesteps and regresses the velocity.
:func:`train_mmdit` runs an :class:`~opensora.training.config.MMDiTTrainConfig` to the end.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from opensora.errors import ConfigError
from opensora.inference.mmdit_sampling import image_ids, pack, reference_frame_ranges, text_ids
from opensora.models.checkpoint_io import parse_dtype
from opensora.models.mmdit.mmdit import MMDiT
from opensora.training.base import BaseTrainer, StepOutput, TrainResult, run
from opensora.training.config import MMDiTTrainConfig
from opensora.training.mmdit_recipe import (
    draw_cond_types,
    drop_condition,
    feature_references,
    noised,
    pad_null_text,
    sample_timesteps,
    training_condition,
    velocity,
)
from opensora.training.trainer import build_encoders, latent_dataset

__all__ = ["MMDiTTrainer", "train_mmdit"]

ModelInputs = tuple[dict[str, Any], torch.Tensor]  # (the model's keyword arguments, the velocity target)


def train_mmdit(cfg: MMDiTTrainConfig) -> TrainResult:
    """Run ``cfg`` to the end (``epochs`` or ``max_steps``); the process group is torn down afterwards."""
    return run(cfg, MMDiTTrainer)


class MMDiTTrainer(BaseTrainer):
    """The 2.0 MMDiT trained on latents of its VAE with T5 + CLIP text, t2v and i2v/v2v mixed."""

    cfg: MMDiTTrainConfig

    def build_dataset(self) -> Any:
        return latent_dataset(self.cfg)

    def build_model(self) -> nn.Module:
        cfg, dims = self.cfg, self.dims
        self.vae, self.text_encoder = (None, None) if cfg.use_features else build_encoders(cfg, dims.device)
        model = self.build_trained_model(cfg.model)
        if not isinstance(model, MMDiT):
            kind = type(model).__name__
            raise ConfigError(f"MMDiT training needs an MMDiT model (type 'flux' or 'MMDiT'), got {kind}")
        # what the step needs to know of the model, read before the engine wraps it
        self.patch_size, self.conditioned, self.guided = model.patch_size, model.cond_embed, model.guidance_embed
        if cfg.condition_config and not self.conditioned:
            raise ConfigError("condition_config trains i2v/v2v conditions: the model needs cond_embed=True")
        self.null_txt, self.null_vec = self.null_text() if cfg.dropout_ratio else (None, None)
        if dims.sp_size > 1:
            from opensora.acceleration.sequence_parallel_mmdit import apply_mmdit_sequence_parallel

            apply_mmdit_sequence_parallel(model, dims.sp_group)
        return model

    def null_text(self) -> tuple[torch.Tensor, torch.Tensor]:
        """T5 states [1, L, C] and CLIP vector [1, C'] of the empty prompt, what dropped captions become."""
        if self.text_encoder is not None:
            out = self.text_encoder.encode([""])
            return out["y"][:, 0].float(), out["y_vec"].float()
        extras = self.loader.dataset.extras
        if "null.y" not in extras or "null.y_vec" not in extras:
            raise ConfigError(f"dropout_ratio needs the empty prompt's embeddings in the feature folder "
                              f"{self.cfg.data_path}: extract it again (extract_features.py)")  # fmt: skip
        return extras["null.y"][:, 0].float(), extras["null.y_vec"].float()

    # ---- the step ---------------------------------------------------------------------------------
    def train_step(self, micro_batches: list[dict[str, Any]]) -> StepOutput:
        results = self.accumulate(self.engine, micro_batches, self.loss, prepare=self.prepare)
        grad_norm, stepped = self.optimizer_step()
        return StepOutput(float(torch.stack([loss for loss, _ in results]).mean()), grad_norm, stepped)

    def loss(self, inputs: ModelInputs) -> tuple[torch.Tensor, None]:
        kwargs, target = inputs
        pred = self.engine.model(**kwargs)  # (B, N, C*p*p)
        return F.mse_loss(pred.float(), target.float()), None

    @torch.no_grad()
    def prepare(self, batch: dict[str, Any]) -> ModelInputs:
        """Everything random of the step, in the release's order: modes, timesteps, text dropout, noise."""
        cfg, device, p = self.cfg, self.dims.device, self.patch_size
        x0, txt, y_vec = self.encode(batch)  # (B, C, T, H, W), (B, L, C_t5), (B, C_clip)
        B, _, T, H, W = x0.shape
        cond = self.condition(x0, batch) if self.conditioned else None  # (B, N, (1+C)*p*p)
        t = sample_timesteps(B, (H, W), T, device=device)  # (B,)
        if cfg.dropout_ratio:
            txt = drop_condition(cfg.dropout_ratio.get("t5", 0.0), txt, pad_null_text(self.null_txt, txt.shape[1]))
            y_vec = drop_condition(cfg.dropout_ratio.get("clip", 0.0), y_vec, self.null_vec)
        img0 = pack(x0, p)  # (B, N, C*p*p)
        noise = torch.randn_like(img0)
        kwargs = dict(
            img=noised(img0, noise, t, cfg.sigma_min), img_ids=image_ids(B, T, H // p, W // p, device=device),
            txt=txt, txt_ids=text_ids(B, txt.shape[1], device=device), timesteps=t, y_vec=y_vec, cond=cond,
            guidance=torch.full((B,), cfg.guidance, device=device) if self.guided else None,
        )  # fmt: skip
        return kwargs, velocity(img0, noise, cfg.sigma_min)

    def encode(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Latents [B, C, T, H, W], T5 states [B, L, C] and CLIP vectors [B, C'] (float32) of a batch."""
        device = self.dims.device
        if self.cfg.use_features:
            return (batch["x"].to(device, torch.float32), batch["y"][:, 0].to(device, torch.float32),
                    batch["y_vec"].to(device, torch.float32))  # fmt: skip
        video = batch["video"].to(device, parse_dtype(self.cfg.dtype))  # (B, 3, T, H, W) in [-1, 1]
        text = self.text_encoder.encode(list(batch["text"]))
        if "y_vec" not in text:
            raise ConfigError("MMDiT training needs a pooled text vector (y_vec): use a text_encoders entry "
                              "with t5 and clip encoders")  # fmt: skip
        x0 = self.vae.encode(video).float()
        return x0, text["y"][:, 0].to(device, torch.float32), text["y_vec"].to(device, torch.float32)

    def condition(self, x0: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """Each sample's mode drawn from ``condition_config``, its reference condition packed: [B, N, (1+C)*p*p]."""
        causal = self.cfg.is_causal_vae
        types = draw_cond_types(self.cfg.condition_config, x0.shape[0], x0.shape[2], causal)
        refs = [self.references(kind, i, x0, batch) for i, kind in enumerate(types)]
        mask, masked = training_condition(x0, types, refs, causal)  # (B, 1, T, H, W), (B, C, T, H, W)
        return pack(torch.cat([mask, masked], dim=1), self.patch_size)

    def references(self, cond_type: str, i: int, x0: torch.Tensor, batch: dict[str, Any]) -> list[torch.Tensor] | None:
        """Sample ``i``'s reference latents [C, T_ref, H, W]: stored, or its reference frames encoded alone.

        Encoding the frames alone keeps the rest of the clip out of the condition (a causal VAE's
        last latent frame has seen the frames before it); a non-causal VAE's v2v modes take the
        clip's own latent frames, as the release does.
        """
        device = self.dims.device
        if self.cfg.use_features:
            head, tail = (batch[key][i].to(device, torch.float32) if key in batch else None
                          for key in ("ref_head", "ref_tail"))  # fmt: skip
            return feature_references(cond_type, x0[i], head, tail)
        if cond_type == "t2v" or (cond_type.startswith("v2v") and not self.cfg.is_causal_vae):
            return feature_references(cond_type, x0[i], None, None)
        video = batch["video"][i].to(device, parse_dtype(self.cfg.dtype))  # (3, T, H, W)
        ranges = reference_frame_ranges(cond_type, video.shape[1], self.cfg.is_causal_vae)
        return [self.vae.encode(video[None, :, r.start : r.stop])[0].float() for r in ranges]
