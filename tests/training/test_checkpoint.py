"""Checkpoint folders: formats, the COMPLETE marker, a save killed half-way, pruning, RNG states."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from opensora.errors import CheckpointError
from opensora.training import checkpoint as ckpt
from opensora.training.checkpoint import COMPLETE, CheckpointManager, rng_state, set_rng_state


def states(step: int) -> dict:
    weight = torch.full((3, 2), float(step))
    return {
        "model": {"w": weight, "tied": weight},  # shared storage is fine
        "optimizer": {"state": {0: {"exp_avg": torch.ones(2)}}, "param_groups": [{"lr": 0.1, "params": [0]}]},
        "trainer": {"step": step, "epoch": 0},
    }


def test_save_writes_each_entry_in_its_format_and_loads_back(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    path = manager.save(7, states(7), epoch=2)
    assert path == tmp_path / "epoch2-global_step7"
    assert sorted(p.name for p in path.iterdir()) == [COMPLETE, "model.safetensors", "optimizer.pt", "trainer.json"]
    loaded = CheckpointManager.load(path)
    assert torch.equal(loaded["model"]["w"], torch.full((3, 2), 7.0))
    assert loaded["optimizer"]["state"][0]["exp_avg"].tolist() == [1.0, 1.0]  # int keys survive (torch.save)
    assert loaded["trainer"] == {"step": 7, "epoch": 0}
    assert CheckpointManager.info(path)["step"] == 7
    assert CheckpointManager.load(path, ["trainer"]).keys() == {"trainer"}
    with pytest.raises(CheckpointError, match="has no ema"):
        CheckpointManager.load(path, ["ema"])


def test_a_save_killed_half_way_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manager = CheckpointManager(tmp_path)
    good = manager.save(1, states(1))
    write = ckpt._write_entry

    def dies_after_the_weights(folder: Path, name: str, state: object) -> str:
        if name == "optimizer":
            raise KeyboardInterrupt  # the process is killed while writing
        return write(folder, name, state)

    monkeypatch.setattr(ckpt, "_write_entry", dies_after_the_weights)
    with pytest.raises(KeyboardInterrupt):
        manager.save(2, states(2))
    partial = [p for p in tmp_path.iterdir() if p.name.startswith("tmp-2-")]
    assert len(partial) == 1 and (partial[0] / "model.safetensors").exists()
    assert manager.checkpoints() == [good] and manager.latest() == good
    assert CheckpointManager.find(tmp_path) == good
    assert CheckpointManager.load(good)["trainer"]["step"] == 1
    with pytest.raises(CheckpointError, match="no COMPLETE marker"):
        CheckpointManager.load(partial[0])
    monkeypatch.setattr(ckpt, "_write_entry", write)
    manager.save(3, states(3))
    assert not partial[0].exists()  # the next save clears the debris


def test_pruning_keeps_the_last_n_by_step(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep_last=2)
    for step in (5, 10, 15, 20):
        manager.save(step, states(step), epoch=step // 10)
    names = [p.name for p in manager.checkpoints()]
    assert names == ["epoch1-global_step15", "epoch2-global_step20"]
    manager.save(20, states(21), epoch=2)  # the same step again replaces it
    assert CheckpointManager.load(manager.latest())["trainer"]["step"] == 21


def test_find_errors_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        CheckpointManager.find(tmp_path / "nope")
    (tmp_path / "epoch0-global_step3").mkdir()  # no marker: not a checkpoint
    with pytest.raises(CheckpointError, match="holds none"):
        CheckpointManager.find(tmp_path)


def test_rng_states_round_trip_through_a_checkpoint(tmp_path: Path) -> None:
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    path = CheckpointManager(tmp_path).save(1, {"rng": rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(2))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(CheckpointManager.load(path)["rng"])
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(2), expected[2])


def test_sharded_entries_round_trip_and_an_async_save_appears_after_wait(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    manager = CheckpointManager(tmp_path, keep_last=1, async_save=True)
    first = manager.save(1, {"model": model.state_dict(), "trainer": {"step": 1}}, sharded=["model"])
    manager.wait()
    with torch.no_grad():
        model.weight.fill_(5.0)
    second = manager.save(2, {"model": model.state_dict(), "trainer": {"step": 2}}, sharded=["model"])
    with torch.no_grad():
        model.weight.fill_(9.0)  # after staging: the checkpoint keeps the values of the save call
    manager.wait()
    assert manager.checkpoints() == [second] and not first.exists()  # keep_last=1
    assert CheckpointManager.info(second)["sharded"] == ["model"]
    loaded = CheckpointManager.load(second)
    assert torch.equal(loaded["model"]["weight"], torch.full((2, 3), 5.0)) and loaded["trainer"] == {"step": 2}
    # a training checkpoint folder loads as the model's weights (what --ckpt-path uses)
    fresh = torch.nn.Linear(3, 2)
    ckpt.load_sharded_entries(second, {"model": fresh.state_dict()})
    assert torch.equal(fresh.weight, torch.full((2, 3), 5.0))
