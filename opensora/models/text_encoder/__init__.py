"""Text encoders; importing this package registers them (``hash``, ``t5``, ``clip``, ``hf_encoder``,
``text_encoders``).

Every encoder has ``encode(texts) -> {"y": [B, 1, L, C], "mask": [B, L]}`` (CLIP adds the pooled
``y_vec`` [B, C']),
``output_dim`` (C) and ``model_max_length`` (L). transformers is imported only when a Hugging Face
encoder is built.
"""

from opensora.models.text_encoder.cache import CachedTextEncoder
from opensora.models.text_encoder.captions import clean_caption
from opensora.models.text_encoder.clip import CLIPTextEncoder
from opensora.models.text_encoder.composite import TextEncoders
from opensora.models.text_encoder.hash_encoder import HashTextEncoder
from opensora.models.text_encoder.hf_encoder import HFTextEncoder
from opensora.models.text_encoder.loading import minilm_package_dir, package_model_dir
from opensora.models.text_encoder.t5 import T5TextEncoder

__all__ = [
    "CLIPTextEncoder",
    "CachedTextEncoder",
    "HFTextEncoder",
    "HashTextEncoder",
    "T5TextEncoder",
    "TextEncoders",
    "clean_caption",
    "minilm_package_dir",
    "package_model_dir",
]
