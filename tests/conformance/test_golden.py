"""Conformance: every recorded call of every golden fixture equals this implementation's output."""

from __future__ import annotations

import pytest

from tests.conformance.golden import (
    IMPLEMENTED_MODELS,
    Fixture,
    fixture_paths,
    missing_reference,
    model_family,
    pending_reason,
    reference_dir,
)
from tests.conformance.replay import replay


def _cases() -> list:
    paths = fixture_paths()
    if not paths:
        return [pytest.param(None, None, id="no-reference")]
    cases = []
    for path in paths:
        _, meta = Fixture.read_meta(path)
        pending = pending_reason(path)
        marks = [pytest.mark.xfail(reason=pending, run=False, strict=True)] if pending else []
        for index, call in enumerate(meta.get("calls", [])):
            cases.append(pytest.param(path, index, marks=marks, id=f"{path.stem}-{index}-{call.get('method', '?')}"))
    return cases


@pytest.fixture(scope="module")
def fixtures() -> dict:
    return {}


@pytest.mark.parametrize(("path", "index"), _cases())
def test_golden_call(path, index, fixtures) -> None:
    if path is None:
        missing_reference(f"reference directory {reference_dir()} is missing or holds no fixtures "
                          "(set OPENSORA_REFERENCE_DIR)")  # fmt: skip
    if path not in fixtures:
        fixtures[path] = Fixture.load(path)
    fixture = fixtures[path]
    family = model_family(fixture.meta)
    assert family in IMPLEMENTED_MODELS, f"{path.name}: golden file of model {family!r}, neither replayed nor pending"
    replay(family, fixture, fixture.calls[index])
