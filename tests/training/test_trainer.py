"""The training loop on a tiny real dataset: the loss falls, resumes are exact, bad steps stop the run.

Most runs train from features extracted once per session (the VAE is the slow part on a CPU);
one run encodes videos and images through the VAE with buckets, as a full run does.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from opensora.datasets import Bucket, FeatureDataset, write_feature_shards
from opensora.errors import OpenSoraError
from opensora.models.stdit.stdit3 import STDiT3
from opensora.training.checkpoint import CheckpointManager
from opensora.training.trainer import Trainer, feature_assignment, train
from tests.scripts import load_script
from tests.training.helpers import FEATURE_OPTIONS, ROOT, tiny_config


def export_tool():
    return load_script(ROOT / "tools" / "export_ema.py", "export_ema_tool")


def test_loss_falls_and_the_ema_exports_for_inference(features_dir: Path, tmp_path: Path) -> None:
    options = ("epochs=100", "max_steps=20", "log_every=10", "ckpt_every=0")
    result = train(tiny_config(tmp_path / "run", features_dir, *FEATURE_OPTIONS, *options))
    assert result.step == 20 and len(result.losses) == 20 and result.skipped_steps == 0
    # per-step losses are noisy (random timesteps and noise); averages over a few steps fall clearly
    first, last = sum(result.losses[:3]) / 3, sum(result.losses[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    assert result.checkpoint == tmp_path / "run" / "epoch3-global_step20"  # 5 steps per epoch
    log = (tmp_path / "run" / "train.log").read_text()
    assert "step 20: loss=" in log and "samples_per_sec=" in log and "time/forward_backward=" in log
    if importlib.util.find_spec("tensorboard") is not None:
        assert list((tmp_path / "run").glob("tensorboard/events.*"))

    exported = export_tool().main([str(tmp_path / "run"), str(tmp_path / "exported")])  # the latest checkpoint
    model = STDiT3.from_pretrained(exported)
    saved = CheckpointManager.load(result.checkpoint, ["ema", "model"])
    ema, raw = saved["ema"], saved["model"]
    state = model.state_dict()
    assert state.keys() == raw.keys()
    assert all(torch.equal(state[name], ema[name]) for name in ema)
    assert not torch.equal(ema["final_layer.linear.weight"], raw["final_layer.linear.weight"])  # decay 0.99
    assert model.config["depth"] == 2 and model.config["hidden_size"] == 64

    # --ckpt-path (model.from_pretrained) starts a new run from those weights: step 0, a lower loss
    warm = train(tiny_config(tmp_path / "warm", features_dir, *FEATURE_OPTIONS, "max_steps=3",
                             f"model.from_pretrained='{exported}'"))  # fmt: skip
    assert warm.step == 3 and sum(warm.losses) < sum(result.losses[:3])


def test_resume_is_bit_exact_with_the_same_data_order(
    features_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[int]] = []
    encode = Trainer.encode

    def recording(self: Trainer, batch: dict) -> tuple:
        seen.append(batch["index"].tolist())
        return encode(self, batch)

    monkeypatch.setattr(Trainer, "encode", recording)
    # 2 batches per step over 5-batch epochs: steps straddle epochs, and step 3 stops mid-epoch
    options = (*FEATURE_OPTIONS, "deterministic=True", "accumulation_steps=2", "epochs=3", "ckpt_every=0",
               "log_every=2", "warmup_steps=4")  # fmt: skip
    straight = train(tiny_config(tmp_path / "a", features_dir, *options, "max_steps=6"))
    order, seen[:] = list(seen), []
    first = train(tiny_config(tmp_path / "b", features_dir, *options, "max_steps=3"))
    resumed = train(tiny_config(tmp_path / "b", features_dir, *options, "max_steps=6", f"load='{tmp_path / 'b'}'"))
    assert first.checkpoint.name == "epoch1-global_step3" and resumed.step == 6
    assert seen == order and len(order) == 12
    assert first.losses + resumed.losses == straight.losses
    a, b = CheckpointManager.load(straight.checkpoint), CheckpointManager.load(resumed.checkpoint)
    for name in ("model", "ema"):
        assert a[name].keys() == b[name].keys()
        assert all(torch.equal(a[name][key], b[name][key]) for key in a[name]), name
    for key, moments in a["optimizer"]["state"].items():
        assert all(torch.equal(value, b["optimizer"]["state"][key][k]) for k, value in moments.items())
    assert a["sampler"] == b["sampler"] and a["lr_schedule"] == b["lr_schedule"] and a["trainer"] == b["trainer"]


def test_non_finite_losses_stop_naming_the_last_good_checkpoint(
    features_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loss = Trainer.loss

    def explodes_after_step_2(self: Trainer, x: torch.Tensor, model_kwargs: dict) -> torch.Tensor:
        value = loss(self, x, model_kwargs)
        return value * float("nan") if self.state.step >= 2 else value

    monkeypatch.setattr(Trainer, "loss", explodes_after_step_2)
    cfg = tiny_config(tmp_path / "run", features_dir, *FEATURE_OPTIONS, "ckpt_every=2", "max_bad_steps=3")
    with pytest.raises(OpenSoraError, match="3 consecutive steps") as info:
        train(cfg)
    assert str(tmp_path / "run" / "epoch0-global_step2") in str(info.value)
    weights = CheckpointManager.load(tmp_path / "run" / "epoch0-global_step2", ["model"])["model"]
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_videos_and_images_through_the_vae_in_buckets(media_csv: Path, tmp_path: Path) -> None:
    buckets = {"144p": {1: (1.0, 2), 5: (1.0, 2)}}  # 1 image batch and 4 video batches per epoch
    cfg = tiny_config(tmp_path / "run", media_csv, f"bucket_config={buckets}", "plugin='none'", "max_steps=2",
                      "log_every=1")  # fmt: skip
    result = train(cfg)
    assert result.step == 2 and all(torch.isfinite(torch.tensor(result.losses)))
    saved = CheckpointManager.load(result.checkpoint, ["sampler", "trainer"])
    assert saved["sampler"]["consumed"] == 2 and saved["trainer"] == {"epoch": 0, "step": 2}
    assert "144p/5/1.00" in (tmp_path / "run" / "train.log").read_text()  # the bucket table


def test_start_from_scratch_keeps_weights_and_restarts_steps(features_dir: Path, tmp_path: Path) -> None:
    options = (*FEATURE_OPTIONS, "warmup_steps=4", "ckpt_every=0")
    first = train(tiny_config(tmp_path / "a", features_dir, *options, "max_steps=3"))
    again = train(tiny_config(tmp_path / "b", features_dir, *options, "max_steps=1", "start_from_scratch=True",
                              f"load='{first.checkpoint}'"))  # fmt: skip
    saved = CheckpointManager.load(again.checkpoint, ["trainer", "lr_schedule", "sampler"])
    assert saved["trainer"] == {"epoch": 0, "step": 1} and saved["lr_schedule"]["last_step"] == 1
    assert saved["sampler"]["consumed"] == 2  # the data order starts over: one batch of two
    assert again.losses[0] < first.losses[0]  # but from the trained weights


def test_features_are_batched_by_the_bucket_they_were_extracted_at(tmp_path: Path) -> None:
    sizes = [(5, 192, 192), (1, 192, 192), (5, 144, 256), (5, 100, 100)]
    samples = [{"x": torch.zeros(4, 1, 2, 2), "num_frames": t, "height": h, "width": w} for t, h, w in sizes]
    write_feature_shards(samples, tmp_path / "features")
    assignment = feature_assignment(FeatureDataset(tmp_path / "features"), Bucket({"144p": {1: (1.0, 2), 5: (1.0, 2)}}))
    assert [str(b) if b else None for b in assignment.ids()] == ["144p/5/1.00", "144p/1/1.00", "144p/5/0.56", None]
    assert assignment.drop_counts() == {"no_bucket": 1}
