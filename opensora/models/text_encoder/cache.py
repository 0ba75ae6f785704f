"""A disk cache of text embeddings, so training encodes each caption once across epochs and runs.

Each caption's outputs live in one small safetensors file named by
``sha256(encoder_id, model_max_length, text)``: ``y`` as [L, C], ``mask`` as [L] and any extra
output (CLIP's ``y_vec``) per row. ``encoder_id`` must change whenever the embeddings would
(checkpoint, dtype, caption cleaning); the cache cannot tell on its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import safetensors
import safetensors.torch
import torch
from torch import nn


class CachedTextEncoder(nn.Module):
    """Wraps an encoder with the same ``encode`` interface; hits are read from ``cache_dir``.

    ``hits`` counts rows served without encoding (from disk, or repeated within a call) and
    ``misses`` counts texts sent to the encoder.
    """

    def __init__(self, encoder: nn.Module, cache_dir: str | os.PathLike, encoder_id: str) -> None:
        super().__init__()
        self.encoder = encoder
        self.cache_dir = Path(cache_dir)
        self.encoder_id = encoder_id
        self.hits = 0
        self.misses = 0

    @property
    def model_max_length(self) -> int:
        return self.encoder.model_max_length

    @property
    def output_dim(self) -> int:
        return self.encoder.output_dim

    def key(self, text: str) -> str:
        payload = json.dumps([self.encoder_id, self.model_max_length, text], ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def _path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.safetensors"  # a level of folders keeps listings short

    @torch.no_grad()
    def encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        if not texts:
            return self.encoder.encode([])
        rows: dict[str, dict[str, torch.Tensor]] = {}
        for text in dict.fromkeys(texts):
            row = self._read(self.key(text))
            if row is not None:
                rows[text] = row
        missing = [text for text in dict.fromkeys(texts) if text not in rows]
        if missing:
            rows.update(self._encode_and_store(missing))
        self.misses += len(missing)
        self.hits += len(texts) - len(missing)
        return self._stack([rows[text] for text in texts])

    def _encode_and_store(self, texts: list[str]) -> dict[str, dict[str, torch.Tensor]]:
        out = self.encoder.encode(texts)
        rows = {}
        for i, text in enumerate(texts):
            row = {name: (value[i, 0] if name == "y" else value[i]) for name, value in out.items()}  # y: (L, C)
            self._write(self.key(text), row)
            rows[text] = row
        return rows

    def _read(self, key: str) -> dict[str, torch.Tensor] | None:
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            return safetensors.torch.load_file(path)
        except (OSError, safetensors.SafetensorError):
            return None  # a damaged entry is encoded again and overwritten

    def _write(self, key: str, row: dict[str, torch.Tensor]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {name: value.detach().to("cpu").contiguous() for name, value in row.items()}
        # Written beside the target and renamed, so a concurrent reader never sees half a file.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key[:8]}-", suffix=".tmp")
        os.close(fd)
        try:
            safetensors.torch.save_file(tensors, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _stack(self, rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        device, dtype = _placement(self.encoder)
        out = {}
        for name in rows[0]:
            value = torch.stack([row[name] for row in rows]).to(device)
            if value.is_floating_point():
                value = value.to(dtype)  # entries written under another dtype still come back in this one
            out[name] = value[:, None] if name == "y" else value  # y: (B, 1, L, C)
        return out


def _placement(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where and in what dtype the wrapped encoder produces its outputs."""
    device = getattr(module, "device", None)
    dtype = getattr(module, "dtype", None)
    if isinstance(device, torch.device) and isinstance(dtype, torch.dtype):
        return device, dtype
    tensor = next(iter(module.parameters()), None)
    if tensor is None:
        tensor = next(iter(module.buffers()))
    return tensor.device, tensor.dtype
