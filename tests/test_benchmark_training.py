"""The MMDiT training benchmarks: train_mfu prints an MFU consistent with the FLOP count and its own
step time, bad flags fail in one line, and train_memory trains 1 and 2 gloo ranks into its table."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from opensora.acceleration.parallel import TORCHRUN_ENV
from opensora.config import run_cli
from opensora.models.mmdit.flops import mmdit_train_flops
from tests.scripts import load_script
from tests.tiny import _TINY, one_torch_thread  # noqa: F401 (autouse)

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "tools" / "benchmark"


@pytest.fixture
def train_mfu(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import their shared helpers beside them
    for key in TORCHRUN_ENV:
        monkeypatch.delenv(key, raising=False)  # one process, whatever launched pytest
    return load_script(BENCHMARKS / "train_mfu.py", "train_mfu_tool")


def test_train_mfu_prints_the_mfu_of_its_own_step_time(train_mfu, capsys):
    train_mfu.main(["--size", "tiny", "--latent", "16,2,4,4", "--text-tokens", "4", "--warmup", "0", "--steps", "1"])
    out = capsys.readouterr().out
    step = float(re.search(r"^step: ([\d.]+) s", out, re.M)[1])
    model_flops = float(re.search(r"model ([\d.e+]+) \(3 x forward\)", out)[1])
    mfu = float(re.search(r"^MFU = .* = ([\d.e+-]+)%$", out, re.M)[1])
    tiny = {k: v for k, v in _TINY["mmdit"].items() if k != "type"}
    assert model_flops == pytest.approx(mmdit_train_flops(tiny, 2 * 2 * 2, 4).model, rel=1e-3)
    assert "(1 x 989 TFLOP/s)" in out and "fp32 on cpu" in out
    assert mfu == pytest.approx(100 * model_flops / step / 989e12, rel=0.01)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--size", "huge"], "unknown size 'huge'"),
        (["--set", "depth"], "--set depth: expected NAME=VALUE"),
        (["--steps", "zero"], "argument --steps: invalid int value"),
        (["--latent", "4,2,8,8"], "a latent of 4 channels packs into 16"),
    ],
)
def test_train_mfu_bad_flags_fail_in_one_line(train_mfu, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: train_mfu.main(argv))
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_train_memory_prints_a_row_per_world_size():
    command = [sys.executable, str(BENCHMARKS / "train_memory.py"), "--size", "tiny", "--ranks", "1", "2"]
    command += ["--latent", "16,1,4,4", "--text-tokens", "4", "--steps", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {line.split(" | ")[0].strip(): line.split(" | ") for line in done.stdout.splitlines() if " | " in line}
    assert rows["ranks"][1].strip() == "params/rank" and set(rows) == {"ranks", "1", "2"}
    one, two = rows["1"][1].strip(), rows["2"][1].strip().split("/")
    assert len(two) == 2 and sum(float(p.rstrip("M")) for p in two) == pytest.approx(float(one.rstrip("M")), abs=0.002)
    assert all(float(rows[n][6]) > 0 and float(rows[n][7]) > 0 for n in ("1", "2"))  # save and resume timed
