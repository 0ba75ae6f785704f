"""Replays of the Open-Sora 2.0 golden fixtures (MMDiT forward, sampling, the distilled denoiser)."""

from __future__ import annotations

from collections.abc import Callable

# (model family, recorded method) -> replay, merged into replay.REPLAYS
REPLAYS_V2: dict[tuple[str, str], Callable] = {}
