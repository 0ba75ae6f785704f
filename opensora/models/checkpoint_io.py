"""Checkpoint files on disk: reading and writing state dicts and ``config.json``, nothing about models.

Reading accepts ``.safetensors`` and ``torch.save`` files and unwraps training checkpoints (weights
nested under ``ema``/``model``/..., keys prefixed by DDP, FSDP or ``torch.compile``), either all
at once (:func:`load_state_dict_file`) or file by file and tensor by tensor after a look at the
headers (:class:`CheckpointContents`), so that a sharded checkpoint never has to fit in memory
beside the model. Writing is atomic: a file is written beside its destination and renamed over
it; large state dicts can be written as shards plus an index. Failures raise a one-line
:class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import uuid
import warnings
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import safe_open

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
    if is_dcp_folder(path):
        return _dcp_shapes(path)
    if not path.is_file():
        raise CheckpointError(f"cannot read checkpoint '{path}': no such file")
    if path.suffix == ".safetensors":
        try:
            return _unwrap_keys(safetensors.torch.load_file(path, device="cpu"))
        except (safetensors.SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"cannot read checkpoint '{path}': {error_reason(exc)}") from exc
    return _unwrap_keys(_unwrap_nesting(_torch_load(path), path))


def model_names(keys: Iterable[str]) -> dict[str, str]:
    """Checkpoint key -> the bare model's name: wrapper segments and a whole-model DDP prefix removed."""
    names = {}
    for key in keys:
        name = key
        for segment in _WRAPPER_SEGMENTS:
            name = name.replace(segment, "")
        names[key] = name
    # Strip "module." only when DDP wrapped the whole model: models may own a child named "module".
    if names and all(name.startswith(_DDP_PREFIX) for name in names.values()):
        names = {key: name[len(_DDP_PREFIX) :] for key, name in names.items()}
    return names


def _unwrap_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys as the bare model names them (:func:`model_names`)."""
    names = model_names(state_dict)
    return {names[key]: value for key, value in state_dict.items()}


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


# --------------------------------------------------------------------------- reading file by file


DCP_ENTRY = "model"  # the entry of a sharded training checkpoint's state that holds the weights
# a training checkpoint folder (opensora.training.checkpoint): trusted once this marker exists; shards in STATE
TRAINING_MARKER, TRAINING_STATE = "COMPLETE", "state"


def is_dcp_folder(path: Path) -> bool:
    """A torch.distributed.checkpoint folder (a training checkpoint's ``state/``)."""
    return path.is_dir() and (path / ".metadata").is_file()


def read_dcp_entries(folder: str | os.PathLike, names: Iterable[str]) -> dict[str, Any]:
    """Entries ``names`` of a torch.distributed.checkpoint folder, whole, on the CPU, in one process."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.format_utils import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    states: dict[str, Any] = {}
    try:
        planner = _EmptyStateDictLoadPlanner(keys=set(names))
        # dcp.load fills only the keys it is given; the private loader lets the planner add them all
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process")
            _load_state_dict(states, storage_reader=dcp.FileSystemReader(folder), planner=planner, no_dist=True)
    except Exception as exc:  # a corrupt or foreign folder: one line naming it
        raise CheckpointError(f"cannot read checkpoint state '{folder}': {error_reason(exc)}") from exc
    return states


def _dcp_shapes(folder: Path) -> dict[str, torch.Size]:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    try:
        metadata = dcp.FileSystemReader(folder).read_metadata()
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint state '{folder}': {error_reason(exc)}") from exc
    prefix = DCP_ENTRY + "."
    return {key[len(prefix) :]: item.size for key, item in metadata.state_dict_metadata.items()
            if key.startswith(prefix) and isinstance(item, TensorStorageMetadata)}  # fmt: skip


def read_shapes(path: str | os.PathLike) -> dict[str, torch.Size]:
    """Key -> shape of every tensor of a weights file, without reading tensor data.

    A safetensors file is read up to the end of its header. A torch file is memory-mapped (a
    legacy pickle is read whole) and unwrapped from training nesting as :func:`load_state_dict_file`
    does; keys are not yet cleaned (:func:`model_names`).
    """
    path = Path(path)
    if is_dcp_folder(path):
        return _dcp_shapes(path)
    if not path.is_file():
        raise CheckpointError(f"cannot read checkpoint '{path}': no such file")
    if path.suffix != ".safetensors":
        return {key: tensor.shape for key, tensor in _unwrap_nesting(_torch_load(path), path).items()}
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: torch.Size(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except (safetensors.SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"cannot read checkpoint '{path}': {error_reason(exc)}") from exc


def iter_tensors(path: str | os.PathLike, keys: Iterable[str]) -> Iterator[tuple[str, torch.Tensor]]:
    """(key, tensor) for ``keys`` of one weights file, read one at a time on the CPU.

    Safetensors tensors are views of the memory-mapped file: their pages are read when first
    touched, and the mapping goes away with the last of them. The file is closed when the
    iteration ends (exhaust the generator or close it).
    """
    path = Path(path)
    if is_dcp_folder(path):
        tensors = read_dcp_entries(path, [DCP_ENTRY])[DCP_ENTRY]
        for key in keys:
            yield key, tensors.pop(key)
        return
    if path.suffix != ".safetensors":
        tensors = _unwrap_nesting(_torch_load(path), path)
        for key in keys:
            yield key, tensors.pop(key)
        return
    try:
        handle = safe_open(str(path), framework="pt")
    except (safetensors.SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"cannot read checkpoint '{path}': {error_reason(exc)}") from exc
    with handle:
        for key in keys:
            try:
                tensor = handle.get_tensor(key)
            except (safetensors.SafetensorError, OSError, ValueError, RuntimeError) as exc:
                reason = error_reason(exc)
                raise CheckpointError(f"cannot read tensor '{key}' of checkpoint '{path}': {reason}") from exc
            yield key, tensor
            del tensor  # hold no reference while the caller reads the next one


@dataclass(frozen=True)
class StoredTensor:
    """Where a model tensor lives in a checkpoint: its file, its key there, its shape."""

    path: Path
    key: str
    shape: torch.Size


@dataclass
class CheckpointContents:
    """The tensors of a checkpoint's weights files (one file, or the shards of an index), known from
    their headers before any tensor is read; :meth:`read` then goes through one file at a time."""

    files: list[Path]
    tensors: dict[str, StoredTensor]  # model name -> where it is stored

    @classmethod
    def scan(
        cls, paths: list[Path], weight_map: Mapping[str, Path] | None = None, index: Path | None = None
    ) -> CheckpointContents:
        """Read every file's header; with an index's ``weight_map`` (key -> shard path), check that each
        shard holds the keys the index places in it. CheckpointError names the file and tensor."""
        shapes = {path: read_shapes(path) for path in paths}
        for key, shard in (weight_map or {}).items():
            if key not in shapes.get(shard, {}):
                raise CheckpointError(
                    f"checkpoint index '{index}' places tensor '{key}' in '{shard.name}', which does not hold it"
                )
        names = model_names(key for keys in shapes.values() for key in keys)
        tensors: dict[str, StoredTensor] = {}
        for path, keys in shapes.items():
            for key, shape in keys.items():
                name = names[key]
                if name in tensors:
                    raise CheckpointError(
                        f"checkpoint tensor '{name}' is stored twice: in '{tensors[name].path}' and in '{path}'"
                    )
                tensors[name] = StoredTensor(path, key, shape)
        return cls(list(paths), tensors)

    def shapes(self) -> dict[str, torch.Size]:
        return {name: stored.shape for name, stored in self.tensors.items()}

    def read(self, path: Path, names: Iterable[str] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        """(model name, tensor) of the tensors of one file (those of ``names`` only, if given)."""
        wanted = self.tensors if names is None else set(names)
        stored = {s.key: name for name, s in self.tensors.items() if s.path == path and name in wanted}
        for key, tensor in iter_tensors(path, stored):
            yield stored[key], tensor
            del tensor


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


_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}  # fmt: skip
SHARD_NAME = re.compile(r"(model|pytorch_model)-\d{5}-of-\d{5}\.(safetensors|bin)")
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*")


def parse_size(size: int | str) -> int:
    """Bytes of ``5_000_000``, ``"5GB"`` (decimal units) or ``"500MiB"`` (binary); ConfigError otherwise."""
    if isinstance(size, int) and not isinstance(size, bool):
        value = size
    else:
        match = _SIZE.fullmatch(size) if isinstance(size, str) else None
        if match is None or match[2].upper() not in _SIZE_UNITS:
            raise ConfigError(f"cannot read the size {size!r}: expected bytes or a number with KB/MB/GB/KiB/MiB/GiB")
        value = int(float(match[1]) * _SIZE_UNITS[match[2].upper()])
    if value <= 0:
        raise ConfigError(f"a shard size must be positive, got {size!r}")
    return value


def shard_file_name(weights_name: str, number: int, count: int) -> str:
    """``model.safetensors`` -> ``model-00001-of-00003.safetensors`` (the Hugging Face names)."""
    stem, dot, suffix = weights_name.partition(".")
    return f"{stem}-{number:05d}-of-{count:05d}{dot}{suffix}"


def is_shard_file_name(name: str) -> bool:
    """Whether ``name`` is shaped like :func:`shard_file_name` of one of ``WEIGHT_NAMES``."""
    return SHARD_NAME.fullmatch(name) is not None



def _plan_shards(state_dict: Mapping[str, torch.Tensor], max_bytes: int) -> list[list[str]]:
    """Keys in order, cut into groups of at most ``max_bytes`` (a larger tensor is a shard of its own)."""
    shards: list[list[str]] = [[]]
    size = 0
    for key, tensor in state_dict.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(key)
        size += nbytes
    return shards


def save_state_dict_sharded(
    state_dict: Mapping[str, torch.Tensor], directory: Path, weights_name: str, max_shard_size: int | str | None
) -> list[str]:
    """Write ``state_dict`` into ``directory`` as ``weights_name``, or, when it exceeds ``max_shard_size``
    bytes, as shards of at most that size plus ``weights_name + ".index.json"`` (Hugging Face
    layout: ``weight_map`` key -> shard, ``metadata.total_size``). Returns the names written, the
    index last, so that moving them in order publishes the index only after its shards."""
    groups = [list(state_dict)] if max_shard_size is None else _plan_shards(state_dict, parse_size(max_shard_size))
    if len(groups) == 1:
        save_state_dict_atomic(state_dict, directory / weights_name)
        return [weights_name]
    names, weight_map = [], {}
    for number, keys in enumerate(groups, start=1):
        name = shard_file_name(weights_name, number, len(groups))
        save_state_dict_atomic({key: state_dict[key] for key in keys}, directory / name)
        names.append(name)
        weight_map.update(dict.fromkeys(keys, name))
    total = sum(tensor.numel() * tensor.element_size() for tensor in state_dict.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / (weights_name + INDEX_SUFFIX)).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return [*names, weights_name + INDEX_SUFFIX]


def write_config(config: Mapping[str, Any], path: Path) -> None:
    """Write ``config`` as indented JSON with sorted keys, so saved configs diff cleanly."""
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
