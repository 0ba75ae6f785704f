"""Tiny models: every test here runs on one intra-op thread (tests/tiny.py::one_torch_thread)."""

from tests.tiny import one_torch_thread as one_torch_thread  # autouse fixture
