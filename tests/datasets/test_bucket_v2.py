"""Open-Sora 2.0's training buckets (256px, 768px, 1024px): the release's sizes, and samples land in them."""

from __future__ import annotations

import pytest

from opensora.datasets import Bucket
from opensora.datasets.aspect import BUCKET_PIXELS_V2, BUCKET_RESOLUTIONS, bucket_table_v2, get_image_size_v2


@pytest.mark.parametrize("name", list(BUCKET_PIXELS_V2))
def test_sizes_are_whole_patches_near_the_pixel_count(name: str) -> None:
    pixels, table = BUCKET_RESOLUTIONS[name]
    assert pixels == BUCKET_PIXELS_V2[name]
    for key, (h, w) in table.items():
        assert h % 16 == 0 and w % 16 == 0 and abs(h * w - pixels) < 0.1 * pixels, (key, h, w)
    assert {(w, h) for h, w in table.values()} == set(table.values())  # every size has its transpose
    assert table["0.56"] == table["1.78"][::-1]


def test_release_sizes() -> None:
    small, large = bucket_table_v2(256 * 256), bucket_table_v2(768 * 768)
    assert small["0.56"] == get_image_size_v2("256px", "16:9") == (192, 336)  # as sampled
    assert small["1.00"] == (256, 256) and large["0.56"] == (576, 1024) and large["1.00"] == (768, 768)
    # 1.85:1 and 5:8 round to the sizes of 16:9 and 9:16 at 256px, so the release leaves them out there
    assert "0.54" not in small and "1.60" not in small and len(small) == 11
    assert large["0.54"] == (560, 1056) and len(large) == 15


def test_a_video_lands_in_its_2_0_bucket() -> None:
    bucket = Bucket({"256px": {1: (1.0, 4), 33: (1.0, 2)}, "768px": {1: (1.0, 2)}})
    assignment = bucket.assign([40, 1, 1], [256, 720, 1080], [455, 1280, 1080])
    ids = assignment.ids()
    assert [str(b) for b in ids] == ["256px/33/0.56", "768px/1/0.56", "768px/1/1.00"]
    assert bucket.image_size(ids[0]) == (192, 336) and bucket.image_size(ids[2]) == (768, 768)
