"""Replays of the Open-Sora 2.0 VAE golden fixtures (Hunyuan causal 3-D VAE, Video DC-AE)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from tests.conformance.golden import Fixture

# family -> builder of the model a fixture was recorded with (replay.build_model defers to these)
BUILDERS_VAE_V2: dict[str, Callable[[Fixture], torch.nn.Module]] = {}
# (model family, recorded method) -> replay, merged into replay.REPLAYS
REPLAYS_VAE_V2: dict[tuple[str, str], Callable] = {}
