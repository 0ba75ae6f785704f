"""Presets are data: named architecture sizes registered as factories of one model class."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping

from opensora.registry import Registry


def preset_factory(cls: type, preset: Mapping | None = None) -> Callable:
    """A factory building ``cls`` from ``preset`` plus overrides, loading ``from_pretrained`` if given.

    The factory's signature is the class's own (plus ``from_pretrained``), so the registry can
    reject an unknown config key by name before anything is built. Keys of released configs that
    the class ignores (``IGNORED_CONFIG_KEYS``) are accepted by name and dropped, as on load.
    """
    preset = dict(preset or {})
    params = [inspect.Parameter("from_pretrained", inspect.Parameter.KEYWORD_ONLY, default=None)]
    for param in list(inspect.signature(cls).parameters.values()):
        if param.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            params.append(param.replace(kind=inspect.Parameter.KEYWORD_ONLY))
    taken = {param.name for param in params}
    ignored = [key for key in getattr(cls, "IGNORED_CONFIG_KEYS", ()) if key not in taken]
    params += [inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=None) for key in ignored]

    def factory(from_pretrained: str | None = None, **kwargs):
        kwargs = {key: value for key, value in kwargs.items() if key not in ignored}
        if from_pretrained:
            # a checkpoint's own config.json outranks the preset; explicit arguments outrank both
            return cls.from_pretrained(from_pretrained, defaults=preset, **kwargs)
        return cls(**{**preset, **kwargs})

    factory.__signature__ = inspect.Signature(params)
    factory.__name__ = cls.__name__
    return factory


def register_presets(registry: Registry, cls: type, presets: Mapping[str, Mapping]) -> None:
    """Register ``cls`` under its own name and one factory per named preset."""
    registry.register(cls.__name__, preset_factory(cls))
    for name, preset in presets.items():
        registry.register(name, preset_factory(cls, preset))
