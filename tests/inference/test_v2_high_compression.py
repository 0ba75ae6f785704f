"""Open-Sora 2.0 with the Video DC-AE (the release's high_compression config) through the one pipeline:
unpatched 128-channel latents, 4k and 4k+1 frame counts cut to length, the reference image coded by
the DC-AE, and the release config's architecture."""

from __future__ import annotations

import pytest
import torch

from opensora.config import load_config
from opensora.datasets.video_io import probe
from opensora.inference.adapters.mmdit import MMDiTAdapter
from opensora.inference.config import InferenceConfig
from opensora.inference.runner import build_pipeline
from tests.inference.test_v2_pipeline import ROOT, frames_of, infer, references  # noqa: F401 (fixture)

TINY_HC = str(ROOT / "configs/opensora-v2/inference/high_compression_tiny.py")


@pytest.mark.parametrize(("mode", "frames"), [("t2v", 9), ("t2v", 8), ("i2v_head", 9), ("t2v", 1)])
def test_the_dc_ae_stack_writes_videos_of_the_asked_size(tmp_path, references, mode, frames):  # noqa: F811
    extra = ("--ref", str(references["image"])) if mode == "i2v_head" else ()
    infer(TINY_HC, "--prompt", "a red cat", "--cond_type", mode, "--num_frames", str(frames),
          "--save-dir", str(tmp_path), *extra)  # fmt: skip
    name = "sample_0000.png" if frames == 1 else "sample_0000.mp4"
    if frames == 1:
        assert (tmp_path / name).exists()
        return
    info = probe(tmp_path / name)
    assert (info.num_frames, info.height, info.width) == (frames, 32, 64)
    assert frames_of(tmp_path / name).std() > 0


def test_four_frames_which_the_dc_ae_cannot_decode_stop_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        infer(TINY_HC, "--prompt", "a cat", "--num_frames", "4", "--save-dir", str(tmp_path))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == ("error: num_frames 4: Open-Sora 2.0 samples 1 frame or 4k or 4k+1 "
                                               "from 5 (5, 8, 9, ..., 128, 129), at most 129")  # fmt: skip


def test_the_adapter_samples_unpatched_latents_of_the_dc_ae():
    pipeline = build_pipeline(load_config(TINY_HC, InferenceConfig), torch.device("cpu"))
    adapter = pipeline.adapter
    assert isinstance(adapter, MMDiTAdapter)
    assert (adapter.latent_channels, adapter.patch_size, adapter.causal) == (16, 1, False)


def test_the_release_config_checks_and_builds_the_released_architectures():
    from opensora.inference.runner import _architecture, check_config

    cfg = load_config(str(ROOT / "configs/opensora-v2/inference/high_compression.py"), InferenceConfig)
    size, latent = check_config(cfg)
    assert (size.num_frames, size.height, size.width) == (129, 576, 1024)
    assert list(latent) == [33, 18, 32]  # ceil(129 / 4) frames of 1024/32 x 576/32, one token each
    model = _architecture(cfg.model)
    assert model.config["in_channels"] == 128 and model.config["patch_size"] == 1
    assert model.cond_in.weight.shape[1] == 129  # 128 latent channels + the mask
    vae = _architecture(cfg.vae)
    assert sum(p.numel() for p in vae.parameters()) == 459_462_147
    assert vae.tiling.spatial and vae.tiling.temporal and vae.tiling.temporal_tile_size == 32
