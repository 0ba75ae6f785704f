"""scripts/train.py: the shipped configs validate, user errors exit in one line, and two gloo ranks train."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from opensora.config import load_config, run_cli
from opensora.datasets import Bucket
from opensora.training.checkpoint import CheckpointManager
from opensora.training.config import TrainConfig
from opensora.training.masks import MaskGenerator
from opensora.training.trainer import train
from tests.scripts import load_script
from tests.training.helpers import FEATURE_OPTIONS, ROOT, TINY_CONFIG, tiny_config

SCRIPT = ROOT / "scripts" / "train.py"
STAGE1 = ROOT / "configs" / "opensora-v1-2" / "train" / "stage1.py"


def env() -> dict[str, str]:
    # one intra-op thread per process: two ranks share two busy cores
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_shipped_configs_validate() -> None:
    stage1 = load_config(STAGE1, TrainConfig)
    assert (stage1.plugin, stage1.dtype, stage1.lr, stage1.adam_eps, stage1.ema_decay) == (
        "zero2",
        "bf16",
        1e-4,
        1e-15,
        0.99,
    )
    assert stage1.model["type"] == "STDiT3-XL/2" and stage1.vae["type"] == "OpenSoraVAE_V1_2"
    assert len(Bucket(stage1.bucket_config)) > 0 and MaskGenerator(stage1.mask_ratios).ratios
    tiny = load_config(TINY_CONFIG, TrainConfig)
    assert tiny.model["type"] == "STDiT3" and tiny.bucket_config == {"144p": {1: (1.0, 4), 17: (1.0, 2)}}
    assert tiny.mask_ratios == stage1.mask_ratios  # inherited


def test_missing_data_exits_non_zero_in_one_line(tmp_path: Path) -> None:
    argv = [str(TINY_CONFIG), "--data-path", str(tmp_path / "missing.csv"), "--outputs", str(tmp_path / "out")]
    done = subprocess.run([sys.executable, str(SCRIPT), *argv], env=env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [f"error: training data '{tmp_path / 'missing.csv'}' does not exist "
                                                "(set it with --data-path)"]  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--cfg-options", "bogus=1"], "error: unknown config key 'bogus' (known: "),
        (["--cfg-options", "ema_decay=2"], "error: ema_decay must be in [0, 1], got 2.0"),
        (["--cfg-options", "mask_ratios={'random': 2}"], "error: mask_ratios['random'] must be a probability"),
        (["--cfg-options", "bucket_config={'144p': {17: (1.0, 64)}}"], "error: no full batch in any bucket"),
        (["--cfg-options", "scheduler.sample_method=cosine"], "error: rflow: unknown sample_method 'cosine'"),
        (
            ["--cfg-options", "num_bucket_build_workers=4"],
            "error: config key 'num_bucket_build_workers' would have no effect here (bucket assignment is vectorised",
        ),
    ],
)
def test_config_errors_exit_in_one_line(media_csv: Path, tmp_path: Path, capsys, extra: list, message: str) -> None:
    script = load_script(SCRIPT, "train_script")
    argv = [str(TINY_CONFIG), "--data-path", str(media_csv), "--outputs", str(tmp_path / "out"), *extra]
    with pytest.raises(SystemExit) as info:
        run_cli(lambda: script.main(argv))
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), lines


def test_two_gloo_ranks_train_and_a_single_process_resumes(features_dir: Path, tmp_path: Path) -> None:
    outputs = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(free_port()), str(SCRIPT), str(TINY_CONFIG), "--data-path", str(features_dir),
        "--outputs", str(outputs), "--plugin", "ddp", "--max-steps", "3", "--use-features", "true",
        "--batch-size", "2", "--cfg-options", "bucket_config=None", "log_every=1", "num_workers=0",
    ]  # fmt: skip
    done = subprocess.run(command, env=env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoint = CheckpointManager(outputs).latest()
    assert checkpoint is not None and checkpoint.name == "epoch1-global_step3"  # 2 batches per rank and epoch
    saved = CheckpointManager.load(checkpoint, ["sampler", "rng"])
    assert saved["sampler"]["num_replicas"] == 2 and len(saved["rng"]["per_rank"]) == 2
    assert "step 3: loss=" in (outputs / "train.log").read_text()
    # a checkpoint of two ranks continues on one (random streams restart, the data position carries over)
    cfg = tiny_config(outputs, features_dir, *FEATURE_OPTIONS, "max_steps=4", f"load='{checkpoint}'")
    assert train(cfg).step == 4
