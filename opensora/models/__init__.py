"""Models; importing this package registers them in ``opensora.registry.MODELS``."""

from opensora.models import mmdit, text_encoder, vae
from opensora.models.stdit import stdit, stdit2, stdit3

__all__ = ["mmdit", "stdit", "stdit2", "stdit3", "text_encoder", "vae"]
