"""The multimodal diffusion transformer of Open-Sora 2.0."""

from opensora.models.mmdit.mmdit import MMDIT_PRESETS, MMDiT, convert_rope_layout

__all__ = ["MMDIT_PRESETS", "MMDiT", "convert_rope_layout"]
