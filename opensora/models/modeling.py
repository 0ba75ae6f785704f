"""Weights I/O for every model: ``save_pretrained``/``from_pretrained`` and state-dict helpers.

A model's constructor keyword arguments are its persisted config (``config.json``); its tensors
live beside it in ``model.safetensors``. Loading builds the model on the meta device and assigns
the checkpoint tensors into it, so a large model never exists twice in memory.

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
import json
import logging
import os
import pickle
import re
import shutil
import uuid
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import safetensors.torch
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from torch import nn

from opensora import __version__
from opensora.errors import CheckpointError, ConfigError

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

CONFIG_NAME = "config.json"
SAFE_WEIGHTS_NAME = "model.safetensors"
PT_WEIGHTS_NAME = "pytorch_model.bin"
_INDEX_SUFFIX = ".index.json"
# Looked up in this order in a directory or hub repository; the first one found wins.
_WEIGHT_NAMES = (
    SAFE_WEIGHTS_NAME,
    SAFE_WEIGHTS_NAME + _INDEX_SUFFIX,
    PT_WEIGHTS_NAME,
    PT_WEIGHTS_NAME + _INDEX_SUFFIX,
)
# Training checkpoints nest the weights; EMA first because it is what inference wants.
_NESTING_KEYS = ("ema", "model", "state_dict", "module")
# Wrappers that insert a segment into every key below them (torch.compile, FSDP1, checkpointing).
_WRAPPER_SEGMENTS = ("_orig_mod.", "_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")
_DDP_PREFIX = "module."
# transformers.PretrainedConfig boilerplate found in the released config.json files.
_HF_CONFIG_KEYS = frozenset({"architectures", "model_type", "torch_dtype", "transformers_version", "auto_map"})
_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
_SHOWN_NAMES = 5

ModelT = TypeVar("ModelT", bound="ModelMixin")


# --------------------------------------------------------------------------- messages


def _names(names: Iterable[str]) -> str:
    """At most a few names, then how many were left out, so an error stays one readable line."""
    names = list(names)
    shown = ", ".join(names[:_SHOWN_NAMES])
    return shown + (f", ... ({len(names) - _SHOWN_NAMES} more)" if len(names) > _SHOWN_NAMES else "")


def _reason(exc: BaseException) -> str:
    """The informative line of an exception message (torch and safetensors write paragraphs)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "WeightsUnpickler error:" in line:
            return line.split("WeightsUnpickler error:", 1)[1].strip()
    return lines[0] if lines else type(exc).__name__


def _shape(shape: torch.Size) -> str:
    return "[" + ", ".join(str(size) for size in shape) + "]"


# --------------------------------------------------------------------------- reading files


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` or ``torch.save`` file into a flat name -> tensor dict on the CPU.

    Training checkpoints are unwrapped: weights nested under ``ema``/``model``/``state_dict``/
    ``module`` are found, and ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) key
    prefixes are removed. Both formats are memory-mapped where possible.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"cannot read checkpoint '{path}': no such file")
    if path.suffix == ".safetensors":
        try:
            return _clean_keys(safetensors.torch.load_file(path, device="cpu"))
        except (safetensors.SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"cannot read checkpoint '{path}': {_reason(exc)}") from exc
    return _clean_keys(_unwrap_nesting(_torch_load(path), path))


def _torch_load(path: Path) -> object:
    try:
        # mmap needs the zip format; legacy (pre-1.6) pickles are read into memory.
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        reason = _reason(exc)
        if "Unsupported global" in reason:
            raise CheckpointError(
                f"cannot read checkpoint '{path}': it holds objects other than tensors ({reason}); "
                "load it once in a trusted session and re-save torch.save(model.state_dict())"
            ) from exc
        raise CheckpointError(f"cannot read checkpoint '{path}': not a valid torch checkpoint ({reason})") from exc
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(f"cannot read checkpoint '{path}': {_reason(exc)}") from exc


def _unwrap_nesting(obj: object, path: Path) -> dict[str, torch.Tensor]:
    while isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[key] for key in _NESTING_KEYS if isinstance(obj.get(key), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"cannot read checkpoint '{path}': it holds a {type(obj).__name__}, not a state dict")
    tensors = {key: value for key, value in obj.items() if isinstance(value, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"cannot read checkpoint '{path}': no tensors found (top-level keys: {_names(obj)})")
    return tensors


def _clean_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    cleaned = {}
    for key, value in state_dict.items():
        for segment in _WRAPPER_SEGMENTS:
            key = key.replace(segment, "")
        cleaned[key] = value
    # Strip "module." only when DDP wrapped the whole model: models may own a child named "module".
    if cleaned and all(key.startswith(_DDP_PREFIX) for key in cleaned):
        cleaned = {key[len(_DDP_PREFIX) :]: value for key, value in cleaned.items()}
    return cleaned


def _load_files(files: list[Path]) -> dict[str, torch.Tensor]:
    state_dict: dict[str, torch.Tensor] = {}
    for path in files:
        state_dict.update(load_state_dict_file(path))
    return state_dict


# --------------------------------------------------------------------------- writing files


def save_state_dict_atomic(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike) -> Path:
    """Write ``state_dict`` to ``path`` (safetensors if it ends in ``.safetensors``, else torch.save).

    The file is written beside its destination and renamed over it, so readers never see a
    partial file. Tensors sharing storage are cloned for safetensors, which refuses aliases.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        if path.suffix == ".safetensors":
            safetensors.torch.save_file(_unshared(state_dict), tmp, metadata={"format": "pt"})
        else:
            torch.save({key: value.detach() for key, value in state_dict.items()}, tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _unshared(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    kept_storages: set[int] = set()
    out = {}
    for key, tensor in state_dict.items():
        tensor = tensor.detach().cpu()
        storage = tensor.untyped_storage()
        owns_storage = tensor.is_contiguous() and tensor.storage_offset() == 0 and tensor.nbytes == storage.nbytes()
        if owns_storage and storage.data_ptr() not in kept_storages:
            kept_storages.add(storage.data_ptr())
        else:
            tensor = tensor.contiguous().clone()
        out[key] = tensor
    return out


def _write_json(data: Mapping[str, Any], path: Path) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


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
    return _load_into(model, dict(state_dict), strict=strict, device=device, dtype=_as_dtype(dtype), source=source)


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
    expected = model.state_dict(keep_vars=True)
    tied = _tied_groups(model)
    _fill_tied_aliases(state_dict, tied)
    report = _check_keys(model, expected, state_dict, strict=strict, source=source)
    on_meta = any(t.is_meta for t in chain(model.parameters(), model.buffers()))
    if on_meta:
        _assign(model, expected, state_dict, report.missing, torch.device(device or "cpu"), dtype)
        _retie(model, tied)
        _check_no_meta(model)
    else:
        with torch.no_grad():
            model.load_state_dict({k: v for k, v in state_dict.items() if k in expected}, strict=False)
        if device is not None or dtype is not None:
            model.to(device=device, dtype=dtype)
    _log_report(model, report, source)
    return report


def _check_keys(
    model: nn.Module,
    expected: Mapping[str, torch.Tensor],
    state_dict: Mapping[str, torch.Tensor],
    *,
    strict: bool,
    source: str,
) -> LoadReport:
    # In model order, so the first reported mismatch is the earliest layer, not the first key alphabetically.
    mismatched = [key for key in expected if key in state_dict and state_dict[key].shape != expected[key].shape]
    if mismatched:
        key = mismatched[0]
        more = f" (and {len(mismatched) - 1} more mismatched tensors)" if len(mismatched) > 1 else ""
        raise CheckpointError(
            f"checkpoint tensor '{key}' has shape {_shape(state_dict[key].shape)} but the model expects "
            f"{_shape(expected[key].shape)}{more} ({source})"
        )
    report = LoadReport(
        missing=[key for key in expected if key not in state_dict],
        unexpected=[key for key in state_dict if key not in expected],
    )
    name = type(model).__name__
    if strict and report.missing:
        raise CheckpointError(
            f"checkpoint {source} lacks {len(report.missing)} tensors that {name} expects: "
            f"{_names(report.missing)} (strict=False initialises them from scratch)"
        )
    if strict and report.unexpected:
        raise CheckpointError(
            f"checkpoint {source} has {len(report.unexpected)} tensors that {name} does not expect: "
            f"{_names(report.unexpected)}"
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
            _names(report.missing),
        )
    if report.unexpected:
        logger.warning(
            "checkpoint %s has %d tensors %s does not use, ignored: %s",
            source,
            len(report.unexpected),
            name,
            _names(report.unexpected),
        )


def _target_dtype(like: torch.Tensor, dtype: torch.dtype | None) -> torch.dtype:
    # Same rule as Module.to(dtype): only floating-point tensors change precision.
    return dtype if dtype is not None and like.is_floating_point() else like.dtype


def _assign(
    model: nn.Module,
    expected: Mapping[str, torch.Tensor],
    state_dict: dict[str, torch.Tensor],
    missing: list[str],
    device: torch.device,
    dtype: torch.dtype | None,
) -> None:
    loaded = {}
    for key in [key for key in state_dict if key in expected]:
        loaded[key] = state_dict.pop(key).to(device=device, dtype=_target_dtype(expected[key], dtype))
    # assign=True makes the checkpoint tensors the parameters: no second, randomly initialised copy.
    model.load_state_dict(loaded, strict=False, assign=True)
    del loaded
    _materialise_non_persistent_buffers(model, device, dtype, skip=set(missing))
    if missing:
        _init_missing(model, missing, device, dtype)


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
    owners: dict[str, list[str]] = {}
    for name in missing:
        prefix, _, attr = name.rpartition(".")
        module = model.get_submodule(prefix)
        old = getattr(module, attr)
        fresh = torch.empty_like(old, device=device, dtype=_target_dtype(old, dtype))
        if isinstance(old, nn.Parameter):
            fresh = nn.Parameter(fresh, requires_grad=old.requires_grad)
        setattr(module, attr, fresh)
        owners.setdefault(prefix, []).append(name)
    with torch.no_grad():
        init_missing = getattr(model, "init_missing", None)
        if init_missing is not None:
            init_missing(list(missing))
            return
        for prefix, names in owners.items():
            _reset_keeping_loaded(model, prefix, names[0], set(missing))


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
        raise RuntimeError(f"{type(model).__name__} still has tensors on the meta device after loading: {_names(left)}")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _tied_groups(model: nn.Module) -> list[list[str]]:
    by_identity: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        by_identity.setdefault(id(param), []).append(name)
    return [names for names in by_identity.values() if len(names) > 1]


def _fill_tied_aliases(state_dict: dict[str, torch.Tensor], groups: list[list[str]]) -> None:
    # A checkpoint may hold a tied tensor under one of its names only (safetensors deduplicates).
    for names in groups:
        present = next((name for name in names if name in state_dict), None)
        if present is not None:
            for name in names:
                state_dict.setdefault(name, state_dict[present])


def _retie(model: nn.Module, groups: list[list[str]]) -> None:
    # Assigning replaces each alias with its own Parameter; point them back at one object.
    for first, *aliases in groups:
        shared = model.get_parameter(first)
        for name in aliases:
            prefix, _, attr = name.rpartition(".")
            setattr(model.get_submodule(prefix), attr, shared)


def _as_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise ConfigError(f"unknown dtype {dtype!r}; expected one of {', '.join(_DTYPES)}") from None


# --------------------------------------------------------------------------- locating checkpoints


@dataclass
class _Files:
    config: Path | None
    weights: list[Path]
    source: str


def _resolve(path_or_id: str | os.PathLike, subfolder: str | None, revision: str | None) -> _Files:
    path = Path(path_or_id).expanduser()
    if path.is_file():
        if subfolder:
            raise CheckpointError(f"cannot load '{path}': subfolder '{subfolder}' given for a single file")
        return _Files(None, [path], f"'{path}'")
    if path.is_dir():
        root = path / subfolder if subfolder else path
        files = _collect(lambda name: (root / name) if (root / name).is_file() else None, f"'{root}'")
        if files is None:
            raise CheckpointError(f"cannot load '{root}': the directory holds none of {', '.join(_WEIGHT_NAMES)}")
        return files
    repo_id = str(path_or_id)
    if not _REPO_ID.fullmatch(repo_id) or repo_id.endswith((".safetensors", ".pt", ".pth", ".bin", ".json")):
        raise CheckpointError(f"cannot load '{repo_id}': no such file or directory")
    return _resolve_hub(repo_id, subfolder, revision)


def _collect(fetch: Callable[[str], Path | None], source: str) -> _Files | None:
    config = fetch(CONFIG_NAME)
    for name in _WEIGHT_NAMES:
        found = fetch(name)
        if found is None:
            continue
        if not name.endswith(_INDEX_SUFFIX):
            return _Files(config, [found], source)
        return _Files(config, [_fetch_shard(fetch, shard, found) for shard in _shard_names(found)], source)
    return None


def _shard_names(index: Path) -> list[str]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return list(dict.fromkeys(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"cannot read checkpoint index '{index}': {_reason(exc)}") from exc


def _fetch_shard(fetch: Callable[[str], Path | None], shard: str, index: Path) -> Path:
    found = fetch(shard)
    if found is None:
        raise CheckpointError(f"checkpoint index '{index}' names shard '{shard}', which cannot be found")
    return found


def _env_offline() -> bool:
    # Read at call time: huggingface_hub reads it once at import.
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    if value is None:
        return bool(hf_constants.HF_HUB_OFFLINE)
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _env_cache_dir() -> str | None:
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    return None


class _HubFetcher:
    """Fetches single files of one hub repository through the Hugging Face cache."""

    def __init__(self, repo_id: str, subfolder: str | None, revision: str | None) -> None:
        self.repo_id, self.subfolder, self.revision = repo_id, subfolder, revision
        self.offline = _env_offline()
        self.unreachable = False
        self.cache_dir = _env_cache_dir()

    def __call__(self, name: str) -> Path | None:
        try:
            local = hf_hub_download(
                self.repo_id,
                name,
                subfolder=self.subfolder,
                revision=self.revision,
                cache_dir=self.cache_dir,
                local_files_only=self.offline or self.unreachable,
            )
        except RemoteEntryNotFoundError:
            return None
        except LocalEntryNotFoundError:
            # Offline, "not cached" may just mean "not in the repo"; online, the hub did not answer,
            # so the remaining files can only come from the cache too.
            self.unreachable = not self.offline
            return None
        except RevisionNotFoundError as exc:
            raise CheckpointError(f"cannot load '{self.repo_id}': no revision '{self.revision}' on the hub") from exc
        except RepositoryNotFoundError as exc:
            raise CheckpointError(
                f"cannot load '{self.repo_id}': not a local path, and the hub has no such repository "
                "(or it is gated or private and you are not logged in)"
            ) from exc
        except (HfHubHTTPError, OSError, ValueError) as exc:
            raise CheckpointError(f"cannot load '{self.repo_id}': {_reason(exc)}") from exc
        return Path(local)


def _resolve_hub(repo_id: str, subfolder: str | None, revision: str | None) -> _Files:
    fetch = _HubFetcher(repo_id, subfolder, revision)
    source = f"'{repo_id}'" + (f" (subfolder '{subfolder}')" if subfolder else "")
    files = _collect(fetch, source)
    if files is not None:
        return files
    if fetch.offline or fetch.unreachable:
        why = "HF_HUB_OFFLINE=1" if fetch.offline else "connection failed"
        raise CheckpointError(
            f"cannot load '{repo_id}': not a local path, not in the Hugging Face cache, and the hub is unreachable "
            f"({why})"
        )
    raise CheckpointError(f"cannot load '{repo_id}': the hub repository holds none of {', '.join(_WEIGHT_NAMES)}")


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read model config '{path}': {_reason(exc)}") from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"cannot read model config '{path}': expected a JSON object, got {type(config).__name__}")
    return config


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

    def save_pretrained(self, save_directory: str | os.PathLike, *, safe_serialization: bool = True) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (``pytorch_model.bin`` if not safe).

        A new directory appears complete or not at all; into an existing one each file is
        replaced atomically, and weights left over in the other format are removed.
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
            _write_json(config, staging / CONFIG_NAME)
            save_state_dict_atomic(self.state_dict(), staging / weights_name)
            if not target.exists():
                os.replace(staging, target)
                return target
            for name in (CONFIG_NAME, weights_name):
                os.replace(staging / name, target / name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        for stale in _WEIGHT_NAMES:
            if stale != weights_name:
                (target / stale).unlink(missing_ok=True)
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
        **overrides: Any,
    ) -> ModelT:
        """Load a model from a directory, a single weights file or a Hugging Face hub id.

        ``overrides`` are constructor arguments that replace config.json values; for a single file
        they are the whole architecture. The model is returned in eval mode.
        """
        files = _resolve(path_or_id, subfolder, revision)
        config = _read_config(files.config) if files.config is not None else {}
        kwargs = cls._constructor_kwargs(config, overrides, label=f"config.json of {files.source}")
        dtype = _as_dtype(dtype)
        with torch.device("meta"):
            model = cls(**kwargs)
        state_dict = _load_files(files.weights)
        _load_into(model, state_dict, strict=strict, device=device, dtype=dtype, source=files.source)
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
            raise error(f"{cls.__name__} does not accept {_names(unknown)} (from the {where})")
