"""User mistakes are OpenSoraErrors everywhere, and every script reports one as a single line with exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from opensora.errors import ConfigError, OpenSoraError
from opensora.registry import SCHEDULERS, build_module
from opensora.schedulers.iddpm import IDDPM, space_timesteps

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"type": "rflow", "num_sampling_steps": -3}, "rflow: num_sampling_steps must be at least 1, got -3"),
        ({"type": "rflow", "sample_method": "cosine"}, "rflow: unknown sample_method 'cosine'"),
        ({"type": "rflow", "cfg_scale": float("nan")}, "rflow: cfg_scale must be a finite number >= 0"),
        ({"type": "rflow", "transform_scale": 0.0}, "rflow: scale and transform_scale must be > 0"),
        ({"type": "iddpm", "num_sampling_steps": 0}, "iddpm: num_sampling_steps must be at least 1"),
        ({"type": "iddpm", "cfg_scale": -1.0}, "iddpm: cfg_scale must be a finite number >= 0"),
        ({"type": "iddpm", "timestep_respacing": "ddimx"}, "timestep_respacing 'ddimx': expected 'ddimN'"),
        ({"type": "dpm-solver", "cfg_scale": -2.0}, "dpm-solver: cfg_scale must be a finite number >= 0"),
        ({"type": "dpm-solver", "order": 3}, "dpm-solver: order must be 1 or 2"),
    ],
)
def test_scheduler_checks_raise_the_project_error(cfg: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_module(cfg, SCHEDULERS)
    assert message in str(info.value)


def test_a_config_value_where_a_module_dict_belongs_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="a scheduler config must be a dict with a 'type' key, got 'rflow'"):
        build_module("rflow", SCHEDULERS)
    with pytest.raises(ConfigError, match="type must be a name"):
        build_module({"type": ["rflow"]}, SCHEDULERS)


def test_respacing_counts_that_are_not_numbers_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="'10,x'"):
        space_timesteps(1000, "10,x")
    with pytest.raises(ConfigError, match="'ddim5,5'"):
        space_timesteps(1000, "ddim5,5")
    assert len(space_timesteps(1000, "ddim10")) == 10  # the stride's own error still names the count
    with pytest.raises(ConfigError, match="no integer stride gives 999"):
        space_timesteps(1000, "ddim999")


def test_a_model_output_that_does_not_fit_the_variance_setting_is_a_config_error() -> None:
    scheduler = IDDPM(num_sampling_steps=5)  # learn_sigma: the model must predict 2 x C channels
    x = torch.zeros(1, 4, 1, 2, 2)
    with pytest.raises(ConfigError, match="set the model's pred_sigma to match"):
        scheduler.p_mean_variance(torch.zeros(1, 4, 1, 2, 2), x, torch.zeros(1, dtype=torch.long))


def test_config_error_is_also_a_value_error() -> None:
    assert issubclass(ConfigError, OpenSoraError) and issubclass(ConfigError, ValueError)


# one bad input per script, run as the user runs it: a process, its stderr and its exit code
SCRIPT_CASES = [
    ("inference.py", "configs/opensora-v1-2/inference/tiny.py", ["--prompt", "x", "--num-sampling-steps", "-3"],
     "error: rflow: num_sampling_steps must be at least 1, got -3"),
    ("inference.py", "configs/opensora-v1-2/inference/tiny.py", ["--prompt", "x", "--cfg-options", "bogus=1"],
     "error: unknown config key 'bogus'"),
    ("train.py", "configs/opensora-v1-2/train/tiny.py", ["--cfg-options", "bogus=1"],
     "error: unknown config key 'bogus'"),
    ("train_vae.py", "configs/vae/train/tiny.py", ["--cfg-options", "bogus=1"], "error: unknown config key 'bogus'"),
    ("inference_vae.py", "configs/vae/inference/tiny.py", ["--cfg-options", "bogus=1"],
     "error: unknown config key 'bogus'"),
]  # fmt: skip


@pytest.mark.parametrize(("script", "config", "args", "message"), SCRIPT_CASES,
                         ids=[case[0] + "-" + case[3][7:30] for case in SCRIPT_CASES])  # fmt: skip
def test_every_script_reports_a_user_error_in_one_line_with_exit_code_2(
    script: str, config: str, args: list[str], message: str
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / script), str(ROOT / config), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), lines
