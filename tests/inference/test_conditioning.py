"""Mask strategies: parsing, and where references land in the latent."""

from __future__ import annotations

import pytest
import torch

from opensora.errors import ConfigError
from opensora.inference.conditioning import MaskStrategy, apply_strategies, parse_mask_strategy


def test_missing_fields_take_the_release_defaults():
    assert parse_mask_strategy("0") == [MaskStrategy(0, 0, 0, 0, 1, 0.0)]
    assert parse_mask_strategy("1,2,-3;0,0,0,4,5,0.5") == [
        MaskStrategy(1, 2, -3, 0, 1, 0.0),
        MaskStrategy(0, 0, 0, 4, 5, 0.5),
    ]
    assert parse_mask_strategy(None) == [] and parse_mask_strategy("") == []


@pytest.mark.parametrize("text", ["a", "0,0,0,0,1,0,9", "0,,1", "0,0.5", "0,0,0,0,0", "0,0,0,0,1,2", "-1"])
def test_malformed_strategies_name_the_format(text):
    with pytest.raises(ConfigError, match="mask strategy"):
        parse_mask_strategy(text)


def test_references_replace_frames_and_set_the_mask():
    z = torch.zeros(4, 6, 2, 2)
    image = torch.full((4, 1, 2, 2), 1.0)
    video = torch.arange(5.0).view(1, 5, 1, 1).expand(4, 5, 2, 2)
    strategies = parse_mask_strategy("0;0,1,-2,-2,2,0.3;1,0,0,3")
    placed, mask = apply_strategies(z, [image, video], strategies, loop=0)
    assert placed[0, :, 0, 0].tolist() == [1, 0, 0, 0, 3, 4]  # image at 0, last two video frames at the end
    assert mask.tolist() == pytest.approx([0, 1, 1, 1, 0.3, 0.3])
    # the loop-1 strategy is ignored at loop 0 and applied at loop 1
    placed, mask = apply_strategies(z, [image, video], strategies, loop=1)
    assert placed[0, :, 0, 0].tolist() == [0, 0, 0, 1, 0, 0] and mask.tolist() == [1, 1, 1, 0, 1, 1]


def test_lengths_are_clipped_and_starts_aligned():
    z = torch.zeros(1, 10, 1, 1)
    video = torch.arange(10.0).view(1, 10, 1, 1)
    placed, mask = apply_strategies(z, [video], parse_mask_strategy("0,0,0,8,5"), loop=0)
    assert placed.flatten().tolist()[8:] == [0, 1] and mask.tolist()[7:] == [1, 0, 0]
    placed, mask = apply_strategies(z, [video], parse_mask_strategy("0,0,3,7,2"), loop=0, align=5)
    assert placed.flatten().tolist()[5:7] == [5, 6] and mask.tolist()[5:7] == [0, 0]


def test_a_start_outside_the_reference_is_an_error():
    with pytest.raises(ConfigError, match="outside"):
        apply_strategies(torch.zeros(1, 4, 1, 1), [torch.zeros(1, 2, 1, 1)], parse_mask_strategy("0,0,5"), loop=0)
