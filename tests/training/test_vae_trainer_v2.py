"""Open-Sora 2.0's video VAEs on the VAE trainer: the tiny Video DC-AE's losses fall through the
release's reconstruction + perceptual stage and its adversarial stage, the trained model beats an
untrained one on SSIM, PSNR and LPIPS through scripts/inference_vae.py and eval/vae, the Hunyuan
VAE trains with its KL, and losses a 2.0 VAE cannot have are refused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from opensora.config import load_config
from opensora.errors import ConfigError
from opensora.eval.lpips import LPIPS
from opensora.registry import MODELS, build_module
from opensora.training.checkpoint import CheckpointManager
from opensora.training.config import VAETrainConfig
from opensora.training.vae_trainer import train_vae
from tests.eval.test_vae_metrics import write_lpips_weights
from tests.scripts import load_script
from tests.training.helpers import ROOT, write_clips
from tests.training.test_vae_trainer import logged_steps

CONFIGS = ROOT / "configs" / "vae" / "train"


@pytest.fixture(scope="module")
def clips_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 clips of 12 frames and 2 stills, 32 x 32."""
    return write_clips(tmp_path_factory.mktemp("vae_v2_clips"))


def config(name: str, outputs: Path, data: Path, *options: str) -> VAETrainConfig:
    flags = {"dataset.data_path": str(data), "outputs": str(outputs)}
    return load_config(CONFIGS / name, VAETrainConfig, flags, ["ckpt_every=0", "log_every=1", *options])


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


@pytest.fixture(scope="module")
def trained_dc_ae(clips_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[VAETrainConfig, Path, Path]:
    """The tiny DC-AE after 40 steps of the first stage: (config, checkpoint, outputs folder)."""
    outputs = tmp_path_factory.mktemp("dc_ae_run")
    cfg = config("tiny_dc_ae.py", outputs, clips_csv, "max_steps=40")
    result = train_vae(cfg)
    assert result.step == 40 and result.skipped_steps == 0
    return cfg, result.checkpoint, outputs


def test_tiny_dc_ae_reconstruction_and_perceptual_losses_fall(trained_dc_ae) -> None:
    cfg, checkpoint, outputs = trained_dc_ae
    assert cfg.perceptual_loss_weight == 0.5 and cfg.kl_loss_weight == 0 and cfg.mixed_strategy == "mixed_video_image"
    steps = logged_steps(outputs)
    assert all("kl_loss" not in scalars and "g_loss" not in scalars for scalars in steps.values())
    rec = [steps[step]["rec_loss"] for step in range(1, 41)]
    assert mean(rec[-10:]) < 0.75 * mean(rec[:3]), rec
    # the checkpoint folder loads as the model (what --ckpt-path of the next stage and inference use)
    loaded = build_module({**cfg.model, "from_pretrained": str(checkpoint)}, MODELS).state_dict()
    saved = CheckpointManager.load(checkpoint, ["model"])["model"]
    assert loaded.keys() == saved.keys() and all(torch.equal(loaded[k], saved[k]) for k in saved)


def test_trained_dc_ae_reconstructs_better_by_ssim_psnr_and_lpips(trained_dc_ae, clips_csv: Path,
                                                                  tmp_path: Path) -> None:  # fmt: skip
    _, checkpoint, _ = trained_dc_ae
    untrained = tmp_path / "untrained"
    torch.manual_seed(0)
    build_module(Config.fromfile(ROOT / "configs" / "_base_" / "tiny.py")["_tiny"]["dc_ae"].to_dict(),
                 MODELS).save_pretrained(untrained)  # fmt: skip
    lpips_weights = write_lpips_weights(tmp_path / "lpips", LPIPS("alex"))
    reconstruct = load_script(ROOT / "scripts" / "inference_vae.py", "inference_vae_script")
    evaluate = load_script(ROOT / "eval" / "vae" / "eval_common_metric.py", "eval_common_metric_script")
    scores = {}
    for name, weights in (("trained", checkpoint), ("untrained", untrained)):
        save_dir = tmp_path / name / "recon"
        report = reconstruct.main([str(ROOT / "configs" / "vae" / "inference" / "tiny_dc_ae.py"),
                                   "--ckpt-path", str(weights), "--data-path", str(clips_csv),
                                   "--save-dir", str(save_dir)])  # fmt: skip
        assert set(report.folders) == {"ori", "rec"} and report.written == 6  # no per-frame VAE to compare
        scores[name] = evaluate.main([
            "--real_video_dir", str(report.folders["ori"]), "--generated_video_dir", str(report.folders["rec"]),
            "--metric", "ssim", "psnr", "lpips", "--lpips_weights", str(lpips_weights),
            "--csv", str(tmp_path / name / "scores.csv"),
        ])  # fmt: skip
    trained, untrained = scores["trained"], scores["untrained"]
    assert trained["psnr"] > untrained["psnr"] + 3, scores
    assert trained["ssim"] > untrained["ssim"] and trained["lpips"] < untrained["lpips"], scores


def test_tiny_dc_ae_adversarial_stage_has_the_fixed_generator_weight(clips_csv: Path, tmp_path: Path) -> None:
    cfg = config("tiny_dc_ae_disc.py", tmp_path / "run", clips_csv, "max_steps=40")
    result = train_vae(cfg)
    assert result.step == 40 and result.skipped_steps == 0
    steps = logged_steps(tmp_path / "run")
    assert not any("g_loss" in steps[step] for step in range(1, 11))
    assert all({"g_loss", "d_loss", "d_grad_norm"} <= steps[step].keys() for step in range(11, 41))
    assert {steps[step]["d_weight"] for step in range(11, 41)} == {0.05}
    # batches differ twofold in difficulty: compare the last ten steps with the first three
    rec = [steps[step]["rec_loss"] for step in range(1, 41)]
    assert mean(rec[-10:]) < 0.75 * mean(rec[:3]), rec  # the GAN term does not undo the reconstruction
    saved = CheckpointManager.load(result.checkpoint, ["discriminator_model"])["discriminator_model"]
    assert saved and all(torch.isfinite(value).all() for value in saved.values())


def test_hunyuan_vae_trains_with_its_kl(clips_csv: Path, tmp_path: Path) -> None:
    hunyuan = Config.fromfile(ROOT / "configs" / "_base_" / "tiny.py")["_tiny"]["hunyuan_vae"].to_dict()
    cfg = config("tiny_dc_ae.py", tmp_path / "run", clips_csv, "dataset.num_frames=9", "max_steps=20")
    cfg = dataclasses.replace(cfg, model=hunyuan, kl_loss_weight=1e-6, sample_posterior=True)
    result = train_vae(cfg)
    assert result.step == 20
    steps = logged_steps(tmp_path / "run")
    assert all(scalars["kl_loss"] > 0 for scalars in steps.values())
    rec = [steps[step]["rec_loss"] for step in range(1, 21)]
    assert mean(rec[-5:]) < 0.8 * mean(rec[:3]), rec


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("kl_loss_weight=1e-6", "deterministic .no KL.: set kl_loss_weight=0"),
        ("use_z_rec_loss=True", "use_z_rec_loss needs the 1.2 pipeline's spatial latents"),
        ("use_image_identity_loss=True", "use_image_identity_loss needs"),
    ],
)
def test_losses_a_video_dc_ae_cannot_have_are_refused(clips_csv: Path, tmp_path: Path, option, message) -> None:
    with pytest.raises(ConfigError, match=message):
        train_vae(config("tiny_dc_ae.py", tmp_path / "run", clips_csv, option, "max_steps=1"))


def test_release_recipes_hold_the_release_values() -> None:
    first = load_config(CONFIGS / "video_dc_ae.py", VAETrainConfig, {"dataset.data_path": "meta.csv"}, [])
    assert first.model == {"type": "dc_ae", "model_name": "dc-ae-f32t4c128", "from_scratch": True,
                           "from_pretrained": None}  # fmt: skip
    assert (first.lr, first.adam_betas, first.ema_decay, first.grad_clip) == (5e-5, (0.9, 0.98), 0.99, 1.0)
    assert (first.perceptual_loss_weight, first.kl_loss_weight, first.mixed_image_ratio) == (0.5, 0.0, 0.2)
    assert first.dataset["num_frames"] == 32 and first.dataset["image_size"] == (256, 256)
    second = load_config(CONFIGS / "video_dc_ae_disc.py", VAETrainConfig, {"dataset.data_path": "meta.csv"}, [])
    assert second.discriminator == {"type": "NLayerDiscriminator3D", "input_nc": 3, "ndf": 64, "n_layers": 5}
    assert (second.discriminator_lr, second.generator_factor, second.adaptive_generator_weight) == (1e-4, 0.05, False)
    assert second.discriminator_start == 0 and second.grad_checkpoint
