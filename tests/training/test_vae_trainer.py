"""VAE training on tiny real clips: the reconstruction loss falls, the GAN starts at its step, resumes are
exact, images and videos mix, and the stage configs hold the release's recipe."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from opensora.config import load_config, run_cli
from opensora.registry import MODELS, build_module
from opensora.training.checkpoint import CheckpointManager
from opensora.training.config import VAETrainConfig
from opensora.training.vae_trainer import mix_clip_length, train_vae
from tests.scripts import load_script
from tests.training.helpers import ROOT, write_clips
from tests.training.test_train_script import env, free_port

CONFIGS = ROOT / "configs" / "vae" / "train"
TINY = CONFIGS / "tiny.py"
SCRIPT = ROOT / "scripts" / "train_vae.py"


@pytest.fixture(scope="module")
def clips_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 clips of 12 frames and 2 stills, 32 x 32."""
    return write_clips(tmp_path_factory.mktemp("vae_clips"))


def tiny_vae_config(outputs: Path, data: Path, *options: str) -> VAETrainConfig:
    flags = {"dataset.data_path": str(data), "outputs": str(outputs)}
    return load_config(TINY, VAETrainConfig, flags, ["ckpt_every=0", *options])


def logged_steps(outputs: Path) -> dict[int, dict[str, float]]:
    """{step: {scalar: value}} from the log lines of train.log."""
    steps = {}
    for match in re.finditer(r"step (\d+): (.*)", (outputs / "train.log").read_text()):
        pairs = (item.split("=", 1) for item in match[2].split())
        steps[int(match[1])] = {key: float(value) for key, value in pairs}
    return steps


def test_reconstruction_loss_falls_then_the_gan_starts_at_its_step(clips_csv: Path, tmp_path: Path) -> None:
    # the tiny config is stage 3's recipe: clips cut to random lengths, pixel L1 + LPIPS + KL, GAN from step 20
    cfg = tiny_vae_config(tmp_path / "run", clips_csv, "max_steps=30", "log_every=1", "ckpt_every=20")
    result = train_vae(cfg)
    assert result.step == 30 and result.skipped_steps == 0
    steps = logged_steps(tmp_path / "run")
    assert sorted(steps) == list(range(1, 31))
    rec = [steps[step]["rec_loss"] for step in range(1, 31)]
    first, settled = sum(rec[:3]) / 3, sum(rec[10:20]) / 10
    assert settled < 0.8 * first, (first, settled)
    # the adversarial phase: nothing before optimizer step 20, both losses and the weight from then on
    assert not any("g_loss" in steps[step] or "d_loss" in steps[step] for step in range(1, 21))
    assert all({"g_loss", "d_loss", "d_weight", "d_grad_norm"} <= steps[step].keys() for step in range(21, 31))
    assert all(steps[step]["d_weight"] > 0 for step in range(21, 31))
    before = CheckpointManager.load(tmp_path / "run" / "epoch6-global_step20", ["discriminator_optimizer"])
    after = CheckpointManager.load(result.checkpoint, ["discriminator_optimizer"])
    # no gradient had reached the discriminator's Adam moments before its start; all of them have after
    before, after = before["discriminator_optimizer"]["state"], after["discriminator_optimizer"]["state"]
    assert all(not state["exp_avg"].any() for state in before.values())
    assert after.keys() == before.keys() and all(state["exp_avg"].any() for state in after.values())

    # the checkpoint folder is what --ckpt-path (model.from_pretrained) of stage 2/3 and inference_vae load
    model_cfg = {**cfg.model, "from_pretrained": str(result.checkpoint)}
    loaded = build_module(model_cfg, MODELS).state_dict()
    saved = CheckpointManager.load(result.checkpoint, ["model"])["model"]
    assert loaded.keys() == saved.keys() and all(torch.equal(loaded[k], saved[k]) for k in saved)


def test_resume_with_the_discriminator_is_exact(clips_csv: Path, tmp_path: Path) -> None:
    options = ("deterministic=True", "discriminator_start=1", "grad_checkpoint=True", "log_every=1")
    straight = train_vae(tiny_vae_config(tmp_path / "a", clips_csv, *options, "max_steps=5"))
    first = train_vae(tiny_vae_config(tmp_path / "b", clips_csv, *options, "max_steps=2"))
    resumed = train_vae(tiny_vae_config(tmp_path / "b", clips_csv, *options, "max_steps=5", f"load='{tmp_path / 'b'}'"))
    assert first.step == 2 and resumed.step == 5
    assert first.losses + resumed.losses == straight.losses
    names = ["model", "ema", "discriminator_model", "sampler", "trainer", "lr_schedule"]
    a, b = CheckpointManager.load(straight.checkpoint, names), CheckpointManager.load(resumed.checkpoint, names)
    for name in ("model", "ema", "discriminator_model"):
        assert a[name].keys() == b[name].keys()
        assert all(torch.equal(a[name][key], b[name][key]) for key in a[name]), name
    assert a["sampler"] == b["sampler"] and a["trainer"] == b["trainer"] == {"epoch": 1, "step": 5}
    assert logged_steps(tmp_path / "b")[5]["d_loss"] == logged_steps(tmp_path / "a")[5]["d_loss"]


def test_images_and_videos_in_buckets_with_a_frozen_spatial_vae(media_csv: Path, tmp_path: Path) -> None:
    # stage 1's losses on the bucket sampler: one batch of the two stills, four of 9-frame videos
    dataset = {"type": "VariableVideoTextDataset", "transform_name": "resize_crop", "data_path": str(media_csv)}
    options = (
        f"dataset={dataset}",
        "bucket_config={'144p': {1: (1.0, 2), 9: (1.0, 2)}}", "batch_size=None", "discriminator=None",
        "model.freeze_vae_2d=True", "use_real_rec_loss=False", "use_z_rec_loss=True",
        "use_image_identity_loss=True", "mixed_strategy=None", "max_steps=5", "log_every=1",
    )  # fmt: skip
    result = train_vae(tiny_vae_config(tmp_path / "run", media_csv, *options))
    assert result.step == 5
    steps = logged_steps(tmp_path / "run")
    assert all("z_rec_loss" in scalars and "rec_loss" not in scalars for scalars in steps.values())
    assert sum("identity_loss" in scalars for scalars in steps.values()) == 1  # the image batch
    assert "144p/1/1.00" in (tmp_path / "run" / "train.log").read_text()
    saved = CheckpointManager.load(result.checkpoint, ["ema", "optimizer"])
    assert saved["ema"] and all(name.startswith("temporal_vae.") for name in saved["ema"])  # spatial frozen
    assert set(saved["optimizer"]["state"]) == set(saved["ema"])


def test_mixed_clip_lengths_follow_the_release_strategies() -> None:
    video = torch.zeros(2, 3, 9, 4, 4)
    random.seed(0)
    assert mix_clip_length(video, None, 1.0).shape[2] == 9
    assert mix_clip_length(video, "mixed_video_image", 1.0).shape[2] == 1
    assert mix_clip_length(video, "mixed_video_image", 0.0).shape[2] == 9
    lengths = {mix_clip_length(video, "mixed_video_random", 0.0).shape[2] for _ in range(200)}
    assert lengths == set(range(1, 10))


def test_stage_configs_hold_the_release_recipe() -> None:
    stage1 = load_config(CONFIGS / "stage1.py", VAETrainConfig)
    # the memory setting: batch 1 per GPU of 17 x 256 x 256, lr 1e-5, bf16, gradient checkpointing
    assert (stage1.batch_size, stage1.dataset["num_frames"], stage1.dataset["image_size"]) == (1, 17, (256, 256))
    assert (stage1.lr, stage1.dtype, stage1.grad_checkpoint, stage1.plugin) == (1e-5, "bf16", True, "zero2")
    assert stage1.model["freeze_vae_2d"] and stage1.model["vae_temporal"]["type"] == "VAE_Temporal_SD"
    assert (stage1.use_real_rec_loss, stage1.use_z_rec_loss, stage1.use_image_identity_loss) == (False, True, True)
    assert (stage1.mixed_strategy, stage1.mixed_image_ratio, stage1.discriminator) == ("mixed_video_image", 0.2, None)
    stage2 = load_config(CONFIGS / "stage2.py", VAETrainConfig)
    assert stage2.dataset["num_frames"] == 33 and stage2.mixed_strategy == "mixed_video_random"
    assert not stage2.model["freeze_vae_2d"] and stage2.use_real_rec_loss and not stage2.use_z_rec_loss
    assert (stage2.lr, stage2.batch_size, stage2.kl_loss_weight, stage2.perceptual_loss_weight) == (1e-5, 1, 1e-6, 0.1)
    stage3 = load_config(CONFIGS / "stage3.py", VAETrainConfig)
    assert stage3.discriminator["type"] == "NLayerDiscriminator3D" and stage3.plugin == "ddp"
    assert (stage3.generator_factor, stage3.discriminator_factor, stage3.dataset["num_frames"]) == (0.5, 1.0, 33)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--plugin", "zero2"], "error: adversarial training needs plugin 'ddp' or 'none', got 'zero2'"),
        (["--cfg-options", "bogus=1"], "error: unknown config key 'bogus' (known: "),
        (["--cfg-options", "lecam_loss_weight=0.1"], "error: lecam_loss_weight is not supported"),
        (["--cfg-options", "lpips_pretrained=True"], "error: the perceptual loss (LPIPS alex) needs alexnet-owt"),
    ],
)
def test_config_errors_exit_in_one_line(
    clips_csv: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch, extra: list, message: str
) -> None:
    monkeypatch.setenv("OPENSORA_EVAL_WEIGHTS", str(tmp_path))  # an empty folder: no LPIPS weights
    argv = [str(TINY), "--data-path", str(clips_csv), "--outputs", str(tmp_path / "out"), *extra]
    script = load_script(SCRIPT, "train_vae_script")
    with pytest.raises(SystemExit) as info:
        run_cli(lambda: script.main(argv))
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), lines


@pytest.mark.slow  # two processes start up (about 30 s on two busy cores)
def test_two_gloo_ranks_train_adversarially(clips_csv: Path, tmp_path: Path) -> None:
    # DDP around both models: the adaptive weight's gradients and the discriminator's two passes per step
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(free_port()), str(SCRIPT), str(TINY), "--data-path", str(clips_csv),
        "--outputs", str(tmp_path / "ddp"), "--max-steps", "2", "--batch-size", "1",
        "--cfg-options", "discriminator_start=1", "log_every=1", "ckpt_every=0",
    ]  # fmt: skip
    done = subprocess.run(command, env=env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    steps = logged_steps(tmp_path / "ddp")
    assert "d_loss" not in steps[1] and "d_loss" in steps[2]
    checkpoint = CheckpointManager(tmp_path / "ddp").latest()  # 3 batches per rank and epoch
    assert checkpoint is not None and checkpoint.name == "epoch0-global_step2"
    saved = CheckpointManager.load(checkpoint, ["sampler", "rng", "discriminator_model"])
    assert saved["sampler"]["num_replicas"] == 2 and len(saved["rng"]["per_rank"]) == 2 and saved["discriminator_model"]
