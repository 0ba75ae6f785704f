"""Session-wide test settings: never reach the Hugging Face Hub, start every test from one seed,
and where the reference files are required (CI), let no conformance test skip."""

import os
from pathlib import Path

import pytest
import torch

from tests.conformance.golden import REQUIRE_ENV, reference_required

# Set before any test imports transformers/diffusers/huggingface_hub, which read it at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CONFORMANCE_DIR = Path(__file__).resolve().parent / "conformance"


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    torch.manual_seed(0)


def is_conformance(item: pytest.Item) -> bool:
    """Tests of the golden fixtures, and tests comparing a layout with a release's (they read one)."""
    if CONFORMANCE_DIR in Path(item.path).resolve().parents:
        return True
    function = getattr(item, "function", None)
    return function is not None and "read_layout" in function.__code__.co_names


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if is_conformance(item):
            item.add_marker("conformance")


class ConformanceSkips:
    """Counts skipped conformance tests and fails the session on any where they are required."""

    def __init__(self) -> None:
        self.skipped: list[str] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped and "conformance" in report.keywords and not hasattr(report, "wasxfail"):
            self.skipped.append(report.nodeid)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if reference_required() and self.skipped:
            names = ", ".join(self.skipped[:5]) + (" ..." if len(self.skipped) > 5 else "")
            print(f"\n{len(self.skipped)} conformance test(s) skipped while {REQUIRE_ENV} is set: {names}")
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(ConformanceSkips(), "conformance-skips")
