"""Schedulers; importing this package registers them in ``opensora.registry.SCHEDULERS``."""

from opensora.schedulers.dpm_solver import DPMSolver
from opensora.schedulers.iddpm import IDDPM
from opensora.schedulers.rectified_flow import RectifiedFlow
from opensora.schedulers.shifted_flow import ShiftedFlow

__all__ = ["DPMSolver", "IDDPM", "RectifiedFlow", "ShiftedFlow"]
