"""CLIP text encoder behind the text-encoder interface, plus the pooled vector later releases use."""

from __future__ import annotations

import torch

from opensora.models.text_encoder.hf_encoder import HFTextEncoder
from opensora.registry import MODELS


@MODELS.register("clip")
class CLIPTextEncoder(HFTextEncoder):
    """``encode(texts) -> {"y": [B, 1, L, C], "mask": [B, L], "y_vec": [B, C]}``.

    ``y`` is the last hidden state and ``y_vec`` the pooled output (the state at the end-of-text
    token), which Open-Sora 2.0 conditions on.
    """

    MODEL_CLASS = "CLIPTextModel"
    DEFAULT_MAX_LENGTH = 77  # CLIP's position table

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        # No attention mask, as CLIP was trained: its causal mask already keeps padding out of the
        # real tokens' states, and the released pipelines ran it this way.
        out = self.model(input_ids=ids)
        return {"y": out.last_hidden_state[:, None], "y_vec": out.pooler_output}  # (B, 1, L, C), (B, C)
