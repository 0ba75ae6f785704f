"""Schedulers; importing this package registers them in ``opensora.registry.SCHEDULERS``."""

from opensora.schedulers.rectified_flow import RectifiedFlow

__all__ = ["RectifiedFlow"]
