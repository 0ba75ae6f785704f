"""VAE reconstruction metrics: agreement with scikit-image, LPIPS/FloLPIPS behaviour, pairing and the CLI."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch import nn

from opensora.config import run_cli
from opensora.errors import OpenSoraError
from opensora.eval import (
    ENV_VAR,
    LPIPS,
    FloLPIPS,
    FrameOptions,
    Metric,
    MetricOptions,
    MetricUnavailableError,
    RaftFlow,
    load_lpips,
    load_pair,
    load_raft,
    pair_videos,
    psnr,
    ssim,
)
from opensora.eval.lpips import TRUNK_FILES
from tests.datasets.media import index_frames, read_index, write_video
from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
NOISE_LEVELS = (0.02, 0.05, 0.1, 0.2, 0.4)


def noisy(images: torch.Tensor, sigma: float, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (images + sigma * torch.randn(images.shape, generator=generator)).clamp(0, 1)


def smooth_images(n: int = 3, height: int = 36, width: int = 52, seed: int = 0) -> torch.Tensor:
    """Images with structure at several scales (blocky noise), float (N, 3, H, W) in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, height // 4 + 1, width // 4 + 1, generator=generator)
    images = nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return (images + 0.05 * torch.rand(n, 3, height, width, generator=generator)).clamp(0, 1)


def as_hwc(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).double().numpy()


# ---- SSIM and PSNR ---------------------------------------------------------------------------


def test_identical_images_give_ssim_one_and_psnr_inf():
    images = smooth_images()
    assert torch.allclose(ssim(images, images), torch.ones(3), atol=1e-6)
    assert torch.isinf(psnr(images, images)).all()


# scikit-image's counterparts on one (H, W, 3) float image pair; SSIM with the Gaussian window of the paper
SKIMAGE = {
    "psnr": (psnr, lambda x, y: peak_signal_noise_ratio(x, y, data_range=1.0)),
    "ssim": (
        ssim,
        lambda x, y: structural_similarity(
            x, y, data_range=1.0, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        ),
    ),
}


@pytest.mark.parametrize("sigma", [0.01, 0.05, 0.2])
@pytest.mark.parametrize("name", sorted(SKIMAGE))
def test_metrics_match_scikit_image(name, sigma):
    metric, reference = SKIMAGE[name]
    real = smooth_images()
    generated = noisy(real, sigma)
    ours = metric(real, generated)
    expected = [reference(as_hwc(x), as_hwc(y)) for x, y in zip(real, generated)]
    np.testing.assert_allclose(ours.double().numpy(), expected, rtol=0, atol=1e-3)
    assert (ours < metric(real, real)).all()  # noise scores below a perfect reconstruction


@pytest.mark.parametrize("sigma", [0.01, 0.05, 0.2])
def test_psnr_is_the_formula_and_follows_the_noise(sigma):
    real = smooth_images()
    generated = noisy(real, sigma)
    ours = psnr(real, generated)
    mse = (real.double() - generated.double()).pow(2).flatten(1).mean(1)
    np.testing.assert_allclose(ours.double().numpy(), (10 * torch.log10(1.0 / mse)).numpy(), rtol=0, atol=1e-3)
    # Gaussian noise of std sigma (before clipping) puts PSNR near -20 log10(sigma)
    assert abs(float(ours.mean()) + 20 * np.log10(sigma)) < 1.5


def test_ssim_falls_as_noise_grows_and_rejects_small_images():
    real = smooth_images()
    values = [float(ssim(real, noisy(real, sigma)).mean()) for sigma in NOISE_LEVELS]
    assert values == sorted(values, reverse=True)
    with pytest.raises(ValueError, match="11x11"):
        ssim(real[..., :8, :8], real[..., :8, :8])


# ---- LPIPS -----------------------------------------------------------------------------------


@pytest.mark.parametrize("net, size", [("alex", 64), ("vgg", 32)])
def test_random_lpips_is_zero_on_identical_and_grows_with_noise(net, size):
    model = LPIPS(net)
    real = smooth_images(2, size, size)
    assert torch.equal(model(real, real), torch.zeros(2))
    distances = [float(model(real, noisy(real, sigma)).mean()) for sigma in NOISE_LEVELS]
    assert distances[0] > 0
    assert distances == sorted(distances), distances


def write_lpips_weights(folder: Path, source: LPIPS) -> Path:
    """``source``'s weights in the layouts torchvision and the lpips package publish."""
    trunk = {f"features.{key}": value for key, value in source.features.state_dict().items()}
    trunk["classifier.1.weight"] = torch.zeros(4, 4)  # torchvision's file also holds the classifier
    heads = {f"lin{k}.model.1.weight": head.weight.clone() for k, head in enumerate(source.heads)}
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(trunk, folder / TRUNK_FILES[source.net])
    torch.save(heads, folder / f"{source.net}.pth")
    return folder


def test_lpips_loads_torchvision_trunk_and_lpips_heads(tmp_path):
    source = LPIPS("alex")
    for head in source.heads:
        nn.init.uniform_(head.weight, 0.0, 1.0)
    loaded = load_lpips("alex", write_lpips_weights(tmp_path, source))
    real = smooth_images(2, 48, 48)
    generated = noisy(real, 0.1)
    assert torch.allclose(loaded(real, generated), source(real, generated))
    assert not torch.allclose(LPIPS("alex")(real, generated), source(real, generated))


def test_lpips_heads_fall_back_to_the_installed_lpips_package(tmp_path, monkeypatch):
    source = LPIPS("alex")
    for head in source.heads:
        nn.init.uniform_(head.weight, 0.0, 1.0)
    folder = write_lpips_weights(tmp_path / "weights", source)
    package = tmp_path / "site" / "lpips"
    (package / "weights" / "v0.1").mkdir(parents=True)
    (folder / "alex.pth").rename(package / "weights" / "v0.1" / "alex.pth")  # as the lpips wheel lays them out
    monkeypatch.setattr("opensora.eval.weights._lpips_package_dir", lambda: package)
    loaded = load_lpips("alex", folder)
    assert all(torch.equal(mine.weight, theirs.weight) for mine, theirs in zip(loaded.heads, source.heads))


def test_lpips_without_weights_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr("opensora.eval.weights._lpips_package_dir", lambda: None)
    with pytest.raises(MetricUnavailableError, match="alexnet-owt-7be5be79.pth") as info:
        load_lpips("alex", tmp_path)
    assert "\n" not in str(info.value)
    torch.save({}, tmp_path / TRUNK_FILES["alex"])
    with pytest.raises(MetricUnavailableError, match="alex.pth"):
        load_lpips("alex", tmp_path)


# ---- FloLPIPS --------------------------------------------------------------------------------


class RandomFlow(nn.Module):
    """A random conv net standing in for RAFT: (first, second) -> (N, 2, H, W)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(6, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 2, 3, padding=1))

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        return 4 * self.net(torch.cat([first, second], dim=1))


def moving_video(frames: int = 4, size: int = 48) -> torch.Tensor:
    base = smooth_images(1, size, size + frames)[0]
    return torch.stack([base[..., t : t + size] for t in range(frames)])  # (T, 3, H, W), panning


def flolpips_clip(model: FloLPIPS, real: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
    return model(real[:-1], real[1:], generated[:-1], generated[1:])


def test_random_flolpips_zero_on_identical_positive_otherwise():
    model = FloLPIPS(LPIPS("alex"), RandomFlow())
    real = moving_video()
    with torch.no_grad():
        assert torch.equal(flolpips_clip(model, real, real), torch.zeros(3))
        assert (flolpips_clip(model, real, noisy(real, 0.1)) > 0).all()


def test_flolpips_equals_lpips_where_flows_agree_and_weights_by_discrepancy():
    lpips = LPIPS("alex")
    real = moving_video(size=64)
    generated = noisy(real, 0.1)
    agreeing = FloLPIPS(lpips, lambda first, second: torch.zeros(first.shape[0], 2, *first.shape[-2:]))
    expected = lpips(real[1:], generated[1:])
    assert torch.allclose(flolpips_clip(agreeing, real, generated), expected, rtol=1e-4)

    def left_half_moves_differently(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        flow = torch.zeros(first.shape[0], 2, *first.shape[-2:])
        flow[..., : first.shape[-1] // 2] = second[:, :2, :, : first.shape[-1] // 2]  # differs where frames differ
        return flow

    # distortion only on the left, where the flows disagree: weighted up against plain LPIPS
    left_noise = real.clone()
    left_noise[..., :32] = generated[..., :32]
    weighted = FloLPIPS(lpips, left_half_moves_differently)
    assert (flolpips_clip(weighted, real, left_noise) > lpips(real[1:], left_noise[1:])).all()


@pytest.mark.parametrize("batch_size", [1, 2, 3, 8])
def test_metrics_give_the_same_values_whatever_the_batch_size(batch_size):
    real = moving_video(frames=6)
    generated = noisy(real, 0.1)
    flolpips = FloLPIPS(LPIPS("alex"), RandomFlow())
    options = MetricOptions(batch_size=batch_size)
    with torch.no_grad():
        expected = flolpips_clip(flolpips, real, generated)
        values = Metric("flolpips", flolpips, uses_previous=True).per_frame(real, generated, options)
    assert values.shape == (5,) and torch.allclose(values, expected, rtol=1e-5)
    assert torch.allclose(Metric("ssim", ssim).per_frame(real, generated, options), ssim(real, generated))


def test_raft_flow_wraps_torchvision_raft():
    pytest.importorskip("torchvision.models.optical_flow", exc_type=ImportError)
    from torchvision.models.optical_flow import raft_small

    raft = raft_small(weights=None, progress=False).eval()
    flow = RaftFlow(raft, num_flow_updates=2)
    real = moving_video(frames=2, size=40)
    with torch.no_grad():
        assert flow(real[:1], real[1:]).shape == (1, 2, 40, 40)  # padded to 128 for RAFT, cropped back
        # at RAFT's own size nothing is padded: the wrapper is RAFT on [-1, 1] frames, its last update
        large = moving_video(frames=2, size=128)
        expected = raft(large[:1] * 2 - 1, large[1:] * 2 - 1, num_flow_updates=2)[-1]
        torch.testing.assert_close(flow(large[:1], large[1:]), expected)
        model = FloLPIPS(LPIPS("alex"), flow)
        assert torch.equal(flolpips_clip(model, real, real), torch.zeros(1))
        assert float(flolpips_clip(model, real, noisy(real, 0.2))) > 0


def test_raft_without_weights_or_torchvision_is_one_line(tmp_path):
    with pytest.raises(MetricUnavailableError, match="raft_small_C_T_V2-01064c6d.pth"):
        load_raft("raft_small", tmp_path)
    if importlib.util.find_spec("torchvision") is None:
        (tmp_path / "raft_small_C_T_V2-01064c6d.pth").write_bytes(b"")
        with pytest.raises(MetricUnavailableError, match="needs torchvision"):
            load_raft("raft_small", tmp_path)


# ---- pairing and frame loading ---------------------------------------------------------------


def blocky_frames(num_frames: int, seed: int, height: int = 32, width: int = 48) -> np.ndarray:
    """uint8 (T, H, W, 3) of 4x4 random blocks: detailed, yet it survives H.264 at high quality."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (num_frames, height // 4, width // 4, 3), dtype=np.uint8)
    return blocks.repeat(4, axis=1).repeat(4, axis=2)


def make_folders(tmp_path: Path, noise: int = 0) -> tuple[Path, Path]:
    """real/{a,b,solo}.mp4 and generated/{a,b,extra}.mp4; generated = real plus uniform noise."""
    real_dir, generated_dir = tmp_path / "real", tmp_path / "generated"
    real_dir.mkdir()
    generated_dir.mkdir()
    rng = np.random.default_rng(7)
    for seed, name in enumerate(("a", "b")):
        frames = blocky_frames(6, seed)
        write_video(real_dir / f"{name}.mp4", frames)
        shifted = frames.astype(np.int16) + rng.integers(-noise, noise + 1, frames.shape)
        write_video(generated_dir / f"{name}.mp4", np.clip(shifted, 0, 255).astype(np.uint8))
    write_video(real_dir / "solo.mp4", blocky_frames(2, 9))
    write_video(generated_dir / "extra.mp4", blocky_frames(2, 9))
    (real_dir / "notes.txt").write_text("not a video")
    return real_dir, generated_dir


def test_pairing_by_stem_reports_unmatched(tmp_path):
    real_dir, generated_dir = make_folders(tmp_path)
    pairing = pair_videos(real_dir, generated_dir)
    assert [pair.name for pair in pairing.pairs] == ["a", "b"]
    assert pairing.unmatched_line() == "unmatched videos, skipped: 1 only in real (solo); 1 only in generated (extra)"
    with pytest.raises(OpenSoraError, match="no videos with the same name"):
        pair_videos(real_dir, tmp_path)
    with pytest.raises(OpenSoraError, match="does not exist"):
        pair_videos(tmp_path / "missing", generated_dir)
    write_video(real_dir / "a.avi", blocky_frames(2, 3), codec="mpeg4")
    with pytest.raises(OpenSoraError, match="two videos named 'a'"):
        pair_videos(real_dir, generated_dir)


def test_load_pair_resamples_caps_resizes_and_crops(tmp_path):
    real_dir, generated_dir = tmp_path / "r", tmp_path / "g"
    real_dir.mkdir()
    generated_dir.mkdir()
    write_video(real_dir / "v.mp4", index_frames(24, height=32, width=64), fps=24)
    write_video(generated_dir / "v.mp4", index_frames(20, height=32, width=64), fps=24)
    pair = pair_videos(real_dir, generated_dir).pairs[0]
    real, generated = load_pair(pair, FrameOptions(sample_fps=8))  # every 3rd frame, as many as both have
    shown = [read_index((frame.permute(1, 2, 0) * 255).round().byte().numpy()) for frame in real]
    assert shown == [0, 3, 6, 9, 12, 15, 18]
    assert real.shape == generated.shape == (7, 3, 32, 64)
    real, _ = load_pair(pair, FrameOptions(num_frames=5, resolution=16, crop_size=12))
    assert real.shape == (5, 3, 12, 12)
    assert 0.0 <= float(real.min()) and float(real.max()) <= 1.0
    with pytest.raises(OpenSoraError, match="--crop_size 40"):
        load_pair(pair, FrameOptions(crop_size=40))


# ---- the command line ------------------------------------------------------------------------


def cli_main():
    return load_script(ROOT / "eval" / "vae" / "eval_common_metric.py", "eval_common_metric").main


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_cli_identical_folders_ssim_one_psnr_inf_and_skips_lpips(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setattr("opensora.eval.weights._lpips_package_dir", lambda: None)
    real_dir, _ = make_folders(tmp_path)
    out = tmp_path / "out" / "scores.csv"
    argv = ["--real_video_dir", str(real_dir), "--generated_video_dir", str(real_dir), "--csv", str(out)]
    summary = cli_main()([*argv, "--metric", "ssim", "psnr", "lpips", "flolpips", "--batch_size", "4"])
    printed = capsys.readouterr().out.splitlines()
    assert summary["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert summary["psnr"] == float("inf")
    skips = [line for line in printed if "skipped" in line]
    assert len(skips) == 2 and all("alexnet-owt-7be5be79.pth" in line for line in skips), skips
    assert any(line.startswith("ssim: 1.000000 (mean over 14 frames of 3 videos)") for line in printed), printed
    assert any(line.startswith("psnr: inf") for line in printed)
    rows = read_rows(out)
    assert [row["video"] for row in rows] == ["a", "b", "solo"]
    assert [row["num_frames"] for row in rows] == ["6", "6", "2"]
    assert all(float(row["psnr"]) == float("inf") for row in rows)


def test_cli_noisy_folders_with_lpips_weights(tmp_path, monkeypatch, capsys):
    real_dir, generated_dir = make_folders(tmp_path, noise=24)
    source = LPIPS("alex")
    monkeypatch.setenv(ENV_VAR, str(write_lpips_weights(tmp_path / "weights", source)))
    out = tmp_path / "scores.csv"
    argv = ["--real_video_dir", str(real_dir), "--generated_video_dir", str(generated_dir), "--csv", str(out)]
    summary = cli_main()([*argv, "--metric", "psnr", "ssim", "lpips", "--num_frames", "4"])
    printed = capsys.readouterr().out
    assert "unmatched videos, skipped: 1 only in real (solo); 1 only in generated (extra)" in printed
    assert 20 < summary["psnr"] < 40 and 0 < summary["ssim"] < 1 and summary["lpips"] > 0
    rows = read_rows(out)
    assert [row["video"] for row in rows] == ["a", "b"] and [row["num_frames"] for row in rows] == ["4", "4"]
    assert np.mean([float(row["lpips"]) for row in rows]) == pytest.approx(summary["lpips"], rel=1e-5)


def test_cli_bad_folder_is_one_line_and_exit_2(tmp_path, capsys):
    main = cli_main()
    with pytest.raises(SystemExit) as info:
        run_cli(lambda: main(["--real_video_dir", str(tmp_path / "nope"), "--generated_video_dir", str(tmp_path)]))
    assert info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: real video folder") and "\n" not in error
