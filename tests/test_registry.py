"""Registry lookups and building objects from ``dict(type=...)`` configs."""

from __future__ import annotations

import pytest

from opensora.errors import ConfigError
from opensora.registry import DATASETS, MODELS, SCHEDULERS, Registry, build_module


class Net:
    def __init__(self, depth: int, hidden_size: int = 8, block: dict | None = None) -> None:
        self.depth = depth
        self.hidden_size = hidden_size
        self.block = block


class Flexible:
    def __init__(self, depth: int = 1, **extra: object) -> None:
        self.depth = depth
        self.extra = extra


@pytest.fixture
def registry() -> Registry:
    reg = Registry("model")
    reg.register("Net", Net)
    reg.register("Flexible", Flexible)
    return reg


def test_decorator_with_name_without_name_and_bare() -> None:
    reg = Registry("model")

    @reg.register("Custom")
    class A:
        pass

    @reg.register()
    class B:
        pass

    @reg.register
    def make_c() -> str:
        return "c"

    assert reg.get("Custom") is A
    assert reg.get("B") is B
    assert reg.get("make_c") is make_c  # the decorated function itself is returned unchanged
    assert "Custom" in reg and "A" not in reg
    assert reg.names() == ["B", "Custom", "make_c"]


def test_direct_registration_returns_object(registry: Registry) -> None:
    assert registry.register("Other", Net) is Net
    assert registry.get("Other") is Net


def test_duplicate_name_raises(registry: Registry) -> None:
    with pytest.raises(ValueError, match="'Net' is already registered"):
        registry.register("Net", Flexible)


def test_unknown_name_lists_known(registry: Registry) -> None:
    with pytest.raises(ConfigError) as info:
        registry.get("Foo")
    assert str(info.value) == "unknown model type 'Foo'; known: Flexible, Net"


def test_module_registries_are_named() -> None:
    assert (MODELS.name, SCHEDULERS.name, DATASETS.name) == ("model", "scheduler", "dataset")


def test_build_passes_config_and_runtime_kwargs(registry: Registry) -> None:
    cfg = {"type": "Net", "depth": 2, "hidden_size": 16, "block": {"mlp_ratio": 4}}
    net = build_module(cfg, registry, hidden_size=32)
    assert isinstance(net, Net)
    assert net.depth == 2
    assert net.hidden_size == 32  # runtime kwargs win over the config
    assert net.block == {"mlp_ratio": 4}  # nested dicts pass through as-is
    assert cfg == {"type": "Net", "depth": 2, "hidden_size": 16, "block": {"mlp_ratio": 4}}  # not mutated


def test_build_accepts_mmengine_configdict(registry: Registry) -> None:
    from mmengine.config import ConfigDict

    net = build_module(ConfigDict(type="Net", depth=3), registry)
    assert net.depth == 3


def test_build_passthrough_for_none_and_built_objects(registry: Registry) -> None:
    built = Net(depth=1)
    assert build_module(None, registry) is None
    assert build_module(built, registry) is built


def test_build_unknown_argument_names_it(registry: Registry) -> None:
    with pytest.raises(ConfigError) as info:
        build_module({"type": "Net", "depht": 2}, registry)
    message = str(info.value)
    assert message == "model 'Net': unknown argument 'depht' (accepted: depth, hidden_size, block)"
    assert "\n" not in message


def test_build_missing_required_argument(registry: Registry) -> None:
    with pytest.raises(ConfigError, match=r"^model 'Net': missing required argument 'depth'$"):
        build_module({"type": "Net"}, registry)


def test_build_var_kwargs_accepts_anything(registry: Registry) -> None:
    obj = build_module({"type": "Flexible", "anything": 1}, registry, depth=5)
    assert (obj.depth, obj.extra) == (5, {"anything": 1})


def test_build_unknown_type_and_missing_type(registry: Registry) -> None:
    with pytest.raises(ConfigError, match="unknown model type 'Nope'; known: Flexible, Net"):
        build_module({"type": "Nope"}, registry)
    with pytest.raises(ConfigError, match="no 'type' key"):
        build_module({"depth": 2}, registry)
