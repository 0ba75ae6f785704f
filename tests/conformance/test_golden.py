"""Conformance: every recorded call of every golden fixture equals this implementation's output."""

from __future__ import annotations

import pytest

from tests.conformance.golden import IMPLEMENTED_MODELS, Fixture, fixture_paths, model_family, reference_dir
from tests.conformance.replay import replay


def _cases() -> list:
    paths = fixture_paths()
    if not paths:
        reason = f"reference directory {reference_dir()} is missing or holds no fixtures (set OPENSORA_REFERENCE_DIR)"
        return [pytest.param(None, None, marks=pytest.mark.skip(reason=reason), id="no-reference")]
    cases = []
    for path in paths:
        _, meta = Fixture.read_meta(path)
        for index, call in enumerate(meta.get("calls", [])):
            cases.append(pytest.param(path, index, id=f"{path.stem}-{index}-{call.get('method', '?')}"))
    return cases


@pytest.fixture(scope="module")
def fixtures() -> dict:
    return {}


@pytest.mark.parametrize(("path", "index"), _cases())
def test_golden_call(path, index, fixtures) -> None:
    if path not in fixtures:
        fixtures[path] = Fixture.load(path)
    fixture = fixtures[path]
    family = model_family(fixture.meta)
    if family not in IMPLEMENTED_MODELS:
        pytest.skip(f"{path.name}: model '{family}' is not implemented yet")
    replay(family, fixture, fixture.calls[index])
