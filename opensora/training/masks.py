"""Which latent frames a training sample generates and which it is conditioned on.

Open-Sora 1.2 trains image-to-video, video extension and interpolation together with plain
generation by keeping some frames clean (at t = 0) as conditioning. A mask is a BoolTensor [B, T]:
True = the frame is noised and trained, False = a conditioning frame kept clean. Each sample draws
one mask kind with the configured probabilities; whatever probability is left is "identity"
(every frame generated). Images (T = 1) are never conditioned, and every sample generates at
least one frame.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping

import torch

from opensora.errors import ConfigError

# the release spells it "intepolate"; both names mean the same kind
ALIASES = {"interpolate": "intepolate"}


def _bounded_randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """An integer in [low, high], both ends included."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def _quarter(num_frames: int, generator: torch.Generator | None) -> int:
    # up to a quarter of the clip conditions the rest (at least one frame, even for short clips)
    return _bounded_randint(1, max(1, num_frames // 4), generator)


def _identity(mask: torch.Tensor, gen: torch.Generator | None) -> None:
    pass


def _random(mask: torch.Tensor, gen: torch.Generator | None) -> None:
    drop = 0.1 + 0.8 * float(torch.rand((), generator=gen))  # fraction of conditioning frames in [0.1, 0.9]
    mask.copy_(torch.rand(len(mask), generator=gen) > drop)


def _interpolate(mask: torch.Tensor, gen: torch.Generator | None) -> None:
    mask[_bounded_randint(0, 1, gen) :: 2] = False  # every other frame is given


def _quarter_random(mask: torch.Tensor, gen: torch.Generator | None) -> None:
    size = _quarter(len(mask), gen)
    start = _bounded_randint(0, len(mask) - size, gen)
    mask[start : start + size] = False


def _quarter_head(mask: torch.Tensor, gen: torch.Generator | None) -> None:
    mask[: _quarter(len(mask), gen)] = False


def _quarter_tail(mask: torch.Tensor, gen: torch.Generator | None) -> None:
    mask[-_quarter(len(mask), gen) :] = False


def _quarter_head_tail(mask: torch.Tensor, gen: torch.Generator | None) -> None:
    size = _quarter(len(mask), gen)
    mask[:size] = False
    mask[-size:] = False


def _image_random(mask: torch.Tensor, gen: torch.Generator | None) -> None:
    mask[_bounded_randint(0, len(mask) - 1, gen)] = False


def _image_head(mask: torch.Tensor, gen: torch.Generator | None) -> None:
    mask[0] = False


def _image_tail(mask: torch.Tensor, gen: torch.Generator | None) -> None:
    mask[-1] = False


def _image_head_tail(mask: torch.Tensor, gen: torch.Generator | None) -> None:
    mask[0] = mask[-1] = False


MASK_KINDS: Mapping[str, Callable[[torch.Tensor, torch.Generator | None], None]] = {
    "identity": _identity,
    "random": _random,
    "intepolate": _interpolate,
    "quarter_random": _quarter_random,
    "quarter_head": _quarter_head,
    "quarter_tail": _quarter_tail,
    "quarter_head_tail": _quarter_head_tail,
    "image_random": _image_random,
    "image_head": _image_head,
    "image_tail": _image_tail,
    "image_head_tail": _image_head_tail,
}


class MaskGenerator:
    """Draws a mask kind per sample from ``mask_ratios`` ({name: probability}, summing to <= 1)."""

    def __init__(self, mask_ratios: Mapping[str, float]) -> None:
        if not isinstance(mask_ratios, Mapping):
            raise ConfigError(f"mask_ratios must be a dict {{mask name: probability}}, got {mask_ratios!r}")
        ratios: dict[str, float] = {}
        for name, ratio in mask_ratios.items():
            kind = ALIASES.get(name, name)
            if kind not in MASK_KINDS:
                known = ", ".join([*MASK_KINDS, *ALIASES])
                raise ConfigError(f"mask_ratios: unknown mask '{name}' (known: {known})")
            ok = isinstance(ratio, numbers.Real) and not isinstance(ratio, bool) and 0.0 <= ratio <= 1.0
            if not ok:
                raise ConfigError(f"mask_ratios['{name}'] must be a probability in [0, 1], got {ratio!r}")
            ratios[kind] = ratios.get(kind, 0.0) + float(ratio)
        total = math.fsum(ratios.values())
        if total > 1.0 + 1e-6:
            raise ConfigError(f"mask_ratios sum to {total:.6g} > 1 (the remainder is 'identity')")
        self.ratios = ratios
        self._names = list(ratios)
        self._bounds = torch.tensor(list(ratios.values()), dtype=torch.float64).cumsum(0)

    def choose(self, generator: torch.Generator | None = None) -> str:
        """One mask kind, drawn with the configured probabilities ("identity" for the remainder)."""
        draw = float(torch.rand((), generator=generator, dtype=torch.float64))
        position = int(torch.searchsorted(self._bounds, torch.tensor(draw, dtype=torch.float64), right=True))
        return self._names[position] if position < len(self._names) else "identity"

    def frame_mask(self, kind: str, num_frames: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """BoolTensor [num_frames] of mask ``kind``; True = generated."""
        mask = torch.ones(num_frames, dtype=torch.bool)
        if num_frames > 1:  # a single frame (an image) is always generated
            MASK_KINDS[ALIASES.get(kind, kind)](mask, generator)
            if not mask.any():
                mask[-1] = True  # nothing left to learn otherwise
        return mask

    def get_masks(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """BoolTensor [B, T] for latents ``x`` [B, C, T, H, W], on ``x``'s device.

        ``generator`` is a CPU generator (None: torch's global one, which training checkpoints save).
        """
        B, T = x.shape[0], x.shape[2]
        masks = [self.frame_mask(self.choose(generator), T, generator) for _ in range(B)]
        return torch.stack(masks).to(x.device)
