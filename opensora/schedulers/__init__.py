"""Schedulers; importing this package registers them in ``opensora.registry.SCHEDULERS``."""

from opensora.schedulers.dpm_solver import DPMSolver
from opensora.schedulers.iddpm import IDDPM
from opensora.schedulers.rectified_flow import RectifiedFlow

__all__ = ["DPMSolver", "IDDPM", "RectifiedFlow"]
