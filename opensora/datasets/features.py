"""Pre-extracted training features: VAE latents and text embeddings stored once, read many times.

A feature folder holds safetensors shards and ``index.json``. Sample ``i`` of a shard stores its
tensors as ``"{i}.x"`` (latent [C, T, h, w]), ``"{i}.y"`` (text states [1, L, C]) and ``"{i}.mask"``
([L]); everything else about it (text, path, num_frames, height, width, fps, ...) lives in its
index entry. Shards and then the index are each written to a temporary file and renamed, and the
index is written last: a folder without one is an extraction that did not finish. Tensors that
belong to the folder rather than to a sample (the empty prompt's embeddings, for caption dropout)
are stored once in ``extras.safetensors``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.data import Dataset

from opensora.errors import OpenSoraError
from opensora.registry import DATASETS

INDEX_NAME = "index.json"
EXTRAS_NAME = "extras.safetensors"
FORMAT = "opensora-features"
VERSION = 1


def write_feature_shards(
    samples: Iterable[Mapping[str, Any]],
    output_dir: str | os.PathLike[str],
    shard_size: int = 256,
    overwrite: bool = False,
    extras: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``samples`` into shards of ``shard_size`` in ``output_dir``; returns the index path.

    Each sample maps names to tensors (stored in the shard) or to JSON values (stored in the index).
    ``extras``: tensors of the whole folder (:attr:`FeatureDataset.extras`). An existing feature
    folder is replaced only with ``overwrite``.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    root = Path(output_dir)
    index_path = root / INDEX_NAME
    if index_path.exists():
        if not overwrite:
            raise OpenSoraError(f"'{root}' already holds features; pass overwrite=True (--overwrite) to replace them")
        index_path.unlink()  # first, so no reader sees the old index over new shards
    root.mkdir(parents=True, exist_ok=True)
    shards: list[str] = []
    entries: list[dict[str, Any]] = []
    for chunk in _chunks(samples, shard_size):
        name = f"shard-{len(shards):05d}.safetensors"
        tensors: dict[str, torch.Tensor] = {}
        for local, sample in enumerate(chunk):
            meta, names = {}, []
            for key, value in sample.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"{local}.{key}"] = value.detach().cpu().clone(memory_format=torch.contiguous_format)
                    names.append(key)
                else:
                    meta[key] = _json_value(value)
            entries.append({"shard": len(shards), "key": str(local), "tensors": names, "meta": meta})
        _atomic_write(root / name, lambda tmp, t=tensors: _save_safetensors(t, tmp))
        shards.append(name)
    index = {"format": FORMAT, "version": VERSION, "num_samples": len(entries), "shards": shards, "samples": entries}
    if extras:
        tensors = {key: value.detach().cpu().contiguous() for key, value in extras.items()}
        _atomic_write(root / EXTRAS_NAME, lambda tmp: _save_safetensors(tensors, tmp))
        index["extras"] = EXTRAS_NAME
    _atomic_write(index_path, lambda tmp: Path(tmp).write_text(json.dumps(index, indent=1)))
    for stale in set(root.glob("shard-*.safetensors")) - {root / name for name in shards}:
        stale.unlink()  # from an earlier, longer extraction
    return index_path


def _chunks(samples: Iterable[Mapping[str, Any]], size: int) -> Iterator[list[Mapping[str, Any]]]:
    chunk: list[Mapping[str, Any]] = []
    for sample in samples:
        chunk.append(sample)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _json_value(value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()  # numpy and torch scalars
    return value


def _save_safetensors(tensors: Mapping[str, torch.Tensor], path: str) -> None:
    from safetensors.torch import save_file

    save_file(dict(tensors), path)


def _atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


@DATASETS.register("FeatureDataset")
class FeatureDataset(Dataset):
    """Samples of a feature folder: ``{"x", "y", "mask"}`` tensors plus the fields stored with them.

    Indexed by sample index or by a ``(sample_index, BucketId)`` pair from a bucket sampler (the
    bucket is ignored: latents have the size they were extracted at).
    """

    def __init__(self, shard_dir: str | os.PathLike[str]) -> None:
        self.shard_dir = Path(shard_dir)
        index_path = self.shard_dir / INDEX_NAME
        if not index_path.is_file():
            raise OpenSoraError(
                f"no {INDEX_NAME} in '{self.shard_dir}' (not a feature folder, or extraction unfinished)"
            )
        text = index_path.read_text()
        try:
            index = json.loads(text)
        except json.JSONDecodeError as exc:
            raise OpenSoraError(f"'{index_path}' is not valid JSON: {exc}") from None
        if index.get("format") != FORMAT or index.get("version") != VERSION:
            found = f"{index.get('format')} v{index.get('version')}"
            raise OpenSoraError(f"'{index_path}' is {found}, expected {FORMAT} v{VERSION}")
        self.shards: list[str] = index["shards"]
        self.entries: list[dict[str, Any]] = index["samples"]
        self._extras_name: str | None = index.get("extras")
        self.fingerprint = hashlib.sha256(text.encode()).hexdigest()
        self._open: dict[int, Any] = {}  # shard -> safe_open handle, per process

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def metadata(self) -> pd.DataFrame:
        """One row per sample with its stored fields (path, num_frames, height, width, ...)."""
        return pd.DataFrame([entry["meta"] for entry in self.entries])

    @property
    def extras(self) -> dict[str, torch.Tensor]:
        """The folder's own tensors (e.g. ``null.y``, ``null.y_vec``: the empty prompt's embeddings); {} if none."""
        if self._extras_name is None:
            return {}
        from safetensors.torch import load_file

        path = self.shard_dir / self._extras_name
        if not path.is_file():
            raise OpenSoraError(f"feature extras '{path}' are missing")
        return load_file(str(path))

    def __getitem__(self, item: int | tuple[int, Any]) -> dict[str, Any]:
        index = int(item[0] if isinstance(item, tuple) else item)
        entry = self.entries[index]
        shard = self._shard(entry["shard"])
        sample = {name: shard.get_tensor(f"{entry['key']}.{name}") for name in entry["tensors"]}
        return {**entry["meta"], **sample, "index": index}

    def _shard(self, number: int) -> Any:
        from safetensors import safe_open

        if number not in self._open:
            path = self.shard_dir / self.shards[number]
            if not path.is_file():
                raise OpenSoraError(f"feature shard '{path}' is missing")
            self._open[number] = safe_open(str(path), framework="pt")
        return self._open[number]

    def __getstate__(self) -> dict[str, Any]:
        # file handles cannot cross into worker processes; each worker opens its own
        return {**self.__dict__, "_open": {}}
