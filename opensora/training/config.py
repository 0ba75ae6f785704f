"""The keys a training config may hold, with their defaults (defined once, here).

:class:`BaseTrainConfig` holds what every trainer reads (data, parallelism, optimisation, checkpoints,
logging); :class:`TrainConfig` adds the diffusion model's encoders, scheduler and masks, and
:class:`VAETrainConfig` the VAE's losses and discriminator.
``opensora.config.load_config(path, TrainConfig, ...)`` rejects any other top-level key in one line.
Nested dicts (``model``, ``vae``, ``dataset``, ...) are checked by the constructor they are built with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import ClassVar, Literal

from opensora.errors import ConfigError

Plugin = Literal["none", "ddp", "zero2", "zero3", "colossalai"]
Precision = Literal["fp32", "bf16", "fp16"]


# Only the types are given: the scheduler's and the dataset's own constructor defaults apply to
# every other key (RectifiedFlow: uniform timesteps, no shift; the 1.2 configs set both).
def _default_scheduler() -> dict:
    return {"type": "rflow"}


def _default_dataset() -> dict:
    return {"type": "VariableVideoTextDataset"}


@dataclass
class BaseTrainConfig:
    """What every trainer reads; ``model`` is the trained model's dict for opensora.registry.build_module."""

    model: dict

    # ---- data ----------------------------------------------------------------------------------
    # type, data_path, frame_interval, transform_name, ...
    dataset: dict = field(default_factory=_default_dataset)
    bucket_config: dict | None = None  # {resolution: {num_frames: (keep_prob, batch_size)}}
    batch_size: int | None = None  # per rank; needed without bucket_config (buckets set their own)
    num_workers: int = 4
    prefetch_factor: int | None = None

    # ---- parallelism and precision -------------------------------------------------------------
    plugin: Plugin = "zero2"
    sp_size: int = 1
    dp_replicate: int = 1  # > 1: HSDP, this many model replicas, each sharded over world / dp_replicate ranks
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
    async_checkpoint: bool = False  # training goes on while a checkpoint is written (staged in CPU memory)
    log_every: int = 10
    wandb: bool = False
    wandb_project: str = "opensora"
    exp_name: str | None = None  # run name in wandb; default: the outputs folder's name
    record_time: bool = False  # synchronise CUDA around each phase so the timings are exact
    seed: int = 42
    deterministic: bool = False  # deterministic kernels: bit-exact runs on CPU

    # keys of the release's configs that would have no effect here: opensora.config.validate refuses
    # each with its reason instead of accepting and ignoring it
    KEYS_WITHOUT_EFFECT: ClassVar[Mapping[str, str]] = MappingProxyType({
        "num_bucket_build_workers": "bucket assignment is vectorised, without worker processes",
        "reduce_bucket_size_in_m": "a ColossalAI ZeRO bucket size; the plugins here size their own",
        "cache_pin_memory": "the release's pinned-memory cache; batches are pinned by the data loader",
        "pin_memory_cache_pre_alloc_numels": "the release's pinned-memory cache; batches are pinned by the data loader",
    })  # fmt: skip

    def __post_init__(self) -> None:
        positive = {"sp_size": self.sp_size, "dp_replicate": self.dp_replicate,
                    "accumulation_steps": self.accumulation_steps, "epochs": self.epochs,
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


@dataclass
class TrainConfig(BaseTrainConfig):
    """A diffusion model's training run (scripts/train.py)."""

    # ---- frozen encoders and the noise schedule: dicts for opensora.registry.build_module -----
    vae: dict | None = None  # unused with use_features
    text_encoder: dict | None = None  # unused with use_features
    scheduler: dict = field(default_factory=_default_scheduler)

    # ---- data: with use_features, dataset.data_path is the feature folder written by
    # tools/datasets/extract_features.py and the other dataset keys are unused
    use_features: bool = False
    mask_ratios: dict | None = None  # {mask name: probability}; see opensora.training.masks


def _default_vae_dataset() -> dict:
    # 17 frames: one micro-clip of the 1.2 VAE; size and transform are VideoTextDataset's defaults
    return {"type": "VideoTextDataset", "num_frames": 17}


@dataclass
class VAETrainConfig(BaseTrainConfig):
    """A video VAE's training run (scripts/train_vae.py); ``model`` is a VideoAutoencoderPipeline (1.2),
    its VideoAutoencoderKL alone, or a 2.0 video VAE (``hunyuan_vae``, ``dc_ae``; pixel losses only).

    Losses, summed: ``use_real_rec_loss`` -- pixel L1 plus ``perceptual_loss_weight`` x LPIPS, and
    ``kl_loss_weight`` x the temporal posterior's KL; ``use_z_rec_loss`` -- L1 between the spatial
    latents and their temporal reconstruction; ``use_image_identity_loss`` -- on one-frame clips, L1
    between the spatial latents and the temporal latent (the temporal VAE should pass images through).
    With ``discriminator``, from optimizer step ``discriminator_start`` on: a hinge GAN loss, the
    generator's weighted adaptively (see opensora.training.vae_losses).
    """

    dataset: dict = field(default_factory=_default_vae_dataset)

    # ---- reconstruction losses ---------------------------------------------------------------
    use_real_rec_loss: bool = True
    use_z_rec_loss: bool = False
    use_image_identity_loss: bool = False
    perceptual_loss_weight: float = 0.1  # 0 switches LPIPS off
    kl_loss_weight: float = 1e-6
    sample_posterior: bool = True  # False: decode the posterior means (a plain autoencoder; the KL still applies)
    freeze_encoder: bool = False  # train the decoder(s) only, so latents already extracted stay valid
    lpips_net: Literal["vgg", "alex"] = "vgg"
    lpips_weights: str | None = None  # folder of the LPIPS weight files; default $OPENSORA_EVAL_WEIGHTS
    lpips_pretrained: bool = True  # False: a randomly initialised LPIPS (tests, smoke runs)

    # ---- mixed images and videos: per step, cut the batch to one frame with probability
    # mixed_image_ratio ("mixed_video_image") or to a random length 1..T ("mixed_video_random")
    mixed_strategy: Literal["mixed_video_image", "mixed_video_random"] | None = None
    mixed_image_ratio: float = 0.0

    # ---- adversarial loss (a dict for opensora.registry.build_module, e.g. NLayerDiscriminator3D)
    discriminator: dict | None = None
    discriminator_start: int = 0  # the optimizer step (counted from 0) that turns the GAN losses on
    discriminator_factor: float = 1.0  # scales the generator's and the discriminator's GAN loss
    generator_factor: float = 0.5  # scales the adaptive generator weight (or is the weight, see below)
    # False: the generator's GAN loss has the fixed weight generator_factor (2.0's gen_loss_config
    # disc_weight) instead of the gradient-balanced one of 1.2
    adaptive_generator_weight: bool = True
    discriminator_lr: float | None = None  # default: lr
    generator_loss_type: Literal["hinge"] = "hinge"
    discriminator_loss_type: Literal["hinge"] = "hinge"
    lecam_loss_weight: float | None = None  # in the release's configs; only None is supported
    gradient_penalty_loss_weight: float | None = None  # likewise

    # ---- initial weights of the per-frame VAE: a diffusers AutoencoderKL (folder or hub id)
    spatial_vae_weights: str | None = None
    spatial_vae_subfolder: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sp_size != 1:
            raise ConfigError(f"VAE training has no sequence parallelism: sp_size must be 1, got {self.sp_size}")
        for key in ("perceptual_loss_weight", "kl_loss_weight", "discriminator_factor", "generator_factor"):
            if getattr(self, key) < 0:
                raise ConfigError(f"config key '{key}' must be >= 0, got {getattr(self, key)}")
        if not 0.0 <= self.mixed_image_ratio <= 1.0:
            raise ConfigError(f"mixed_image_ratio must be in [0, 1], got {self.mixed_image_ratio}")
        if not (self.use_real_rec_loss or self.use_z_rec_loss or self.use_image_identity_loss):
            raise ConfigError("set use_real_rec_loss, use_z_rec_loss or use_image_identity_loss: no loss is on")
        for key in ("lecam_loss_weight", "gradient_penalty_loss_weight"):
            if getattr(self, key) is not None:
                raise ConfigError(f"{key} is not supported; set it to None")
        if self.discriminator is not None:
            self._check_adversarial()

    def _check_adversarial(self) -> None:
        if not self.use_real_rec_loss:
            raise ConfigError("discriminator needs use_real_rec_loss: the generator's weight compares their gradients")
        if self.plugin not in ("none", "ddp"):
            # the adaptive weight differentiates the decoder's last weight on its own, which sharded
            # parameters (FSDP, ZeRO) do not allow outside the engine's backward
            raise ConfigError(f"adversarial training needs plugin 'ddp' or 'none', got '{self.plugin}'")
        if self.discriminator_lr is not None and self.discriminator_lr <= 0:
            raise ConfigError(f"discriminator_lr must be > 0 or None, got {self.discriminator_lr}")


# the conditioning modes of Open-Sora 2.0 (opensora.inference.mmdit_sampling.COND_TYPES): a copy of
# the names keeps this schema free of torch, the trainer checks that the two agree
MMDIT_COND_TYPES = ("t2v", "i2v_head", "i2v_tail", "i2v_loop", "v2v_head", "v2v_tail", "v2v_head_easy",
                    "v2v_tail_easy")  # fmt: skip
MMDIT_DROPOUT_KEYS = ("t5", "clip")


@dataclass
class MMDiTTrainConfig(BaseTrainConfig):
    """Open-Sora 2.0's MMDiT training run (scripts/train.py picks it for an MMDiT ``model``).

    The keys not in :class:`BaseTrainConfig` keep the release's names: ``condition_config`` is the
    {cond type: weight} mix each video sample draws its conditioning mode from (None: text-to-video
    only; a model with ``cond_embed`` then gets an empty condition), ``dropout_ratio`` the
    probabilities {"t5": p, "clip": p} of replacing a sample's T5 states or CLIP vector by those of
    the empty prompt (classifier-free guidance), ``is_causal_vae`` whether the VAE encodes the
    first frame alone (one more conditioned latent frame in v2v), ``sigma_min`` the noise left at
    t = 0, ``guidance`` the scale given to a guidance-embedding (distilled) model.
    """

    # ---- frozen encoders: dicts for opensora.registry.build_module -------------------------------
    vae: dict | None = None  # unused with use_features
    text_encoder: dict | None = None  # T5 states and a pooled CLIP vector ("text_encoders"); unused with use_features

    # ---- data: with use_features, dataset.data_path is a folder of tools/datasets/extract_features.py
    use_features: bool = False

    # ---- the 2.0 recipe ------------------------------------------------------------------------
    condition_config: dict | None = None
    dropout_ratio: dict | None = None
    is_causal_vae: bool = True
    sigma_min: float = 1e-5
    guidance: float = 4.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.condition_config is not None:
            _check_weights("condition_config", self.condition_config, MMDIT_COND_TYPES)
        for key, value in (self.dropout_ratio or {}).items():
            if key not in MMDIT_DROPOUT_KEYS:
                raise ConfigError(f"dropout_ratio: unknown key '{key}' (known: {', '.join(MMDIT_DROPOUT_KEYS)})")
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"dropout_ratio['{key}'] must be a probability in [0, 1], got {value!r}")
        if not 0.0 <= self.sigma_min < 1.0:
            raise ConfigError(f"sigma_min must be in [0, 1), got {self.sigma_min}")


def _check_weights(name: str, weights: Mapping, known: tuple[str, ...]) -> None:
    """``weights`` maps known names to non-negative numbers, not all zero."""
    for key, value in weights.items():
        if key not in known:
            raise ConfigError(f"{name}: unknown entry '{key}' (known: {', '.join(known)})")
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise ConfigError(f"{name}['{key}'] must be a weight >= 0, got {value!r}")
    if not any(weights.values()):
        raise ConfigError(f"{name} needs at least one entry with a weight above 0, got {dict(weights)}")
