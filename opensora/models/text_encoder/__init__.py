from opensora.models.text_encoder.hash_encoder import HashTextEncoder

__all__ = ["HashTextEncoder"]
