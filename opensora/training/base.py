"""What every trainer shares: the loop, the optimizer step, checkpoints, logging, guards, data and RNG.

A trainer subclasses :class:`BaseTrainer` and supplies what it trains -- :meth:`~BaseTrainer.build_model`
(with anything frozen beside it) and :meth:`~BaseTrainer.train_step` -- and, when it owns more than
the model's engine (a discriminator, say), :meth:`~BaseTrainer.build_extra` registers further engines
in ``self.engines``, which checkpoints then hold too. :func:`run` joins the process group torchrun
set up (or runs as one process), builds the trainer and runs :meth:`~BaseTrainer.fit`.

Each optimizer step consumes ``accumulation_steps`` batches. Everything a resume needs -- every
engine's weights, optimizer and loss scaler, the EMA, the lr schedule, the sampler's position in the
epoch, step, epoch and every rank's RNG states -- goes into each checkpoint, so ``load`` continues
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from opensora.acceleration.engine import Engine, build_engine
from opensora.acceleration.materialize import build_on_meta
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
from opensora.models.hub import resolve_checkpoint
from opensora.registry import DATASETS, MODELS, build_module
from opensora.training.checkpoint import (
    CheckpointManager,
    broadcast_object,
    gather_objects,
    load_sharded_entries,
    read_on_main,
    rng_state,
    set_rng_state,
)
from opensora.training.config import BaseTrainConfig
from opensora.training.ema import EMA
from opensora.training.logger import PhaseTimer, TrainLogger
from opensora.training.lr_schedule import WarmupConstantLR

logger = logging.getLogger(__name__)

STATE_ENTRIES = ("ema", "lr_schedule", "sampler", "trainer", "rng")  # beside each engine's entries


def engine_entries(prefix: str) -> tuple[str, str, str]:
    """Checkpoint entry names of an engine's weights, optimizer and loss scaler (the model's: no prefix)."""
    return f"{prefix}model", f"{prefix}optimizer", f"{prefix}engine"


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


@dataclasses.dataclass
class StepOutput:
    """One optimizer step: the mean loss of its micro-batches, the gradient norm, whether it was applied,
    and further scalars to report (averaged over the steps between two log lines)."""

    loss: float
    grad_norm: float
    stepped: bool
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)


def run(cfg: BaseTrainConfig, trainer_cls: type[BaseTrainer]) -> TrainResult:
    """Run ``cfg`` to the end (``epochs`` or ``max_steps``); the process group is torn down afterwards."""
    with determinism(cfg.deterministic):
        dims = init_distributed(cfg.sp_size, device=cfg.device, dp_replicate=cfg.dp_replicate)
        try:
            trainer = trainer_cls(cfg, dims)
            try:
                return trainer.fit()
            finally:
                trainer.close()
        finally:
            destroy_distributed(dims)


CUBLAS_WORKSPACE = "CUBLAS_WORKSPACE_CONFIG"


@contextlib.contextmanager
def determinism(enabled: bool) -> Iterator[None]:
    """Deterministic kernels inside the block (bit-exact CPU runs; on CUDA, cuBLAS needs a fixed
    workspace for it); the process's own settings come back afterwards, so a run called from a
    notebook or a test leaves no switch behind."""
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.benchmark,
        os.environ.get(CUBLAS_WORKSPACE),
    )
    if enabled:
        os.environ.setdefault(CUBLAS_WORKSPACE, ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(enabled)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.benchmark = before[1]
        if before[2] is None:
            os.environ.pop(CUBLAS_WORKSPACE, None)
        else:
            os.environ[CUBLAS_WORKSPACE] = before[2]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class BaseTrainer:
    """Holds what one run trains with; :meth:`fit` is the loop, :meth:`train_step` the subclass's step."""

    metric_names: tuple[str, ...] = ()  # the keys of StepOutput.metrics this trainer may report

    def __init__(self, cfg: BaseTrainConfig, dims: ParallelDims) -> None:
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

    # ---- what a subclass supplies -----------------------------------------------------------------
    def build_dataset(self) -> Any:
        """The training dataset (default: ``cfg.dataset`` through the registry)."""
        return build_dataset(self.cfg)

    def build_model(self) -> nn.Module:
        """The trained model, in training mode (and whatever frozen parts the step needs, as attributes)."""
        raise NotImplementedError

    def build_trained_model(self, model_cfg: dict) -> nn.Module:
        """The trained model of ``model_cfg`` (a registry dict, maybe with ``from_pretrained``), in training mode.

        Subclasses call this for the model they train (frozen encoders are built as usual). It is
        built on the meta device and the engine materialises it (shard by shard under FSDP):
        initialised from ``cfg.seed`` alike for any world size, then ``from_pretrained`` read the
        same way, its architecture being the config's. ColossalAI gets a model built as usual.
        """
        if self.cfg.plugin == "colossalai":
            return build_module(model_cfg, MODELS).train()  # from_pretrained returns eval mode
        pretrained = model_cfg.get("from_pretrained")
        weights = resolve_checkpoint(pretrained, None, None).weights if pretrained else None
        arch = {key: value for key, value in model_cfg.items() if key != "from_pretrained"}
        return build_on_meta(lambda: build_module(arch, MODELS), self.cfg.seed, weights).train()

    def build_extra(self) -> None:
        """Called once the model's engine exists: build further engines and add them to ``self.engines``."""

    def train_step(self, micro_batches: list[dict[str, Any]]) -> StepOutput:
        """Accumulate gradients over ``micro_batches``, then update (see :meth:`accumulate`, :meth:`optimizer_step`)."""
        raise NotImplementedError

    # ---- building ---------------------------------------------------------------------------------
    def _build(self) -> None:
        cfg, dims = self.cfg, self.dims
        seed_everything(cfg.seed)  # the same random initialisation on every rank
        self.loader, self.data_summary = build_loader(cfg, dims, self.build_dataset())
        model = self.build_model()
        self.model_config = {"_class_name": type(model).__name__, **getattr(model, "config", {})}
        self.num_params = count_parameters(model)
        self.engine = self.make_engine(model, cfg.lr, cfg.grad_checkpoint)
        self.engines: dict[str, Engine] = {"": self.engine}  # {checkpoint entry prefix: engine}
        self.ema = EMA(self.engine.model)
        self.lr_schedule = WarmupConstantLR(self.engine.optimizer, cfg.warmup_steps)
        self.build_extra()
        self.checkpoints = CheckpointManager(cfg.outputs, cfg.keep_last, dims.is_main, cfg.async_checkpoint)
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

    def make_engine(self, model: nn.Module, lr: float, grad_checkpoint: bool = False) -> Engine:
        """``model`` wrapped for the configured plugin and precision, with its AdamW at ``lr``."""
        cfg = self.cfg
        optim = dict(lr=lr, weight_decay=cfg.weight_decay, eps=cfg.adam_eps, betas=cfg.adam_betas)
        return build_engine(model, self.dims, cfg.plugin, cfg.dtype, grad_checkpoint=grad_checkpoint,
                            max_norm=cfg.grad_clip, **optim)  # fmt: skip

    # ---- the loop ---------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        cfg = self.cfg
        self._write_summary()
        self.log.start(self.total_steps(), self.state.step)
        losses: list[float] = []
        window = _Window(self.metric_names)
        batches = self.batches()
        while cfg.max_steps is None or self.state.step < cfg.max_steps:
            with self.timer("data"):
                micro_batches = list(itertools.islice(batches, cfg.accumulation_steps))
            if not micro_batches:
                break
            out = self.train_step(micro_batches)
            self.state.step += 1
            self.timer.step_done()
            self.check_step(out.loss, out.grad_norm, out.stepped)
            losses.append(out.loss)
            window.add(out.loss, micro_batches, out.metrics)
            self.log.step(out.loss, self.lr_schedule.get_lr(), count_samples(micro_batches) * self.dims.dp_size)
            if self.state.step % cfg.log_every == 0:
                self.log_window(window, out.grad_norm)
                window = _Window(self.metric_names)
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

    def accumulate(
        self,
        engine: Engine,
        items: list[Any],
        forward: Callable[[Any], tuple[torch.Tensor, Any]],
        prepare: Callable[[Any], Any] | None = None,
        phase: str = "forward_backward",
        prepare_phase: str = "encode",
    ) -> list[tuple[torch.Tensor, Any]]:
        """Backpropagate the mean of ``forward(prepare(item))[0]`` over ``items`` into ``engine``'s gradients.

        ``prepare`` runs outside autocast (timed as ``prepare_phase``), ``forward`` under it; only the
        last item's backward reduces the gradients across ranks. Returns each item's (detached loss,
        second output of ``forward``).
        """
        results = []
        for i, item in enumerate(items):
            if prepare is not None:
                with self.timer(prepare_phase):
                    item = prepare(item)
            last = i == len(items) - 1
            with self.timer(phase), contextlib.nullcontext() if last else engine.no_sync():
                with engine.autocast():
                    loss, extra = forward(item)
                engine.backward(loss / len(items))
            results.append((loss.detach(), extra))
        return results

    def optimizer_step(self) -> tuple[float, bool]:
        """Clip and apply the model's accumulated gradients (skipped if their norm is not finite), then
        advance the lr schedule and the EMA; returns (grad norm, stepped)."""
        with self.timer("optimizer"):
            grad_norm, stepped = self.engine.clip_and_step(self.cfg.grad_clip)
            self.lr_schedule.step()
            if stepped:
                self.ema.update(self.engine.model, self.cfg.ema_decay)
        return grad_norm, stepped

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
        totals = torch.tensor(window.totals(), dtype=torch.float64, device=self.dims.device)
        # the mean over data-parallel ranks, times their number: sums (SP ranks share their samples)
        summed = (all_reduce_mean(totals, self.dims.dp_group) * self.dims.dp_size).tolist()
        loss_sum, loss_count, samples, bad_files = summed[:4]
        scalars = {
            "loss": loss_sum / max(loss_count, 1.0),
            "lr": self.lr_schedule.get_lr(),
            "grad_norm": grad_norm,
            "epoch": self.state.epoch,
            "skipped_steps": self.skipped_steps,
            "bad_files": int(bad_files),
        }
        scalars.update(window.metric_means(summed[4:]))
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
        """Write a checkpoint (every rank calls this: each writes its own shards; asynchronous with
        ``async_checkpoint``, in which case the folder appears once the background write is done)."""
        states: dict[str, Any] = {}
        sharded = []
        for prefix, engine in self.engines.items():
            weights, optimizer, scaler = engine_entries(prefix)
            states[weights], states[optimizer] = engine.sharded_state()
            states[scaler] = engine.state_dict()
            sharded += [weights, optimizer]
        states.update(
            ema=self.ema.shadow,
            lr_schedule=self.lr_schedule.state_dict(),
            sampler=self.loader.state_dict(),
            trainer=self.state.state_dict(),
            model_config=self.model_config,
            rng={"per_rank": gather_objects(rng_state())},
        )
        with self.timer("checkpoint"):
            self.last_checkpoint = self.checkpoints.save(self.state.step, states, self.state.epoch, sharded + ["ema"])
        if self.bad_steps == 0:
            self.good_checkpoint = self.last_checkpoint
        self._saved_step = self.state.step
        self.log.info(f"{'saving' if self.cfg.async_checkpoint else 'saved'} checkpoint {self.last_checkpoint}")
        return self.last_checkpoint

    def resume(self, path: str) -> None:
        """Restore a checkpoint; with ``start_from_scratch`` only the weights, EMA and optimizers.

        The shards are read by every rank (any world size); the small entries on rank 0, then broadcast.
        A checkpoint holding weights only (no optimizer, steps or data position) starts over.
        """
        checkpoint, states = read_on_main(path, list(STATE_ENTRIES[1:]) + [engine_entries(p)[2] for p in self.engines])
        _, stored = CheckpointManager.entries(checkpoint)
        targets: dict[str, Any] = {}
        for prefix, engine in self.engines.items():
            weights, optimizer, _ = engine_entries(prefix)
            targets[weights], optimizer_state = engine.sharded_state()
            if optimizer in stored:
                targets[optimizer] = optimizer_state
        if "ema" in stored:
            targets["ema"] = self.ema.shadow  # read in place, shard by shard
        load_sharded_entries(checkpoint, targets)
        for prefix, engine in self.engines.items():
            weights, optimizer, _ = engine_entries(prefix)
            engine.load_sharded_state(targets[weights], targets.get(optimizer))
        if "ema" not in stored:
            self.ema = EMA(self.engine.model)
        small = broadcast_object(states)  # everything but the big tensors, read on rank 0
        for prefix, engine in self.engines.items():
            if engine_entries(prefix)[2] in small:
                engine.load_state_dict(small[engine_entries(prefix)[2]])
        self.last_checkpoint = self.good_checkpoint = checkpoint
        if self.cfg.start_from_scratch or "trainer" not in small:
            self.lr_schedule.load_state_dict({"last_step": 0})  # a loaded optimizer brought its old lr
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
        try:
            self.checkpoints.wait()  # an asynchronous save in flight is finished, not abandoned
        finally:
            self.log.close()
        # a DDP engine freed after the process group is destroyed can deadlock gloo's threads
        self.engine = None
        self.engines = {}


class _Window:
    """Totals of this rank since the last log line: loss, samples, unreadable files and each metric."""

    def __init__(self, metric_names: tuple[str, ...]) -> None:
        self.names = metric_names
        self.loss_sum, self.loss_count, self.samples, self.bad_files = 0.0, 0, 0, 0
        # a metric may be absent from some steps (and ranks): its mean is over the steps that had it
        self.sums, self.counts = [0.0] * len(metric_names), [0] * len(metric_names)

    def add(self, loss: float, batches: list[dict[str, Any]], metrics: dict[str, float]) -> None:
        if math.isfinite(loss):
            self.loss_sum, self.loss_count = self.loss_sum + loss, self.loss_count + 1
        self.samples += count_samples(batches)
        for batch in batches:
            if "num_skipped" in batch:
                self.bad_files += int(torch.as_tensor(batch["num_skipped"]).sum())
        for i, name in enumerate(self.names):
            if name in metrics and math.isfinite(metrics[name]):
                self.sums[i] += metrics[name]
                self.counts[i] += 1

    def totals(self) -> list[float]:
        """The numbers to sum over ranks, in a fixed order (the same length on every rank)."""
        return [self.loss_sum, self.loss_count, self.samples, self.bad_files, *self.sums, *self.counts]

    def metric_means(self, summed: list[float]) -> dict[str, float]:
        """{name: mean} of the metrics some step had, from the rank-summed ``sums + counts`` of :meth:`totals`."""
        sums, counts = summed[: len(self.names)], summed[len(self.names) :]
        return {name: total / count for name, total, count in zip(self.names, sums, counts) if count > 0}


def count_samples(batches: list[dict[str, Any]]) -> int:
    return sum(len(batch["x"] if "x" in batch else batch["video"]) for batch in batches)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(all, trainable) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


# ---- data ---------------------------------------------------------------------------------------------
def check_data_path(cfg: BaseTrainConfig) -> str:
    path = cfg.data_path
    if not Path(path).exists():
        raise ConfigError(f"training data '{path}' does not exist (set it with --data-path)")
    return path


def build_dataset(cfg: BaseTrainConfig) -> Any:
    path = check_data_path(cfg)
    if "type" not in cfg.dataset:
        raise ConfigError("dataset needs a 'type' (e.g. VariableVideoTextDataset)")
    return build_module({**cfg.dataset, "data_path": path}, DATASETS, seed=cfg.seed)


def build_loader(cfg: BaseTrainConfig, dims: ParallelDims, dataset: Any) -> tuple[ResumableDataLoader, str]:
    """This rank's resumable loader over ``dataset``, and a description of the data (the bucket table)."""
    sampler, summary = build_train_sampler(cfg, dataset, dims)
    batch_size = None if cfg.bucket_config is not None else cfg.batch_size
    loader = build_dataloader(dataset, sampler, batch_size, cfg.num_workers, prefetch_factor=cfg.prefetch_factor,
                              seed=cfg.seed)  # fmt: skip
    return loader, summary


def build_train_sampler(cfg: BaseTrainConfig, dataset: Any, dims: ParallelDims) -> tuple[Any, str]:
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
    if isinstance(dataset, FeatureDataset):
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
