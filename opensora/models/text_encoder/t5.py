"""T5 v1.1 encoder (``DeepFloyd/t5-v1_1-xxl`` in the Open-Sora releases) behind the text-encoder interface.

Release lengths (``model_max_length``): 300 tokens for Open-Sora 1.2, 200 for 1.1, 120 for 1.0.
"""

from __future__ import annotations

import logging

from opensora.models.text_encoder.hf_encoder import HFTextEncoder
from opensora.registry import MODELS

logger = logging.getLogger(__name__)


@MODELS.register("t5")
class T5TextEncoder(HFTextEncoder):
    """``encode(texts) -> {"y": [B, 1, L, C], "mask": [B, L]}`` from ``T5EncoderModel``'s last hidden state.

    Captions are cleaned the way the release cleaned them (``captions.clean_caption``) unless
    ``clean_caption=False``. ``shardformer`` was a ColossalAI switch in the release; it is accepted
    so released configs load, and ignored. Open-Sora 2.0 encoded 512 tokens without an attention
    mask and without cleaning: ``model_max_length=512, use_attention_mask=False, clean_caption=False``.
    """

    MODEL_CLASS = "T5EncoderModel"

    def __init__(
        self,
        from_pretrained: str,
        model_max_length: int = 300,
        dtype: str = "fp32",
        device: str | None = None,
        cache_dir: str | None = None,
        local_files_only: bool = False,
        shardformer: bool = False,
        clean_caption: bool = True,
        cpu_offload: bool = False,
        use_attention_mask: bool = True,
    ) -> None:
        if shardformer:
            logger.warning("t5: shardformer=True is a ColossalAI option of the release and is ignored here")
        super().__init__(
            from_pretrained,
            model_max_length=model_max_length,
            dtype=dtype,
            device=device,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            clean_caption=clean_caption,
            cpu_offload=cpu_offload,
            use_attention_mask=use_attention_mask,
        )
