"""Name -> class lookup tables, and building objects from ``dict(type=..., **kwargs)`` configs.

Models, schedulers and datasets register themselves in their own modules with
``@MODELS.register("STDiT3")``. This module imports none of them, so that any of them may import
it; :func:`build_module` imports the built-in packages on first use so their decorators have run.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from opensora.errors import ConfigError

T = TypeVar("T")

BUILTIN_PACKAGES = ("opensora.models", "opensora.schedulers", "opensora.datasets")


class Registry:
    """Maps names to classes (or factory functions) of one kind, e.g. models.

    ``name`` is the kind, used in error messages: ``unknown model type 'Foo'``.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str | Callable[..., Any] | None = None, obj: T | None = None) -> Any:
        """Register ``obj`` under ``name``; without ``obj``, return a decorator that does it.

        ``@REG.register()`` and bare ``@REG.register`` both use the object's ``__name__``.
        Returns the object itself so decorated classes stay usable.
        """
        if callable(name) and obj is None:
            return self._add(name.__name__, name)
        if obj is not None:
            return self._add(name or obj.__name__, obj)
        return lambda target: self._add(name or target.__name__, target)

    def _add(self, name: str, obj: T) -> T:
        if not isinstance(name, str) or not name:
            raise TypeError(f"{self.name} registry: name must be a non-empty string, got {name!r}")
        if name in self._entries:
            raise ValueError(f"{self.name} '{name}' is already registered to {self._entries[name]!r}")
        self._entries[name] = obj
        return obj

    def get(self, name: str) -> Callable[..., Any]:
        """The object registered as ``name``; ConfigError listing the known names otherwise."""
        if name not in self._entries:
            known = ", ".join(self.names()) or "(none)"
            raise ConfigError(f"unknown {self.name} type '{name}'; known: {known}")
        return self._entries[name]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.name!r}, {len(self)} entries)"


MODELS = Registry("model")
SCHEDULERS = Registry("scheduler")
DATASETS = Registry("dataset")


@functools.cache
def import_builtin_modules() -> None:
    """Import the packages whose modules register the built-in models, schedulers and datasets.

    Cached so the import (and its cost) happens once, without a module-level flag.
    """
    for package in BUILTIN_PACKAGES:
        importlib.import_module(package)


def build_module(cfg: Any, registry: Registry, **runtime_kwargs: Any) -> Any:
    """Build ``registry[cfg["type"]](**cfg_without_type, **runtime_kwargs)``.

    ``cfg`` may be None (returns None), an already built object (returned unchanged) or a mapping
    with a ``type`` key. Runtime kwargs override same-named config values. Nested dicts are passed
    through as they are. An argument the target does not accept, or a missing required one, raises
    a one-line ConfigError.
    """
    if cfg is None:
        return None
    if not isinstance(cfg, Mapping):
        return cfg
    kwargs = dict(cfg)
    type_name = kwargs.pop("type", None)
    if type_name is None:
        raise ConfigError(f"{registry.name} config has no 'type' key (known types: {', '.join(registry.names())})")
    import_builtin_modules()
    target = registry.get(type_name)
    kwargs.update(runtime_kwargs)
    _check_arguments(target, kwargs, f"{registry.name} '{type_name}'")
    return target(**kwargs)


def _check_arguments(target: Callable[..., Any], kwargs: Mapping[str, Any], what: str) -> None:
    """Raise ConfigError if ``target(**kwargs)`` would fail for an unknown or missing argument."""
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return  # some builtins have no introspectable signature; let the call itself decide
    params = signature.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        accepted = None
    else:
        keyword_kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        accepted = [p.name for p in params if p.kind in keyword_kinds]
    if accepted is not None:
        unknown = [key for key in kwargs if key not in accepted]
        if unknown:
            names = ", ".join(f"'{key}'" for key in unknown)
            noun = "argument" if len(unknown) == 1 else "arguments"
            raise ConfigError(f"{what}: unknown {noun} {names} (accepted: {', '.join(accepted)})")
    required = [
        p.name
        for p in params
        if p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    missing = [name for name in required if name not in kwargs]
    if missing:
        noun = "argument" if len(missing) == 1 else "arguments"
        raise ConfigError(f"{what}: missing required {noun} {', '.join(repr(m) for m in missing)}")
