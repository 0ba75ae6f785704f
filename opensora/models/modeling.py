"""Every model's ``save_pretrained``/``from_pretrained`` (:class:`ModelMixin`) and :func:`load_weights`.

Reading and writing files lives in ``checkpoint_io.py``, finding them in ``hub.py``. A model's
constructor keyword arguments are its persisted config (``config.json``); its tensors live beside
it in ``model.safetensors`` (or in shards named by ``model.safetensors.index.json``). Loading builds
the model on the meta device, checks every name and shape against the file headers, then assigns
the checkpoint tensors into it one file and one tensor at a time, so a large model never exists
twice in memory.

Hooks a model author may implement (all are called under ``torch.no_grad()``):

* ``reset_non_persistent_buffers(self) -> None``, on every module that registers a buffer with
  ``persistent=False``. Such buffers are not in checkpoints, so after loading they are still on
  the meta device; the hook recomputes them by assigning the buffer attribute again (computed on
  the CPU), and the loader then moves them to the target device and dtype. Without the hook
  loading fails with a ``RuntimeError`` naming the module.
* ``init_missing(self, names: list[str]) -> None``, on the top-level model: initialises the
  tensors a non-strict load did not find (already allocated on the target device, values
  undefined). Without it each owning submodule's ``reset_parameters()`` is called and the
  tensors it did load are restored afterwards.

Constructors must run on the meta device: no ``.item()``/``.tolist()`` on tensors they create.
"""

from __future__ import annotations

import inspect
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from itertools import chain
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from opensora import __version__
from opensora.errors import CheckpointError, ConfigError
from opensora.models.checkpoint_io import (
    CONFIG_NAME,
    PT_WEIGHTS_NAME,
    SAFE_WEIGHTS_NAME,
    WEIGHT_NAMES,
    CheckpointContents,
    format_names,
    is_shard_file_name,
    load_state_dict_file,
    parse_dtype,
    read_config,
    save_state_dict_atomic,
    save_state_dict_sharded,
    write_config,
)
from opensora.models.hub import resolve_checkpoint

__all__ = [
    "CONFIG_NAME",
    "PT_WEIGHTS_NAME",
    "SAFE_WEIGHTS_NAME",
    "LoadReport",
    "ModelMixin",
    "load_state_dict_file",
    "load_weights",
    "save_state_dict_atomic",
]

logger = logging.getLogger(__name__)

# transformers.PretrainedConfig boilerplate found in the released config.json files.
_HF_CONFIG_KEYS = frozenset({"architectures", "model_type", "torch_dtype", "transformers_version", "auto_map"})

ModelT = TypeVar("ModelT", bound="ModelMixin")


# --------------------------------------------------------------------------- loading into a model


@dataclass
class LoadReport:
    """What a load found: model tensors the checkpoint lacked and checkpoint tensors the model lacked."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


def load_weights(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    strict: bool = True,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    source: str = "state dict",
) -> LoadReport:
    """Load ``state_dict`` into ``model`` after checking names and shapes.

    A model with tensors on the meta device is materialised: checkpoint tensors are assigned (cast
    to ``dtype`` or the model's own dtype, moved to ``device``, default CPU) and the hooks in the
    module docstring fill in the rest. A materialised model is copied into, then moved with
    ``model.to(device, dtype)`` if either is given. Shape mismatches always raise; missing and
    unexpected tensors raise if ``strict`` and are logged otherwise.
    """
    return _load_into(model, dict(state_dict), strict=strict, device=device, dtype=parse_dtype(dtype), source=source)


TensorStream = Callable[[], Iterator[tuple[str, torch.Tensor]]]
"""A part of a checkpoint (one file of a sharded one): a call yields its (name, tensor) pairs."""


def _load_into(
    model: nn.Module,
    state_dict: dict[str, torch.Tensor],
    *,
    strict: bool,
    device: str | torch.device | None,
    dtype: torch.dtype | None,
    source: str,
) -> LoadReport:
    """Consumes ``state_dict`` (tensors are popped as they are converted to keep one copy alive)."""

    def pop_all() -> Iterator[tuple[str, torch.Tensor]]:
        for key in list(state_dict):
            yield key, state_dict.pop(key)

    shapes = {key: tensor.shape for key, tensor in state_dict.items()}
    return _load_parts(model, shapes, [pop_all], strict=strict, device=device, dtype=dtype, source=source)


def _load_parts(
    model: nn.Module,
    shapes: Mapping[str, torch.Size],
    parts: Iterable[TensorStream],
    *,
    strict: bool,
    device: str | torch.device | None,
    dtype: torch.dtype | None,
    source: str,
    located: Mapping[str, Path] | None = None,
) -> LoadReport:
    """Check the checkpoint's names and ``shapes`` against the model, then load it part by part.

    Nothing read from a part is referenced once the next part begins, except the tensors that
    became the model's: loading a sharded checkpoint holds the model plus at most one shard.
    ``located`` (name -> file) lets messages name the file of a tensor.
    """
    expected = model.state_dict(keep_vars=True)
    tied = _tied_groups(model)
    aliases = _absent_aliases(tied, shapes)
    shapes = {**shapes, **{alias: shapes[name] for name, names in aliases.items() for alias in names}}
    report = _check_keys(model, expected, shapes, strict=strict, source=source, located=located)
    on_meta = any(t.is_meta for t in chain(model.parameters(), model.buffers()))
    target = torch.device(device or "cpu")
    for part in parts:
        loaded = {}
        for name, tensor in part():
            if name not in expected:
                continue
            if on_meta:  # converted one at a time: the source tensor is dropped right away
                tensor = tensor.to(device=target, dtype=_target_dtype(expected[name], dtype))
            for key in (name, *aliases.get(name, ())):
                loaded[key] = tensor
        with torch.no_grad():
            # assign=True makes the checkpoint tensors the parameters: no second, randomly initialised copy
            model.load_state_dict(loaded, strict=False, assign=on_meta)
        del loaded
    if on_meta:
        _materialise_non_persistent_buffers(model, target, dtype, skip=set(report.missing))
        if report.missing:
            _init_missing(model, report.missing, target, dtype)
        _retie(model, tied)
        _check_no_meta(model)
    elif device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    _log_report(model, report, source)
    return report


def _check_keys(
    model: nn.Module,
    expected: Mapping[str, torch.Tensor],
    shapes: Mapping[str, torch.Size],
    *,
    strict: bool,
    source: str,
    located: Mapping[str, Path] | None = None,
) -> LoadReport:
    # In model order, so the first reported mismatch is the earliest layer, not the first key alphabetically.
    mismatched = [key for key in expected if key in shapes and shapes[key] != expected[key].shape]
    if mismatched:
        key = mismatched[0]
        more = f" (and {len(mismatched) - 1} more mismatched tensors)" if len(mismatched) > 1 else ""
        where = f"'{located[key].name}' of {source}" if located and key in located else source
        raise CheckpointError(
            f"checkpoint tensor '{key}' has shape {list(shapes[key])} but the model expects "
            f"{list(expected[key].shape)}{more} ({where})"
        )
    report = LoadReport(
        missing=[key for key in expected if key not in shapes],
        unexpected=[key for key in shapes if key not in expected],
    )
    name = type(model).__name__
    if strict and report.missing:
        raise CheckpointError(
            f"checkpoint {source} lacks {len(report.missing)} tensors that {name} expects: "
            f"{format_names(report.missing)} (strict=False initialises them from scratch)"
        )
    if strict and report.unexpected:
        raise CheckpointError(
            f"checkpoint {source} has {len(report.unexpected)} tensors that {name} does not expect: "
            f"{format_names(report.unexpected)}"
        )
    return report


def _log_report(model: nn.Module, report: LoadReport, source: str) -> None:
    name = type(model).__name__
    if report.missing:
        logger.warning(
            "checkpoint %s lacks %d tensors of %s, initialised from scratch: %s",
            source,
            len(report.missing),
            name,
            format_names(report.missing),
        )
    if report.unexpected:
        logger.warning(
            "checkpoint %s has %d tensors %s does not use, ignored: %s",
            source,
            len(report.unexpected),
            name,
            format_names(report.unexpected),
        )


def _target_dtype(like: torch.Tensor, dtype: torch.dtype | None) -> torch.dtype:
    # Same rule as Module.to(dtype): only floating-point tensors change precision.
    return dtype if dtype is not None and like.is_floating_point() else like.dtype


def _materialise_non_persistent_buffers(
    model: nn.Module, device: torch.device, dtype: torch.dtype | None, skip: set[str]
) -> None:
    for prefix, module in model.named_modules():
        stale = [
            name
            for name, buffer in module.named_buffers(recurse=False)
            if buffer.is_meta and _join(prefix, name) not in skip
        ]
        if not stale:
            continue
        hook = getattr(module, "reset_non_persistent_buffers", None)
        if hook is None:
            raise RuntimeError(
                f"{type(module).__name__} at '{prefix or '<root>'}' has buffers {stale} that are not in checkpoints; "
                "implement reset_non_persistent_buffers() to recompute them after loading"
            )
        with torch.no_grad():
            hook()
        for name in stale:
            buffer = getattr(module, name)
            setattr(module, name, buffer.to(device=device, dtype=_target_dtype(buffer, dtype)))


def _init_missing(model: nn.Module, missing: list[str], device: torch.device, dtype: torch.dtype | None) -> None:
    first_missing: dict[str, str] = {}  # owning module's prefix -> its first missing tensor
    for name in missing:
        prefix, _, attr = name.rpartition(".")
        module = model.get_submodule(prefix)
        old = getattr(module, attr)
        fresh = torch.empty_like(old, device=device, dtype=_target_dtype(old, dtype))
        if isinstance(old, nn.Parameter):
            fresh = nn.Parameter(fresh, requires_grad=old.requires_grad)
        setattr(module, attr, fresh)
        first_missing.setdefault(prefix, name)
    with torch.no_grad():
        init_missing = getattr(model, "init_missing", None)
        if init_missing is not None:
            init_missing(list(missing))
            return
        for prefix, name in first_missing.items():
            _reset_keeping_loaded(model, prefix, name, set(missing))


def _reset_keeping_loaded(model: nn.Module, prefix: str, first_missing: str, missing: set[str]) -> None:
    module = model.get_submodule(prefix)
    reset = getattr(module, "reset_parameters", None)
    if reset is None:
        raise CheckpointError(
            f"cannot initialise missing tensor '{first_missing}': {type(module).__name__} has no reset_parameters() "
            f"and {type(model).__name__} has no init_missing(names)"
        )
    # reset_parameters() may touch the whole subtree, so everything loaded below it is restored
    # (a copy of this subtree only; it is rarely more than one layer).
    loaded = {
        name: tensor.detach().clone()
        for name, tensor in chain(module.named_parameters(), module.named_buffers())
        if _join(prefix, name) not in missing
    }
    reset()
    current = dict(chain(module.named_parameters(), module.named_buffers()))
    for name, tensor in loaded.items():
        current[name].copy_(tensor)


def _check_no_meta(model: nn.Module) -> None:
    left = [name for name, t in chain(model.named_parameters(), model.named_buffers()) if t.is_meta]
    if left:
        name = type(model).__name__
        raise RuntimeError(f"{name} still has tensors on the meta device after loading: {format_names(left)}")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _tied_groups(model: nn.Module) -> list[list[str]]:
    by_identity: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        by_identity.setdefault(id(param), []).append(name)
    return [names for names in by_identity.values() if len(names) > 1]


def _absent_aliases(groups: list[list[str]], shapes: Mapping[str, torch.Size]) -> dict[str, list[str]]:
    """Stored name -> the names of its tied group the checkpoint lacks (safetensors keeps one name)."""
    aliases = {}
    for names in groups:
        present = next((name for name in names if name in shapes), None)
        if present is not None:
            absent = [name for name in names if name not in shapes]
            if absent:
                aliases[present] = absent
    return aliases


def _retie(model: nn.Module, groups: list[list[str]]) -> None:
    # Assigning replaces each alias with its own Parameter; point them back at one object.
    for first, *aliases in groups:
        shared = model.get_parameter(first)
        for name in aliases:
            prefix, _, attr = name.rpartition(".")
            setattr(model.get_submodule(prefix), attr, shared)


# --------------------------------------------------------------------------- the mixin


def _jsonable(value: Any, key: str) -> Any:
    """Plain JSON types only: tuples become lists so the in-memory config equals the saved one."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(item, key) for item in value]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {k: _jsonable(v, key) for k, v in value.items()}
    raise ConfigError(f"config value {key}={value!r} is not JSON-serialisable (use numbers, strings, lists, dicts)")


class ModelMixin(nn.Module):
    """Base class of every model: the constructor arguments are the config saved beside the weights.

    Subclasses call ``self.register_config(...)`` with their architecture arguments right after
    ``super().__init__()``. Saved lists come back as lists, so constructors should accept a list
    wherever they take a tuple.
    """

    RUNTIME_KEYS: ClassVar[tuple[str, ...]] = ()
    """Constructor arguments that are runtime switches: passed through on load, never saved."""
    IGNORED_CONFIG_KEYS: ClassVar[tuple[str, ...]] = ()
    """Keys of released config.json files the constructor does not take: dropped on load."""

    config: dict[str, Any]

    def register_config(self, **kwargs: Any) -> None:
        """Record the architecture arguments; runtime switches (``RUNTIME_KEYS``) are left out."""
        self.config = {key: _jsonable(value, key) for key, value in kwargs.items() if key not in self.RUNTIME_KEYS}

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        *,
        safe_serialization: bool = True,
        max_shard_size: int | str | None = None,
    ) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (``pytorch_model.bin`` if not safe).

        With ``max_shard_size`` (bytes, or e.g. ``"5GB"``) weights larger than that are written as
        shards ``model-00001-of-0000N.safetensors`` plus ``model.safetensors.index.json``. A new
        directory appears complete or not at all; into an existing one each file is replaced
        atomically (an index after its shards), and weights left over in another format or
        sharding are removed.
        """
        if "config" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}.__init__ must call self.register_config(...)")
        target = Path(save_directory)
        if target.exists() and not target.is_dir():
            raise CheckpointError(f"cannot save to '{target}': it is a file")
        weights_name = SAFE_WEIGHTS_NAME if safe_serialization else PT_WEIGHTS_NAME
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
        staging.mkdir()
        try:
            config = {"_class_name": type(self).__name__, "_opensora_version": __version__, **self.config}
            write_config(config, staging / CONFIG_NAME)
            written = save_state_dict_sharded(self.state_dict(), staging, weights_name, max_shard_size)
            if not target.exists():
                os.replace(staging, target)
                return target
            for name in (CONFIG_NAME, *written):
                os.replace(staging / name, target / name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        for stale in target.iterdir():
            if stale.name not in written and (stale.name in WEIGHT_NAMES or is_shard_file_name(stale.name)):
                stale.unlink(missing_ok=True)
        return target

    @classmethod
    def from_config(cls: type[ModelT], config: Mapping[str, Any], **overrides: Any) -> ModelT:
        """Build a freshly initialised model from a config dict (e.g. a released config.json)."""
        return cls(**cls._constructor_kwargs(config, overrides, label="given config"))

    @classmethod
    def from_pretrained(
        cls: type[ModelT],
        path_or_id: str | os.PathLike,
        *,
        strict: bool = True,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str | None = None,
        subfolder: str | None = None,
        revision: str | None = None,
        defaults: Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> ModelT:
        """Load a model from a directory, a single weights file or a Hugging Face hub id.

        ``overrides`` are constructor arguments that replace config.json values; ``defaults`` (a
        preset's sizes) fill in only what config.json does not say. For a single file, defaults and
        overrides together are the whole architecture. The model is returned in eval mode.

        The model is built on the meta device, every tensor name and shape is checked against the
        file headers, then the files are read one at a time (a sharded checkpoint shard by shard)
        and their tensors converted one by one and assigned: memory holds the model plus at most
        one file's tensors. A safetensors tensor that needs no conversion stays memory-mapped.
        """
        files = resolve_checkpoint(path_or_id, subfolder, revision)
        config = read_config(files.config) if files.config is not None else {}
        config = {**(defaults or {}), **config}
        kwargs = cls._constructor_kwargs(config, overrides, label=f"config.json of {files.source}")
        dtype = parse_dtype(dtype)
        # every name and shape is known from the headers before a tensor is read
        contents = CheckpointContents.scan(files.weights, files.weight_map, files.index)
        with torch.device("meta"):
            model = cls(**kwargs)
        wanted = set(model.state_dict())
        parts = [partial(contents.read, path, wanted) for path in contents.files]
        located = {name: stored.path for name, stored in contents.tensors.items()} if len(parts) > 1 else None
        _load_parts(
            model, contents.shapes(), parts, strict=strict, device=device, dtype=dtype, source=files.source,
            located=located,
        )  # fmt: skip
        return model.eval()

    @classmethod
    def _constructor_kwargs(cls, config: Mapping[str, Any], overrides: Mapping[str, Any], label: str) -> dict[str, Any]:
        saved_class = config.get("_class_name", cls.__name__)
        if saved_class != cls.__name__:
            logger.warning("%s was saved by %s, loading it as %s", label, saved_class, cls.__name__)
        dropped = _HF_CONFIG_KEYS | set(cls.IGNORED_CONFIG_KEYS)
        kwargs = {key: value for key, value in config.items() if not key.startswith("_") and key not in dropped}
        cls._check_accepted(kwargs, label, CheckpointError)
        cls._check_accepted(overrides, "keyword arguments", ConfigError)
        return {**kwargs, **overrides}

    @classmethod
    def _check_accepted(cls, kwargs: Mapping[str, Any], where: str, error: type[Exception]) -> None:
        params = inspect.signature(cls.__init__).parameters
        if any(param.kind is inspect.Parameter.VAR_KEYWORD for param in params.values()):
            return
        unknown = sorted(set(kwargs) - set(params) - {"self"})
        if unknown:
            raise error(f"{cls.__name__} does not accept {format_names(unknown)} (from the {where})")
