"""Errors caused by the user's input.

Every check of something a user supplies (a config key, a flag, a prompt, a file, a size) raises an
:class:`OpenSoraError`. The entry points (``scripts/*.py``, the tools, the Gradio app) call their
``main`` through :func:`opensora.config.run_cli`, which prints such an error as one line,
``error: <message>``, and exits with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class OpenSoraError(Exception):
    """Bad input: a config, a checkpoint, a file or an argument the user supplied."""


class ConfigError(OpenSoraError, ValueError):
    """An unknown config key, a value of the wrong type or out of range, or a malformed override.

    Also a ValueError, so code (and tests) that expect one from a constructor still catch it.
    """


class CheckpointError(OpenSoraError):
    """A checkpoint that cannot be read or does not fit the model."""
