"""The keys a training config may hold, with their defaults (defined once, here).

``opensora.config.load_config(path, TrainConfig, ...)`` rejects any other top-level key in one line.
Nested dicts (``model``, ``vae``, ``dataset``, ...) are checked by the constructor they are built with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from opensora.errors import ConfigError

Plugin = Literal["none", "ddp", "zero2", "zero3", "colossalai"]
Precision = Literal["fp32", "bf16", "fp16"]


def _default_scheduler() -> dict:
    return {"type": "rflow", "use_timestep_transform": True, "sample_method": "logit-normal"}


def _default_dataset() -> dict:
    return {"type": "VariableVideoTextDataset", "transform_name": "resize_crop"}


@dataclass
class TrainConfig:
    # ---- models: dicts for opensora.registry.build_module -----------------------------------
    model: dict
    vae: dict | None = None  # unused with use_features
    text_encoder: dict | None = None  # unused with use_features
    scheduler: dict = field(default_factory=_default_scheduler)

    # ---- data ----------------------------------------------------------------------------------
    # type, data_path, frame_interval, transform_name, ...; with use_features, data_path is the
    # feature folder written by tools/datasets/extract_features.py and the other keys are unused
    dataset: dict = field(default_factory=_default_dataset)
    bucket_config: dict | None = None  # {resolution: {num_frames: (keep_prob, batch_size)}}
    batch_size: int | None = None  # per rank; needed without bucket_config (buckets set their own)
    use_features: bool = False
    num_workers: int = 4
    prefetch_factor: int | None = None
    mask_ratios: dict | None = None  # {mask name: probability}; see opensora.training.masks

    # ---- parallelism and precision -------------------------------------------------------------
    plugin: Plugin = "zero2"
    sp_size: int = 1
    dtype: Precision = "bf16"
    grad_checkpoint: bool = False
    device: str | None = None  # default: cuda:LOCAL_RANK when CUDA exists, else cpu

    # ---- optimisation --------------------------------------------------------------------------
    lr: float = 1e-4
    weight_decay: float = 0.0
    adam_eps: float = 1e-8
    adam_betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    grad_clip: float | None = 1.0
    accumulation_steps: int = 1  # batches per optimizer step
    ema_decay: float = 0.9999
    epochs: int = 1
    max_steps: int | None = None  # stop after this many optimizer steps (counted across resumes)
    max_bad_steps: int = 20  # consecutive steps with a non-finite loss or gradient before giving up

    # ---- checkpoints, logging, reproducibility --------------------------------------------------
    outputs: str = "outputs"  # the experiment folder: checkpoints, logs, TensorBoard
    load: str | None = None  # resume from a checkpoint (or the latest complete one in a folder)
    start_from_scratch: bool = False  # with load: keep the weights and optimizer, restart steps and data
    ckpt_every: int = 1000  # 0: only at the end
    keep_last: int | None = None  # complete checkpoints to keep; None keeps all
    log_every: int = 10
    wandb: bool = False
    wandb_project: str = "opensora"
    exp_name: str | None = None  # run name in wandb; default: the outputs folder's name
    record_time: bool = False  # synchronise CUDA around each phase so the timings are exact
    seed: int = 42
    deterministic: bool = False  # deterministic kernels: bit-exact runs on CPU

    # ---- keys of the release's configs with no effect here; accepted so those configs load ----
    num_bucket_build_workers: int | None = None  # bucket assignment is vectorised
    reduce_bucket_size_in_m: int | None = None  # a ColossalAI ZeRO setting
    cache_pin_memory: bool | None = None
    pin_memory_cache_pre_alloc_numels: list | None = None

    def __post_init__(self) -> None:
        positive = {"sp_size": self.sp_size, "accumulation_steps": self.accumulation_steps, "epochs": self.epochs,
                    "log_every": self.log_every, "max_bad_steps": self.max_bad_steps}  # fmt: skip
        for key, value in positive.items():
            if value < 1:
                raise ConfigError(f"config key '{key}' must be >= 1, got {value}")
        for key in ("batch_size", "max_steps", "keep_last"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"config key '{key}' must be >= 1 or None, got {value}")
        for key in ("ckpt_every", "warmup_steps", "num_workers"):
            if getattr(self, key) < 0:
                raise ConfigError(f"config key '{key}' must be >= 0, got {getattr(self, key)}")
        if not 0.0 <= self.ema_decay <= 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1], got {self.ema_decay}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"grad_clip must be > 0 or None, got {self.grad_clip}")

    @property
    def data_path(self) -> str:
        """The dataset's metadata file (or feature folder); ConfigError when none is configured."""
        path = self.dataset.get("data_path") or self.dataset.get("shard_dir")
        if not path:
            raise ConfigError("no training data: pass --data-path FILE (sets dataset.data_path)")
        return str(path)
