"""Errors caused by the user's input.

Entry points catch :class:`OpenSoraError` and print its message as one line
instead of a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class OpenSoraError(Exception):
    """Bad input: a config, a checkpoint, a file or an argument the user supplied."""


class ConfigError(OpenSoraError):
    """An unknown config key, a value of the wrong type, or a malformed override."""


class CheckpointError(OpenSoraError):
    """A checkpoint that cannot be read or does not fit the model."""
