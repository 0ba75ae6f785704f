"""Checkpoint files on disk: reading and writing state dicts and ``config.json``, nothing about models.

Reading accepts ``.safetensors`` and ``torch.save`` files and unwraps training checkpoints (weights
nested under ``ema``/``model``/..., keys prefixed by DDP, FSDP or ``torch.compile``). Writing is
atomic: a file is written beside its destination and renamed over it. Failures raise a one-line
:class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import json
import os
import pickle
import uuid
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from opensora.errors import CheckpointError, ConfigError

CONFIG_NAME = "config.json"
SAFE_WEIGHTS_NAME = "model.safetensors"
PT_WEIGHTS_NAME = "pytorch_model.bin"
INDEX_SUFFIX = ".index.json"
# Looked up in this order in a directory or hub repository; the first one found wins.
WEIGHT_NAMES = (
    SAFE_WEIGHTS_NAME,
    SAFE_WEIGHTS_NAME + INDEX_SUFFIX,
    PT_WEIGHTS_NAME,
    PT_WEIGHTS_NAME + INDEX_SUFFIX,
)
# Training checkpoints nest the weights; EMA first because it is what inference wants.
_NESTING_KEYS = ("ema", "model", "state_dict", "module")
# Wrappers that insert a segment into every key below them (torch.compile, FSDP1, checkpointing).
_WRAPPER_SEGMENTS = ("_orig_mod.", "_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")
_DDP_PREFIX = "module."
_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}
_SHOWN_NAMES = 5


def format_names(names: Iterable[str]) -> str:
    """At most a few names, then how many were left out, so an error stays one readable line."""
    names = list(names)
    shown = ", ".join(names[:_SHOWN_NAMES])
    return shown + (f", ... ({len(names) - _SHOWN_NAMES} more)" if len(names) > _SHOWN_NAMES else "")


def error_reason(exc: BaseException) -> str:
    """The informative line of an exception message (torch and safetensors write paragraphs)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "WeightsUnpickler error:" in line:
            return line.split("WeightsUnpickler error:", 1)[1].strip()
    return lines[0] if lines else type(exc).__name__


def parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """``"bf16"``, ``"float32"``, ... as a ``torch.dtype``; a dtype or None passes through.

    Raises :class:`ConfigError` for an unknown name.
    """
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise ConfigError(f"unknown dtype {dtype!r}; expected one of {', '.join(_DTYPES)}") from None


# --------------------------------------------------------------------------- reading


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
            return _unwrap_keys(safetensors.torch.load_file(path, device="cpu"))
        except (safetensors.SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"cannot read checkpoint '{path}': {error_reason(exc)}") from exc
    return _unwrap_keys(_unwrap_nesting(_torch_load(path), path))


def _unwrap_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys as the bare model names them: wrapper segments and a whole-model DDP prefix removed."""
    cleaned = {}
    for key, value in state_dict.items():
        for segment in _WRAPPER_SEGMENTS:
            key = key.replace(segment, "")
        cleaned[key] = value
    # Strip "module." only when DDP wrapped the whole model: models may own a child named "module".
    if cleaned and all(key.startswith(_DDP_PREFIX) for key in cleaned):
        cleaned = {key[len(_DDP_PREFIX) :]: value for key, value in cleaned.items()}
    return cleaned


def _torch_load(path: Path) -> object:
    try:
        # mmap needs the zip format; legacy (pre-1.6) pickles are read into memory.
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        reason = error_reason(exc)
        if "Unsupported global" in reason:
            raise CheckpointError(
                f"cannot read checkpoint '{path}': it holds objects other than tensors ({reason}); "
                "load it once in a trusted session and re-save torch.save(model.state_dict())"
            ) from exc
        raise CheckpointError(f"cannot read checkpoint '{path}': not a valid torch checkpoint ({reason})") from exc
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(f"cannot read checkpoint '{path}': {error_reason(exc)}") from exc


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
        raise CheckpointError(
            f"cannot read checkpoint '{path}': no tensors found (top-level keys: {format_names(obj)})"
        )
    return tensors


def read_config(path: Path) -> dict[str, Any]:
    """A model's ``config.json`` as a dict; CheckpointError if it is unreadable or not a JSON object."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read model config '{path}': {error_reason(exc)}") from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"cannot read model config '{path}': expected a JSON object, got {type(config).__name__}")
    return config


# --------------------------------------------------------------------------- writing


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


def write_config(config: Mapping[str, Any], path: Path) -> None:
    """Write ``config`` as indented JSON with sorted keys, so saved configs diff cleanly."""
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
