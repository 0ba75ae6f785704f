"""The per-frame VAE trains on its own through the VAE trainer (1.0/1.1's VAE, or a stage before the
temporal VAE)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from opensora.config import load_config
from opensora.training.checkpoint import CheckpointManager
from opensora.training.config import VAETrainConfig
from opensora.training.vae_trainer import train_vae
from tests.training.helpers import ROOT, write_clips
from tests.training.test_vae_trainer import logged_steps

TINY = ROOT / "configs" / "vae" / "train" / "tiny.py"
SPATIAL = {"type": "VideoAutoencoderKL", "AutoencoderKL_config": {
    "block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4,
    "down_block_types": ["DownEncoderBlock2D"] * 2, "up_block_types": ["UpDecoderBlock2D"] * 2}}  # fmt: skip


@pytest.fixture(scope="module")
def clips_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clips(tmp_path_factory.mktemp("vae_spatial_clips"))


def test_spatial_vae_alone_learns_and_seeds_a_pipeline(clips_csv: Path, tmp_path: Path) -> None:
    options = ["ckpt_every=0", "log_every=1", "max_steps=25", "discriminator=None", "perceptual_loss_weight=0.0",
               "mixed_strategy=None", "lr=0.003", f"model={SPATIAL!r}"]  # fmt: skip
    flags = {"dataset.data_path": str(clips_csv), "outputs": str(tmp_path / "run")}
    result = train_vae(load_config(TINY, VAETrainConfig, flags, options))
    rec = [logged_steps(tmp_path / "run")[step]["rec_loss"] for step in range(1, 26)]
    assert sum(rec[-5:]) / 5 < 0.6 * sum(rec[:3]) / 3, rec
    weights = CheckpointManager.load(result.checkpoint, ["model"])["model"]
    assert any(name.startswith("module.decoder.conv_out") for name in weights)
    with pytest.raises(Exception, match="VAE training needs one of .*; got HashTextEncoder"):
        train_vae(load_config(TINY, VAETrainConfig, flags, [*options, "model={'type': 'hash'}"]))
    assert torch.isfinite(torch.tensor(rec)).all()


def test_posterior_means_can_be_decoded(clips_csv: Path, tmp_path: Path, monkeypatch) -> None:
    from opensora.models.vae.spatial import SpatialVAE

    seen = []
    forward = SpatialVAE.forward
    monkeypatch.setattr(SpatialVAE, "forward", lambda self, x, sample=True, **kw: seen.append(sample) or forward(
        self, x, sample=sample, **kw))  # fmt: skip
    options = ["ckpt_every=0", "max_steps=2", "discriminator=None", "perceptual_loss_weight=0.0",
               "mixed_strategy=None", "sample_posterior=False", f"model={SPATIAL!r}"]  # fmt: skip
    flags = {"dataset.data_path": str(clips_csv), "outputs": str(tmp_path / "run")}
    assert train_vae(load_config(TINY, VAETrainConfig, flags, options)).step == 2
    assert seen == [False, False]


def test_freeze_encoder_trains_the_decoder_only(clips_csv: Path, tmp_path: Path) -> None:
    options = ["ckpt_every=1", "keep_last=5", "max_steps=3", "discriminator=None", "perceptual_loss_weight=0.0",
               "mixed_strategy=None", "lr=0.003", "freeze_encoder=True", f"model={SPATIAL!r}"]  # fmt: skip
    flags = {"dataset.data_path": str(clips_csv), "outputs": str(tmp_path / "run")}
    train_vae(load_config(TINY, VAETrainConfig, flags, options))
    saved = (next((tmp_path / "run").glob(f"*step{s}")) for s in (1, 3))
    first, last = (CheckpointManager.load(path, ["model"])["model"] for path in saved)
    encoder = [n for n in first if n.startswith(("module.encoder.", "module.quant_conv."))]
    decoder = [n for n in first if n.startswith(("module.decoder.", "module.post_quant_conv."))]
    assert encoder and decoder
    assert all(torch.equal(first[n], last[n]) for n in encoder)
    assert any(not torch.equal(first[n], last[n]) for n in decoder)


def test_the_pipeline_freezes_both_encoders() -> None:
    from opensora.registry import MODELS, build_module

    vae = build_module(load_config(TINY, VAETrainConfig).model, MODELS)
    vae.freeze_encoder()
    trainable = {n for n, p in vae.named_parameters() if p.requires_grad}
    assert trainable and all(".decoder." in n or "post_quant_conv" in n for n in trainable)
    assert any(n.startswith("temporal_vae.decoder") for n in trainable)
    assert any(n.startswith("spatial_vae.module.decoder") for n in trainable)


def test_identity_loss_with_more_temporal_channels_is_refused_in_one_line(clips_csv: Path, tmp_path: Path) -> None:
    from opensora.errors import ConfigError

    cfg = load_config(TINY, VAETrainConfig, {"dataset.data_path": str(clips_csv), "outputs": str(tmp_path / "run")},
                      ["use_image_identity_loss=True", "model.vae_temporal.embed_dim=8",
                       "model.vae_temporal.latent_embed_dim=8"])  # fmt: skip
    with pytest.raises(ConfigError, match="needs the temporal latent to have the per-frame latent's 4 channels, not 8"):
        train_vae(cfg)
