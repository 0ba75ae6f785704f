"""Open-Sora 2.0 MMDiT training on demo-world features: the tiny config trains t2v and i2v mixed
and its loss falls, activation checkpointing and bf16 work, and two sequence-parallel gloo
processes train exactly like one."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from opensora.config import load_config, read_config
from opensora.datasets import FeatureDataset
from opensora.errors import ConfigError
from opensora.training import mmdit_trainer
from opensora.training.base import TrainResult, run
from opensora.training.config import MMDiTTrainConfig, TrainConfig
from opensora.training.ema import unwrap
from opensora.training.mmdit_trainer import MMDiTTrainer, train_mmdit
from opensora.training.recipes import select_recipe
from tests.scripts import load_script
from tests.training.helpers import ROOT, TINY_CONFIG

TINY_V2 = ROOT / "configs" / "opensora-v2" / "train" / "tiny.py"


@pytest.fixture(scope="module")
def demo_features(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 demo-world samples (9- and 17-frame clips and stills, 32 x 32) extracted with the tiny 2.0 config."""
    root = tmp_path_factory.mktemp("demo_v2")
    generate = load_script(ROOT / "tools" / "demo_world" / "generate.py", "demo_generate")
    meta = generate.main(["--out", str(root / "world"), "--num-clips", "16", "--sizes", "32x32", "--frames", "9",
                          "17", "--workers", "1"])  # fmt: skip
    extract = load_script(ROOT / "tools" / "datasets" / "extract_features.py", "extract_features")
    extract.main([str(TINY_V2), "--data-path", str(meta), "--output", str(root / "features")])
    return root / "features"


def tiny_v2(outputs: Path, data: Path, *options: str) -> MMDiTTrainConfig:
    return load_config(TINY_V2, MMDiTTrainConfig, {"dataset.data_path": str(data), "outputs": str(outputs)},
                       ["ckpt_every=0", *options])  # fmt: skip


def test_features_hold_the_2_0_inputs(demo_features: Path) -> None:
    dataset = FeatureDataset(demo_features)
    sample = dataset[0]
    assert sample["x"].shape == (16, 3, 4, 4) and sample["ref_head"].shape == sample["ref_tail"].shape == (16, 1, 4, 4)
    assert sample["y"].shape == (1, 16, 32) and sample["y_vec"].shape == (32,)
    assert dataset.extras["null.y"].shape == (1, 1, 16, 32) and dataset.extras["null.y_vec"].shape == (1, 32)
    meta = dataset.metadata
    videos, stills = meta[meta["path"].str.endswith(".mp4")], meta[meta["path"].str.endswith(".png")]
    assert len(videos) and all(text.endswith(" 12 FPS, ") is False and " 12 FPS, " in text and
                               text.endswith(" motion score.") for text in videos["text"])  # fmt: skip
    assert len(stills) and not any("FPS" in text or "motion" in text for text in stills["text"])


def test_tiny_config_trains_t2v_and_i2v_mixed_and_the_loss_falls(
    demo_features: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: list[str] = []
    draw = mmdit_trainer.draw_cond_types

    def recorded(*args, **kwargs) -> list[str]:
        drawn.extend(draw(*args, **kwargs))
        return drawn[-args[1] :]

    monkeypatch.setattr(mmdit_trainer, "draw_cond_types", recorded)
    script = load_script(ROOT / "scripts" / "train.py", "train_script")
    result = script.main([str(TINY_V2), "--data-path", str(demo_features), "--outputs", str(tmp_path / "run")])
    assert result.step == 40 and result.skipped_steps == 0 and len(drawn) == 40 * 4
    assert {"t2v", "i2v_head", "i2v_tail", "i2v_loop"} == set(drawn)
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    assert result.checkpoint is not None and result.checkpoint.is_dir()


def test_activation_checkpointing_changes_nothing_and_bf16_trains(demo_features: Path, tmp_path: Path) -> None:
    plain = train_mmdit(tiny_v2(tmp_path / "plain", demo_features, "max_steps=3"))
    checkpointed = train_mmdit(tiny_v2(tmp_path / "ckpt", demo_features, "max_steps=3", "grad_checkpoint=True"))
    assert checkpointed.losses == pytest.approx(plain.losses, rel=1e-6)
    bf16 = train_mmdit(tiny_v2(tmp_path / "bf16", demo_features, "max_steps=3", "dtype='bf16'"))
    assert bf16.losses == pytest.approx(plain.losses, rel=0.05)


def test_configs_pick_their_recipe_and_reject_other_keys(demo_features: Path, tmp_path: Path) -> None:
    assert select_recipe(read_config(TINY_CONFIG)).schema is TrainConfig
    assert select_recipe(read_config(TINY_V2)).schema is MMDiTTrainConfig
    for option, message in [("mask_ratios={'random': 1}", "unknown config key 'mask_ratios'"),
                            ("condition_config={'i2v_middle': 1}", "unknown entry 'i2v_middle'"),
                            ("dropout_ratio={'t5': 2}", "probability")]:  # fmt: skip
        with pytest.raises(ConfigError, match=message):
            tiny_v2(tmp_path, demo_features, option)
    with pytest.raises(ConfigError, match="cond_embed"):
        train_mmdit(tiny_v2(tmp_path / "t2v", demo_features, "model.cond_embed=False"))


# ---- sequence parallelism: 2 gloo processes, one sample split over both, against one process --------
class _KeepsWeights(MMDiTTrainer):
    """Writes the trained weights to ``weights_file`` (rank 0), whatever the checkpoint format."""

    weights_file = ""

    def fit(self) -> TrainResult:
        result = super().fit()
        if self.dims.is_main:
            torch.save({k: v.detach().cpu() for k, v in unwrap(self.engine.model).state_dict().items()},
                       self.weights_file)  # fmt: skip
        return result


def _train_keeping_weights(cfg: MMDiTTrainConfig, weights_file: Path) -> TrainResult:
    trainer = type("KeepsWeights", (_KeepsWeights,), {"weights_file": str(weights_file)})
    return run(cfg, trainer)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _sp_worker(rank: int, world_size: int, port: int, cfg: MMDiTTrainConfig, out: str) -> None:
    torch.set_num_threads(1)  # two processes share the cores
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))  # fmt: skip
    result = _train_keeping_weights(cfg, Path(out).with_suffix(".pt"))
    if rank == 0:
        Path(out).write_text(json.dumps({"losses": result.losses}))


def _spawn(fn, nprocs: int, *args, timeout: float = 240) -> None:
    context = mp.start_processes(fn, args=(nprocs, _free_port(), *args), nprocs=nprocs, join=False,
                                 start_method="spawn")  # fmt: skip
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1.0):  # raises with the worker's traceback when one fails
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"distributed training did not finish in {timeout:.0f} s")


def test_two_sequence_parallel_processes_train_like_one(demo_features: Path, tmp_path: Path) -> None:
    options = ("max_steps=3", "lr=1e-3")
    one = _train_keeping_weights(tiny_v2(tmp_path / "one", demo_features, *options), tmp_path / "one.pt")
    out = tmp_path / "sp.json"
    sp_cfg = tiny_v2(tmp_path / "sp", demo_features, *options, "sp_size=2", "plugin='ddp'")
    _spawn(_sp_worker, 2, sp_cfg, str(out))
    assert "sequence parallel 2" in (tmp_path / "sp" / "train.log").read_text()
    # the same samples, modes, timesteps, dropout and noise; only float32 summation order differs
    assert json.loads(out.read_text())["losses"] == pytest.approx(one.losses, rel=1e-5)
    expected, actual = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "sp.pt")
    assert actual.keys() == expected.keys()
    diff = torch.cat([(actual[name] - value).abs().flatten() for name, value in expected.items()])
    # Adam moves a weight by about lr whatever its gradient's size, so where a gradient is near zero
    # its round-off can change a step by a fraction of lr (1e-3): nearly all weights agree to 1e-6
    assert diff.max() < 1e-4 and (diff > 1e-6).float().mean() < 1e-4, (diff.max(), (diff > 1e-6).sum())
    assert expected["cond_in.weight"].abs().sum() > 0  # the i2v samples trained the condition input
