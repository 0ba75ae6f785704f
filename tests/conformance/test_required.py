"""Without the reference files conformance tests skip (a user's checkout); where they are required
(CI sets OPENSORA_REQUIRE_REFERENCE) the same run fails instead."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conformance.golden import REPO_ROOT, REQUIRE_ENV

TARGETS = ["tests/conformance/test_golden.py", "tests/test_vae.py", "-k", "golden or layout"]


def run_suite(reference_dir: str, required: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "OPENSORA_REFERENCE_DIR": reference_dir, REQUIRE_ENV: "1" if required else ""}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *TARGETS],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True)  # fmt: skip


def test_missing_reference_skips_for_users_and_fails_where_required(tmp_path):
    user = run_suite(str(tmp_path), required=False)
    assert user.returncode == 0, user.stdout[-2000:]
    assert "2 skipped" in user.stdout and "is missing" in user.stdout
    ci = run_suite(str(tmp_path), required=True)
    assert ci.returncode == 1
    assert "2 failed" in ci.stdout and "conformance tests may not skip" in ci.stdout


def test_any_other_skip_of_a_conformance_test_fails_the_session_where_required(monkeypatch):
    from types import SimpleNamespace

    import pytest

    from tests.conftest import ConformanceSkips

    guard = ConformanceSkips()
    guard.pytest_runtest_logreport(SimpleNamespace(skipped=True, keywords={"conformance": 1}, nodeid="a"))
    guard.pytest_runtest_logreport(SimpleNamespace(skipped=True, keywords={}, nodeid="other"))  # not conformance
    guard.pytest_runtest_logreport(SimpleNamespace(skipped=False, keywords={"conformance": 1}, nodeid="ran"))
    assert guard.skipped == ["a"]
    session = SimpleNamespace(exitstatus=pytest.ExitCode.OK)
    monkeypatch.setenv(REQUIRE_ENV, "")
    guard.pytest_sessionfinish(session)
    assert session.exitstatus == pytest.ExitCode.OK
    monkeypatch.setenv(REQUIRE_ENV, "1")
    guard.pytest_sessionfinish(session)
    assert session.exitstatus == pytest.ExitCode.TESTS_FAILED
