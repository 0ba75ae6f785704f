"""Conditioning masks: each kind's structure, the draw probabilities, and config errors."""

from __future__ import annotations

import pytest
import torch

from opensora.errors import ConfigError
from opensora.training.masks import MASK_KINDS, MaskGenerator

T = 12


def masks_of(kind: str, draws: int = 200, num_frames: int = T) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    masks = MaskGenerator({kind: 1.0}).get_masks(torch.zeros(draws, 4, num_frames, 2, 2), generator)
    assert masks.shape == (draws, num_frames) and masks.dtype == torch.bool
    assert masks.any(dim=1).all(), "every sample must generate at least one frame"
    return masks


def conditioning(mask: torch.Tensor) -> list[int]:
    return torch.nonzero(~mask).flatten().tolist()


def test_identity_and_images_are_never_conditioned() -> None:
    assert masks_of("identity").all()
    for kind in MASK_KINDS:
        assert masks_of(kind, draws=20, num_frames=1).all()


def test_image_kinds_condition_single_frames() -> None:
    assert all(conditioning(m) == [0] for m in masks_of("image_head"))
    assert all(conditioning(m) == [T - 1] for m in masks_of("image_tail"))
    assert all(conditioning(m) == [0, T - 1] for m in masks_of("image_head_tail"))
    positions = [conditioning(m) for m in masks_of("image_random")]
    assert all(len(p) == 1 for p in positions)
    assert len({p[0] for p in positions}) > T // 2  # the frame varies


def test_quarter_kinds_condition_up_to_a_quarter() -> None:
    for kind in ("quarter_head", "quarter_tail", "quarter_head_tail", "quarter_random"):
        sizes = set()
        for mask in masks_of(kind):
            given = conditioning(mask)
            assert given == list(range(given[0], given[0] + len(given))) or kind == "quarter_head_tail"
            if kind == "quarter_head":
                assert given[0] == 0
            if kind == "quarter_tail":
                assert given[-1] == T - 1
            if kind == "quarter_head_tail":
                half = len(given) // 2
                assert given[:half] == list(range(half)) and given[half:] == list(range(T - half, T))
                sizes.add(half)
            else:
                sizes.add(len(given))
        assert sizes == set(range(1, T // 4 + 1)), kind


def test_interpolate_keeps_every_other_frame() -> None:
    starts = set()
    for mask in masks_of("intepolate"):
        given = conditioning(mask)
        assert given == list(range(given[0], T, 2))
        starts.add(given[0])
    assert starts == {0, 1}
    assert torch.equal(masks_of("interpolate"), masks_of("intepolate"))  # both spellings, same draws


def test_random_conditions_a_varying_fraction() -> None:
    fractions = (~masks_of("random", draws=400)).float().mean(dim=1)
    assert 0.4 < fractions.mean() < 0.6 and fractions.min() < 0.2 and fractions.max() > 0.75


def test_head_tail_on_two_frames_still_generates_one() -> None:
    masks = masks_of("image_head_tail", num_frames=2)
    assert masks.tolist() == [[False, True]] * len(masks)


def test_kinds_are_drawn_with_their_ratios() -> None:
    generator = MaskGenerator({"image_head": 0.3, "random": 0.2})
    rng = torch.Generator().manual_seed(1)
    draws = [generator.choose(rng) for _ in range(4000)]
    for kind, expected in (("image_head", 0.3), ("random", 0.2), ("identity", 0.5)):
        assert abs(draws.count(kind) / len(draws) - expected) < 0.03
    masks = generator.get_masks(torch.zeros(2000, 4, T, 1, 1), rng)
    assert abs(masks.all(dim=1).float().mean().item() - 0.5) < 0.05


@pytest.mark.parametrize(
    ("ratios", "message"),
    [
        ({"quarter": 0.1}, "unknown mask 'quarter'"),
        ({"random": 0.7, "image_head": 0.4}, "sum to 1.1 > 1"),
        ({"random": -0.1}, "probability in"),
        ({"random": True}, "probability in"),
    ],
)
def test_bad_ratios_fail_in_one_line(ratios: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        MaskGenerator(ratios)
    assert "\n" not in str(info.value)
