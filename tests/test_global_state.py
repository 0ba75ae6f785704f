"""Library calls leave the process as they found it: training's determinism switches are undone
afterwards, and importing the Gradio app changes no environment variable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from opensora.training.base import CUBLAS_WORKSPACE, determinism

ROOT = Path(__file__).resolve().parents[1]


def test_determinism_is_restored_after_the_block(monkeypatch):
    monkeypatch.delenv(CUBLAS_WORKSPACE, raising=False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    before = torch.are_deterministic_algorithms_enabled()
    with determinism(True):
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.benchmark is False and os.environ[CUBLAS_WORKSPACE] == ":4096:8"
    assert torch.are_deterministic_algorithms_enabled() == before
    assert torch.backends.cudnn.benchmark is True and CUBLAS_WORKSPACE not in os.environ
    monkeypatch.setenv(CUBLAS_WORKSPACE, ":16:8")  # a user's own setting is kept, inside and after
    with determinism(True):
        assert os.environ[CUBLAS_WORKSPACE] == ":16:8"
    assert os.environ[CUBLAS_WORKSPACE] == ":16:8"


def test_importing_the_gradio_app_leaves_the_environment_alone():
    probe = (
        "import json, os, sys; before = dict(os.environ); sys.path.insert(0, '.');"
        "from tests.scripts import load_script; load_script(__import__('pathlib').Path('gradio/app.py'), 'app');"
        "print(json.dumps(sorted(set(os.environ.items()) ^ set(before.items()))))"
    )
    env = {k: v for k, v in os.environ.items() if k != "GRADIO_ANALYTICS_ENABLED"}
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
