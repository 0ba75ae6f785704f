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
_PLAIN_VALUES = (str, bytes, int, float, list, tuple)  # config values that cannot stand for a built object


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
        if isinstance(cfg, _PLAIN_VALUES):  # e.g. scheduler = "rflow": a config value, not a built object
            raise ConfigError(f"a {registry.name} config must be a dict with a 'type' key, got {cfg!r}")
        return cfg
    target, kwargs = _resolve(cfg, registry)
    kwargs.update(runtime_kwargs)
    _check_arguments(target, kwargs, f"{registry.name} '{cfg['type']}'")
    return target(**kwargs)


def check_module_config(cfg: Any, registry: Registry, **runtime_kwargs: Any) -> None:
    """Raise the ConfigError :func:`build_module` would raise before building, and build nothing.

    Checks the type name and the argument names (not their values) of ``cfg`` and, recursively,
    of every nested dict with a ``type`` registered in the same registry (a VAE's ``vae_2d``).
    """
    if not isinstance(cfg, Mapping):
        build_module(cfg, registry)  # None and built objects pass; a plain value raises its ConfigError
        return
    target, kwargs = _resolve(cfg, registry)
    _check_arguments(target, {**kwargs, **runtime_kwargs}, f"{registry.name} '{cfg['type']}'")
    for value in kwargs.values():
        if isinstance(value, Mapping) and isinstance(value.get("type"), str) and value["type"] in registry:
            check_module_config(value, registry)


def _resolve(cfg: Mapping[str, Any], registry: Registry) -> tuple[Callable[..., Any], dict[str, Any]]:
    """(the registered target of ``cfg["type"]``, the other entries of ``cfg``)."""
    kwargs = dict(cfg)
    type_name = kwargs.pop("type", None)
    if type_name is None:
        raise ConfigError(f"{registry.name} config has no 'type' key (known types: {', '.join(registry.names())})")
    if not isinstance(type_name, str):
        raise ConfigError(f"{registry.name} type must be a name, got {type_name!r}")
    import_builtin_modules()
    return registry.get(type_name), kwargs


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
