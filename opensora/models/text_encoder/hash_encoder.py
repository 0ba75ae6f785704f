"""A tiny offline text encoder: words hashed into a fixed random embedding table.

It needs no download, so tiny configs, tests and the CPU quickstart can run anywhere. Words
map to table rows by a stable hash (crc32), so the same prompt always gives the same states.
"""

from __future__ import annotations

import zlib

import torch
from torch import nn

from opensora.registry import MODELS


@MODELS.register("hash")
class HashTextEncoder(nn.Module):
    """``encode(texts) -> {"y": [B, 1, L, C], "mask": [B, L]}`` like the real encoders.

    With ``pooled`` it also gives ``y_vec`` [B, C], the mean state of the real tokens, standing in
    for CLIP's pooled vector in the tiny Open-Sora 2.0 configs.
    """

    def __init__(
        self,
        output_dim: int = 32,
        model_max_length: int = 8,
        vocab_size: int = 4096,
        seed: int = 0,
        pooled: bool = False,
    ) -> None:
        super().__init__()
        self.pooled = pooled
        self.output_dim = output_dim
        self.model_max_length = model_max_length
        self.vocab_size = vocab_size
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("table", torch.randn(vocab_size, output_dim, generator=generator))

    def token_ids(self, text: str) -> list[int]:
        words = text.lower().split()[: self.model_max_length]
        return [zlib.crc32(word.encode()) % self.vocab_size for word in words]

    @torch.no_grad()
    def encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        B, L = len(texts), self.model_max_length
        ids = torch.zeros(B, L, dtype=torch.long)
        mask = torch.zeros(B, L, dtype=torch.long)
        for row, text in enumerate(texts):
            tokens = self.token_ids(text)
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            mask[row, : len(tokens)] = 1
        y = self.table[ids.to(self.table.device)] * mask[..., None].to(self.table)  # (B, L, C)
        mask = mask.to(self.table.device)
        out = {"y": y[:, None], "mask": mask}
        if self.pooled:
            out["y_vec"] = y.sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp(min=1)  # (B, C)
        return out
