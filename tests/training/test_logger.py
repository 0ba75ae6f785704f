"""Run reporting: log lines with rates and timings, TensorBoard scalars, wandb offline."""

from __future__ import annotations

import importlib.util
import socket
import time
from pathlib import Path

import pytest

from opensora.training.logger import PhaseTimer, TrainLogger, wandb_mode


def test_phase_timer_averages_per_step() -> None:
    timer = PhaseTimer()
    for _ in range(2):
        with timer("data"):
            time.sleep(0.01)
        timer.step_done()
    averages = timer.averages()
    assert set(averages) == {"time/data"} and 0.009 < averages["time/data"] < 0.2
    assert timer.averages() == {}  # a new window


def test_wandb_goes_offline_without_a_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode() == "offline"
    monkeypatch.delenv("WANDB_MODE")

    def unreachable(*args: object, **kwargs: object) -> socket.socket:
        raise OSError("no route to host")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    assert wandb_mode() == "offline"


def test_scalars_reach_the_log_tensorboard_and_offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    log = TrainLogger(tmp_path, is_main=True, config={"lr": 0.1}, use_wandb=True, run_name="test")
    try:
        log.start(total_steps=4)
        log.info("start summary")
        for _ in range(2):
            log.step(loss=0.5, lr=0.1, samples=4)
        scalars = log.log_scalars(2, {"loss": 0.5, "time/data": 0.01}, samples=8)
        attached = list(log._handlers)
    finally:
        log.close()
    assert scalars["steps_per_sec"] > 0 and scalars["samples_per_sec"] == pytest.approx(4 * scalars["steps_per_sec"])
    text = (tmp_path / "train.log").read_text()
    assert "start summary" in text and "step 2: loss=0.5" in text and "samples_per_sec=" in text
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    if importlib.util.find_spec("tensorboard") is not None:
        assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert attached and not any(handler in log.log.handlers for handler in attached)  # a later run starts clean
