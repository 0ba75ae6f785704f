"""configs/opensora-v2/train: every config loads, its parts name arguments their constructors take,
and the values are the release's (configs/diffusion/train/*.py of hpcaitech/Open-Sora)."""

from __future__ import annotations

import pytest

from opensora.config import load_config
from opensora.datasets import Bucket
from opensora.registry import MODELS, check_module_config
from opensora.training.config import MMDiTTrainConfig
from tests.training.helpers import ROOT

CONFIGS = ROOT / "configs" / "opensora-v2" / "train"
NAMES = ("image", "stage1", "stage1_i2v", "stage2", "stage2_i2v", "high_compression", "tiny")
I2V_MIX = {"t2v": 1, "i2v_head": 5, "i2v_loop": 1, "i2v_tail": 1}


def load(name: str) -> MMDiTTrainConfig:
    return load_config(CONFIGS / f"{name}.py", MMDiTTrainConfig)


def buckets(cfg: MMDiTTrainConfig, resolution: str) -> dict:
    return cfg.bucket_config[resolution]


@pytest.mark.parametrize("name", NAMES)
def test_config_loads_and_its_parts_build(name: str) -> None:
    cfg = load(name)
    for part in (cfg.model, cfg.vae, cfg.text_encoder):
        check_module_config(part, MODELS)
    assert cfg.dropout_ratio == {"t5": 0.31622777, "clip": 0.31622777}
    if cfg.bucket_config is not None:  # the 2.0 bucket resolutions: 256px, 768px, 1024px
        assert len(Bucket(cfg.bucket_config)) > 0
    if name != "tiny":
        assert (cfg.plugin, cfg.dtype, cfg.grad_checkpoint, cfg.grad_clip, cfg.warmup_steps) == ("zero2", "bf16", True,
                                                                                                  1.0, 0)  # fmt: skip
        assert (cfg.adam_eps, cfg.weight_decay, cfg.ema_decay, cfg.keep_last, cfg.seed) == (1e-15, 0.0, 0.0, 20, 42)
        assert cfg.model["type"] == "flux" and cfg.model["hidden_size"] == 3072 and cfg.model["depth"] == 19
        assert cfg.text_encoder["encoders"]["t5"]["model_max_length"] == 512


def test_stages_hold_the_release_values() -> None:
    image, stage1, stage1_i2v = load("image"), load("stage1"), load("stage1_i2v")
    assert (image.lr, image.ckpt_every, image.condition_config, image.model["cond_embed"]) == (1e-5, 100, None, False)
    assert image.bucket_config == {"256px": {1: (1.0, 50)}, "768px": {1: (0.5, 11)}, "1024px": {1: (0.5, 7)}}
    assert image.vae["type"] == "hunyuan_vae" and image.is_causal_vae

    assert (stage1.lr, stage1.ckpt_every, stage1.sp_size) == (5e-5, 2000, 1)
    assert list(buckets(stage1, "256px")) == [1, *range(5, 130, 4)]
    assert [buckets(stage1, "256px")[f] for f in (1, 33, 37, 97, 129)] == [(1.0, 45), (1.0, 12), (1.0, 6), (1.0, 4),
                                                                          (1.0, 3)]  # fmt: skip
    assert buckets(stage1, "768px") == {1: (0.5, 13)} and buckets(stage1, "1024px") == {1: (0.5, 7)}

    assert (stage1_i2v.lr, stage1_i2v.condition_config, stage1_i2v.model["cond_embed"]) == (1e-5, I2V_MIX, True)
    assert stage1_i2v.bucket_config == stage1.bucket_config


def test_stage2_is_sequence_parallel_and_high_compression_uses_the_dc_ae() -> None:
    stage2, stage2_i2v, high = load("stage2"), load("stage2_i2v"), load("high_compression")
    assert (stage2.lr, stage2.sp_size, stage2.ckpt_every, stage2.model["cond_embed"]) == (5e-5, 4, 200, False)
    assert 69 not in buckets(stage2, "256px") and buckets(stage2, "256px")[73] == (1.0, 7)  # as released
    assert buckets(stage2, "256px")[1] == (1.0, 130) and buckets(stage2, "768px")[129] == (1.0, 2)

    assert (stage2_i2v.sp_size, stage2_i2v.condition_config, stage2_i2v.model["cond_embed"]) == (4, I2V_MIX, True)
    assert buckets(stage2_i2v, "256px")[1] == (1.0, 195) and buckets(stage2_i2v, "256px")[33] == (1.0, 80)
    assert buckets(stage2_i2v, "768px")[5] == (0.5, 10) and buckets(stage2_i2v, "768px")[129] == (0.5, 2)

    assert (high.lr, high.ckpt_every, high.is_causal_vae) == (3e-5, 250, False)
    assert high.condition_config == {"t2v": 1, "i2v_head": 7}
    assert (high.model["in_channels"], high.model["patch_size"], high.model["cond_embed"]) == (128, 1, True)
    assert high.vae["type"] == "dc_ae" and high.vae["scaling_factor"] == 0.493
    assert list(high.bucket_config) == ["768px"] and list(buckets(high, "768px")) == [1, *range(16, 129, 4)]
    assert [buckets(high, "768px")[f] for f in (1, 32, 36, 96, 128)] == [(1.0, 20), (1.0, 8), (1.0, 4), (1.0, 3),
                                                                        (1.0, 2)]  # fmt: skip


def test_tiny_trains_the_tiny_mmdit_on_features_with_the_i2v_mix() -> None:
    tiny = load("tiny")
    assert tiny.use_features and tiny.model["type"] == "MMDiT" and tiny.model["hidden_size"] == 64
    assert tiny.condition_config == I2V_MIX and tiny.vae["type"] == "hunyuan_vae"
