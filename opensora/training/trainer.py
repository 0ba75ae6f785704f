"""The training loop: encode -> mask -> noise -> predict -> loss -> backward -> step -> EMA -> log -> checkpoint.

:func:`train` joins the process group torchrun set up (or runs as one process), builds the data,
the frozen encoders, the model and its engine (opensora.acceleration), and runs
:meth:`Trainer.fit`. Each optimizer step consumes ``accumulation_steps`` batches. Everything a
resume needs -- weights, EMA, optimizer, loss scaler, lr schedule, the sampler's position in the
epoch, step, epoch and every rank's RNG states -- goes into each checkpoint, so ``--load`` continues
as if the run had never stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import math
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from opensora.acceleration.engine import build_engine
from opensora.acceleration.parallel import ParallelDims, all_reduce_mean, destroy_distributed, init_distributed
from opensora.datasets import (
    Assignment,
    Bucket,
    BucketBatchSampler,
    FeatureDataset,
    ResumableDataLoader,
    bucket_table,
    build_dataloader,
    build_sampler,
    check_nonempty,
    format_bucket_table,
)
from opensora.errors import ConfigError, OpenSoraError
from opensora.models.checkpoint_io import parse_dtype
from opensora.registry import DATASETS, MODELS, SCHEDULERS, build_module
from opensora.training.checkpoint import (
    CheckpointManager,
    broadcast_object,
    broadcast_tensors,
    gather_objects,
    read_on_main,
    rng_state,
    set_rng_state,
)
from opensora.training.config import TrainConfig
from opensora.training.ema import EMA
from opensora.training.logger import PhaseTimer, TrainLogger
from opensora.training.losses import diffusion_loss
from opensora.training.lr_schedule import WarmupConstantLR
from opensora.training.masks import MaskGenerator

logger = logging.getLogger(__name__)

CONDITION_KEYS = ("height", "width", "num_frames", "fps", "ar")  # batch fields the model and scheduler read
CHECKPOINT_ENTRIES = ("model", "ema", "optimizer", "engine", "lr_schedule", "sampler", "trainer", "rng")


@dataclasses.dataclass
class RunState:
    """Where the run is: the epoch being read and the optimizer steps taken."""

    epoch: int = 0
    step: int = 0

    def state_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.step = int(state["epoch"]), int(state["step"])


@dataclasses.dataclass
class TrainResult:
    step: int
    epoch: int
    checkpoint: Path | None  # the last checkpoint written or loaded
    losses: list[float]  # this rank's mean loss of every step of this run
    skipped_steps: int


def train(cfg: TrainConfig) -> TrainResult:
    """Run ``cfg`` to the end (``epochs`` or ``max_steps``); the process group is torn down afterwards."""
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    configure_determinism(cfg.deterministic)
    dims = init_distributed(cfg.sp_size, device=cfg.device)
    try:
        trainer = Trainer(cfg, dims)
        try:
            return trainer.fit()
        finally:
            trainer.close()
    finally:
        destroy_distributed(dims)
        torch.use_deterministic_algorithms(deterministic_before)


def configure_determinism(enabled: bool) -> None:
    """Deterministic kernels (bit-exact CPU runs; on CUDA, cuBLAS needs a fixed workspace for it)."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(enabled)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Holds what one run trains with; :meth:`fit` is the loop."""

    def __init__(self, cfg: TrainConfig, dims: ParallelDims) -> None:
        self.cfg, self.dims = cfg, dims
        check_data_path(cfg)  # before anything slow starts
        self.log = TrainLogger(
            cfg.outputs, dims.is_main, dataclasses.asdict(cfg), cfg.wandb, cfg.wandb_project, cfg.exp_name
        )
        try:
            self._build()
        except BaseException:
            self.log.close()
            raise

    def _build(self) -> None:
        cfg, dims = self.cfg, self.dims
        self.scheduler = build_module(cfg.scheduler, SCHEDULERS)
        self.masks = MaskGenerator(cfg.mask_ratios) if cfg.mask_ratios else None
        seed_everything(cfg.seed)  # the same random initialisation on every rank
        self.loader, self.data_summary = build_loader(cfg, dims)
        self.vae, self.text_encoder = (None, None) if cfg.use_features else build_encoders(cfg, dims.device)
        model = build_model(cfg, dims)
        self.model_config = {"_class_name": type(model).__name__, **getattr(model, "config", {})}
        params = list(model.parameters())
        self.num_params = (sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad))
        optim = dict(lr=cfg.lr, weight_decay=cfg.weight_decay, eps=cfg.adam_eps, betas=cfg.adam_betas)
        self.engine = build_engine(model, dims, cfg.plugin, cfg.dtype, grad_checkpoint=cfg.grad_checkpoint, **optim)
        self.ema = EMA(self.engine.model)
        self.lr_schedule = WarmupConstantLR(self.engine.optimizer, cfg.warmup_steps)
        self.checkpoints = CheckpointManager(cfg.outputs, cfg.keep_last, is_main=dims.is_main)
        self.state = RunState()
        self.timer = PhaseTimer(sync=cfg.record_time)
        self.last_checkpoint: Path | None = None
        self.good_checkpoint: Path | None = None  # the last one saved or loaded outside a run of bad steps
        self.bad_steps = self.skipped_steps = 0
        self.steps_per_epoch = len(self.loader) // cfg.accumulation_steps
        # SP ranks share a sample, so they must draw the same noise: seed by the data-parallel rank
        seed_everything(cfg.seed + dims.dp_rank)
        if cfg.load:
            self.resume(cfg.load)
        self._saved_step = self.state.step if self.last_checkpoint is not None else None

    # ---- the loop -------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        cfg = self.cfg
        self._write_summary()
        self.log.start(self.total_steps(), self.state.step)
        losses: list[float] = []
        window = _Window()
        batches = self.batches()
        while cfg.max_steps is None or self.state.step < cfg.max_steps:
            with self.timer("data"):
                micro_batches = list(itertools.islice(batches, cfg.accumulation_steps))
            if not micro_batches:
                break
            loss, grad_norm, stepped = self.train_step(micro_batches)
            self.state.step += 1
            self.timer.step_done()
            self.check_step(loss, grad_norm, stepped)
            losses.append(loss)
            window.add(loss, micro_batches)
            self.log.step(loss, self.lr_schedule.get_lr(), count_samples(micro_batches) * self.dims.dp_size)
            if self.state.step % cfg.log_every == 0:
                self.log_window(window, grad_norm)
                window = _Window()
            if cfg.ckpt_every and self.state.step % cfg.ckpt_every == 0:
                self.save()
        if self._saved_step != self.state.step:
            self.save()
        return TrainResult(self.state.step, self.state.epoch, self.last_checkpoint, losses, self.skipped_steps)

    def batches(self) -> Iterator[dict[str, Any]]:
        """Batches from the saved position on, epoch after epoch; a batch of only unreadable files is None."""
        for epoch in range(self.state.epoch, self.cfg.epochs):
            self.state.epoch = epoch
            self.loader.set_epoch(epoch)  # keeps a loaded mid-epoch position when the epoch matches
            for batch in self.loader:
                if batch is not None:
                    yield batch

    def train_step(self, micro_batches: list[dict[str, Any]]) -> tuple[float, float, bool]:
        """Accumulate gradients over ``micro_batches``, then one update; returns (mean loss, grad norm, stepped)."""
        losses = []
        for i, batch in enumerate(micro_batches):
            with self.timer("encode"):
                x, model_kwargs = self.encode(batch)  # (B, C, T, H, W) latents, text and sizes
            last = i == len(micro_batches) - 1
            # only the last micro-batch's backward reduces the gradients across ranks
            with self.timer("forward_backward"), contextlib.nullcontext() if last else self.engine.no_sync():
                with self.engine.autocast():
                    loss = self.loss(x, model_kwargs)
                self.engine.backward(loss / len(micro_batches))
            losses.append(loss.detach())
        with self.timer("optimizer"):
            grad_norm, stepped = self.engine.clip_and_step(self.cfg.grad_clip)  # skipped if the norm is not finite
            self.lr_schedule.step()
            if stepped:
                self.ema.update(self.engine.model, self.cfg.ema_decay)
        return float(torch.stack(losses).mean()), grad_norm, stepped

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

    def check_step(self, loss: float, grad_norm: float, stepped: bool) -> None:
        """Count skipped updates; give up after ``max_bad_steps`` in a row.

        The verdict is the engine's (a non-finite global gradient norm, the same on every rank), so all
        ranks stop together; a non-finite loss always yields non-finite gradients.
        """
        if stepped:
            self.bad_steps = 0
            return
        self.bad_steps += 1
        self.skipped_steps += 1
        logger.warning(
            "step %d: loss %s, gradient norm %s: update skipped (%d in a row)",
            self.state.step,
            loss,
            grad_norm,
            self.bad_steps,
        )
        if self.bad_steps >= self.cfg.max_bad_steps:
            last = self.good_checkpoint or "none (nothing saved yet)"
            raise OpenSoraError(
                f"{self.bad_steps} consecutive steps had a non-finite loss or gradient (up to step "
                f"{self.state.step}); stopping. The last good checkpoint is {last}; try a lower lr or fp32"
            )

    def log_window(self, window: _Window, grad_norm: float) -> None:
        totals = torch.tensor(
            [window.loss_sum, window.loss_count, window.samples, window.bad_files],
            dtype=torch.float64,
            device=self.dims.device,
        )
        # the mean over data-parallel ranks, times their number: sums (SP ranks share their samples)
        loss_sum, loss_count, samples, bad_files = (
            all_reduce_mean(totals, self.dims.dp_group) * self.dims.dp_size
        ).tolist()
        scalars = {
            "loss": loss_sum / max(loss_count, 1.0),
            "lr": self.lr_schedule.get_lr(),
            "grad_norm": grad_norm,
            "epoch": self.state.epoch,
            "skipped_steps": self.skipped_steps,
            "bad_files": int(bad_files),
        }
        self.log.log_scalars(self.state.step, {**scalars, **self.timer.averages()}, int(samples))

    def total_steps(self) -> int | None:
        total = self.steps_per_epoch * self.cfg.epochs
        return min(total, self.cfg.max_steps) if self.cfg.max_steps is not None else total

    def _write_summary(self) -> None:
        cfg, dims = self.cfg, self.dims
        if dims.is_main:
            Path(cfg.outputs).mkdir(parents=True, exist_ok=True)
            text = json.dumps(dataclasses.asdict(cfg), indent=1, default=str)
            (Path(cfg.outputs) / "train_config.json").write_text(text + "\n")
        total, trainable = self.num_params
        self.log.info(
            f"model {self.model_config['_class_name']}: {total / 1e6:.2f}M parameters, {trainable / 1e6:.2f}M trainable"
        )
        self.log.info(
            f"world size {dims.world_size} (data parallel {dims.dp_size} x sequence parallel "
            f"{dims.sp_size}), plugin {cfg.plugin}, dtype {cfg.dtype}, device {dims.device}"
        )
        self.log.info(f"data: {self.data_summary}")
        self.log.info(
            f"{self.steps_per_epoch} steps per epoch (accumulating {cfg.accumulation_steps} batches), "
            f"{self.total_steps()} in all; starting at step {self.state.step}, epoch {self.state.epoch}"
        )

    # ---- checkpoints ------------------------------------------------------------------------------
    def save(self) -> Path:
        """Write a checkpoint (every rank calls this: the states are gathered to rank 0)."""
        states = {
            "model": self.engine.model_state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.engine.optimizer_state_dict(),
            "engine": self.engine.state_dict(),
            "lr_schedule": self.lr_schedule.state_dict(),
            "sampler": self.loader.state_dict(),
            "trainer": self.state.state_dict(),
            "model_config": self.model_config,
            "rng": {"per_rank": gather_objects(rng_state())},
        }
        self.last_checkpoint = self.checkpoints.save(self.state.step, states, self.state.epoch)
        if self.bad_steps == 0:
            self.good_checkpoint = self.last_checkpoint
        self._saved_step = self.state.step
        self.log.info(f"saved checkpoint {self.last_checkpoint}")
        return self.last_checkpoint

    def resume(self, path: str) -> None:
        """Restore a checkpoint; with ``start_from_scratch`` only the weights, EMA and optimizer."""
        checkpoint, states = read_on_main(path, list(CHECKPOINT_ENTRIES))
        self.engine.load_model_state_dict(states.pop("model", {}))
        self.engine.load_optimizer_state_dict(states.pop("optimizer", {}))
        self.ema.load_state_dict(broadcast_tensors(states.pop("ema", {}), self.ema.shadow, self.dims.device))
        small = broadcast_object(states)  # everything but the big tensors, read on rank 0
        self.engine.load_state_dict(small["engine"])
        self.last_checkpoint = self.good_checkpoint = checkpoint
        if self.cfg.start_from_scratch:
            self.lr_schedule.load_state_dict({"last_step": 0})  # the loaded optimizer brought its old lr
            self.log.info(f"loaded the weights, EMA and optimizer of {checkpoint}; steps and data start over")
            return
        self.lr_schedule.load_state_dict(small["lr_schedule"])
        self.state.load_state_dict(small["trainer"])
        self.loader.load_state_dict(small["sampler"])
        per_rank = small["rng"]["per_rank"]
        if len(per_rank) == self.dims.world_size:
            set_rng_state(per_rank[self.dims.rank])
        else:  # another world size: random streams cannot continue exactly anyway
            logger.warning(
                "checkpoint has RNG states of %d ranks, this run has %d: fresh seeds",
                len(per_rank),
                self.dims.world_size,
            )
        self.log.info(f"resumed from {checkpoint} at step {self.state.step}, epoch {self.state.epoch}")

    def close(self) -> None:
        self.log.close()
        # a DDP engine freed after the process group is destroyed can deadlock gloo's threads
        self.engine = None


@dataclasses.dataclass
class _Window:
    """Totals of this rank since the last log line."""

    loss_sum: float = 0.0
    loss_count: int = 0
    samples: int = 0
    bad_files: int = 0

    def add(self, loss: float, batches: list[dict[str, Any]]) -> None:
        if math.isfinite(loss):
            self.loss_sum, self.loss_count = self.loss_sum + loss, self.loss_count + 1
        self.samples += count_samples(batches)
        for batch in batches:
            if "num_skipped" in batch:
                self.bad_files += int(torch.as_tensor(batch["num_skipped"]).sum())


def count_samples(batches: list[dict[str, Any]]) -> int:
    return sum(len(batch["x"] if "x" in batch else batch["video"]) for batch in batches)


# ---- building ---------------------------------------------------------------------------------------
def check_data_path(cfg: TrainConfig) -> str:
    path = cfg.data_path
    if not Path(path).exists():
        raise ConfigError(f"training data '{path}' does not exist (set it with --data-path)")
    return path


def build_dataset(cfg: TrainConfig) -> Any:
    path = check_data_path(cfg)
    if cfg.use_features:
        return FeatureDataset(path)
    if "type" not in cfg.dataset:
        raise ConfigError("dataset needs a 'type' (e.g. VariableVideoTextDataset)")
    return build_module({**cfg.dataset, "data_path": path}, DATASETS, seed=cfg.seed)


def build_loader(cfg: TrainConfig, dims: ParallelDims) -> tuple[ResumableDataLoader, str]:
    """This rank's resumable loader over the dataset, and a description of the data (the bucket table)."""
    dataset = build_dataset(cfg)
    sampler, summary = build_train_sampler(cfg, dataset, dims)
    batch_size = None if cfg.bucket_config is not None else cfg.batch_size
    loader = build_dataloader(dataset, sampler, batch_size, cfg.num_workers, prefetch_factor=cfg.prefetch_factor,
                              seed=cfg.seed)  # fmt: skip
    return loader, summary


def build_train_sampler(cfg: TrainConfig, dataset: Any, dims: ParallelDims) -> tuple[Any, str]:
    """The resumable sampler for this rank, and a description of the data (the bucket table)."""
    if cfg.bucket_config is None:
        if cfg.batch_size is None:
            raise ConfigError("batch_size is required without bucket_config (buckets set their own batch sizes)")
        sampler = build_sampler(dataset, None, dims.dp_size, dims.dp_rank, seed=cfg.seed)
        if len(sampler) < cfg.batch_size:
            raise ConfigError(
                f"{len(dataset)} samples give no full batch of {cfg.batch_size} on each of "
                f"{dims.dp_size} data-parallel ranks"
            )
        return sampler, f"{len(dataset)} samples, {cfg.batch_size} per batch and rank"
    if cfg.batch_size is not None:
        logger.warning("batch_size=%d is ignored: bucket_config sets the batch sizes", cfg.batch_size)
    if cfg.use_features:
        bucket = Bucket(cfg.bucket_config, seed=cfg.seed)
        assignment = feature_assignment(dataset, bucket)
        sampler = BucketBatchSampler(bucket, None, dims.dp_size, dims.dp_rank, cfg.seed, assignment=assignment)
    else:
        sampler = build_sampler(dataset, cfg.bucket_config, dims.dp_size, dims.dp_rank, seed=cfg.seed)
    assignment = sampler.assignment(0)
    table = bucket_table(assignment, sampler.bucket, dims.dp_size)
    check_nonempty(table)
    return sampler, "\n" + format_bucket_table(table, assignment.drop_counts())


def feature_assignment(dataset: FeatureDataset, bucket: Bucket) -> Assignment:
    """Each stored latent's bucket: the one whose frame count and image size it was extracted at."""
    where = {(b.num_frames, *bucket.image_size(b)): i for i, b in enumerate(bucket.buckets)}
    meta = dataset.metadata
    if any(column not in meta for column in ("num_frames", "height", "width")):
        raise OpenSoraError("bucketed feature training needs num_frames, height and width in the feature index")
    keys = zip(meta["num_frames"].astype(int), meta["height"].astype(int), meta["width"].astype(int))
    index = np.array([where.get(key, -1) for key in keys], dtype=np.int64)
    reason = np.where(index < 0, "no_bucket", "").astype("<U16")
    return Assignment(index, reason, list(bucket.buckets))


def build_encoders(cfg: TrainConfig, device: torch.device) -> tuple[nn.Module, nn.Module]:
    """The frozen VAE (in the training dtype) and text encoder."""
    if cfg.vae is None or cfg.text_encoder is None:
        raise ConfigError("training on videos needs vae and text_encoder configs (or use_features=True)")
    vae = build_module(cfg.vae, MODELS).to(device, parse_dtype(cfg.dtype)).eval().requires_grad_(False)
    text_encoder = build_module(cfg.text_encoder, MODELS).to(device)
    return vae, text_encoder


def build_model(cfg: TrainConfig, dims: ParallelDims) -> nn.Module:
    model = build_module(cfg.model, MODELS).train()  # from_pretrained returns eval mode
    if dims.sp_size > 1:
        from opensora.acceleration.sequence_parallel import apply_sequence_parallel

        apply_sequence_parallel(model, dims.sp_group)
    return model
