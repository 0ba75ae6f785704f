"""Replay the calls recorded in a golden fixture of the reference implementation.

A fixture is a safetensors file with ``model.*`` weights, ``input.*``/``output.*`` tensors and
JSON metadata ``config`` (constructor arguments) and ``call`` (what produced each output).
Each recorded call becomes one test; a call whose model or method is not implemented here is
skipped with the reason, so new fixtures of the same schema are picked up without code changes.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

REPO_ROOT = Path(__file__).resolve().parents[2]
# longest names first so "STDiT3" is not read as "STDiT"
# (the 2.0 MMDiT fixtures name the class "MMDiTModel"; the sampling fixture calls it "MMDiT")
MODEL_FAMILIES = (
    "VideoAutoencoderPipeline", "AutoencoderKLCausal3D", "MMDiTModel", "MMDiT", "STDiT3", "STDiT2", "STDiT", "DCAE",
)  # fmt: skip
IMPLEMENTED_MODELS = {"STDiT3", "STDiT2", "STDiT", "VideoAutoencoderPipeline", "MMDiTModel", "MMDiT",
                      "AutoencoderKLCausal3D", "DCAE"}  # fmt: skip


# Golden files of releases whose models are still to come: reported as expected failures (not run)
# that name their issue, so that the conformance suite itself never skips.
PENDING_FIXTURES: dict[str, str] = {}
# CI sets this: the reference files are there, so a conformance test that cannot find them fails.
REQUIRE_ENV = "OPENSORA_REQUIRE_REFERENCE"


def reference_dir() -> Path:
    return Path(os.environ.get("OPENSORA_REFERENCE_DIR", REPO_ROOT.parent / "shared" / "reference"))


def reference_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


def missing_reference(reason: str) -> None:
    """Skip the calling test (a user without the reference files), or fail it where they are required."""
    import pytest

    if reference_required():
        pytest.fail(f"{reason}; {REQUIRE_ENV} is set, so conformance tests may not skip")
    pytest.skip(reason)


def pending_reason(path: Path) -> str | None:
    """Why the golden file at ``path`` is not replayed yet (None: it must be)."""
    for prefix, reason in PENDING_FIXTURES.items():
        if path.stem.startswith(prefix):
            return f"{path.name}: {reason} is not implemented yet"
    return None


def read_layout(name: str) -> list[tuple[str, list[int]]]:
    """(name, shape) rows of a ``layout_*.tsv`` file; see :func:`missing_reference` when it is absent."""
    path = reference_dir() / name
    if not path.is_file():
        missing_reference(f"layout file {path} is missing (set OPENSORA_REFERENCE_DIR)")
    rows = []
    for line in path.read_text().splitlines():
        key, shape, _dtype = line.split("\t")
        rows.append((key, [int(size) for size in shape.strip("[]").split(",") if size]))
    return rows


def fixture_paths() -> list[Path]:
    root = reference_dir()
    return sorted(root.glob("*.safetensors")) if root.is_dir() else []


@dataclass
class Fixture:
    path: Path
    config: dict
    meta: dict  # the parsed ``call`` metadata
    tensors: dict[str, torch.Tensor]

    @classmethod
    def read_meta(cls, path: Path) -> tuple[dict, dict]:
        with safe_open(str(path), "pt") as f:
            raw = f.metadata() or {}
        return json.loads(raw.get("config", "{}")), json.loads(raw.get("call", "{}"))

    @classmethod
    def load(cls, path: Path) -> Fixture:
        config, meta = cls.read_meta(path)
        with safe_open(str(path), "pt") as f:
            tensors = {key: f.get_tensor(key) for key in f.keys()}
        return cls(path, config, meta, tensors)

    @property
    def calls(self) -> list[dict]:
        return self.meta.get("calls", [])

    def model_state(self) -> dict[str, torch.Tensor]:
        return {k.removeprefix("model."): v for k, v in self.tensors.items() if k.startswith("model.")}

    def resolve(self, value):
        """Turn "input.x"/"output.y" references (possibly nested in dicts) into tensors."""
        if isinstance(value, dict):
            return {k: self.resolve(v) for k, v in value.items()}
        if isinstance(value, str) and value in self.tensors:
            return self.tensors[value]
        return value


def model_family(meta: dict) -> str | None:
    text = " ".join(str(meta.get(key, "")) for key in ("module", "model"))
    for family in MODEL_FAMILIES:
        if re.search(rf"\b{family}\b", text):
            return family
    return None


def method_name(call: dict) -> str:
    """ "RFlowScheduler(num_timesteps=1000).training_losses" -> "RFlowScheduler.training_losses"."""
    return re.sub(r"\(.*?\)", "", call.get("method", ""))


def output_names(call: dict) -> list[str]:
    return [name.strip() for name in call.get("output", "").split("/") if name.strip()]


def assert_matches(actual: torch.Tensor, expected: torch.Tensor, name: str, rtol: float = 1e-5) -> None:
    """Equal up to ``rtol`` relative to the reference's largest magnitude (float32 round-off)."""
    assert actual.shape == expected.shape, f"{name}: shape {list(actual.shape)} != {list(expected.shape)}"
    if expected.dtype == torch.bool or not expected.is_floating_point():
        assert torch.equal(actual.to(expected.dtype), expected), f"{name}: values differ"
        return
    scale = expected.abs().max().item() or 1.0
    torch.testing.assert_close(actual.float(), expected, rtol=rtol, atol=rtol * scale, msg=lambda m: f"{name}: {m}")
