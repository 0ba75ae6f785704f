"""Reading clips from real encoded files: which frames come back, their size, values, fps and errors."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from PIL import Image

from opensora.datasets.transforms import video_transform
from opensora.datasets.video_io import VideoClip, VideoReadError, probe, read_clip
from opensora.errors import ConfigError
from tests.datasets.media import gray_frames, index_frames, read_index, write_image, write_video


def indices_of(clip: VideoClip) -> list[int]:
    return [read_index(frame) for frame in clip.frames.numpy()]


def assert_one_line_error(call, *words: str) -> None:
    with pytest.raises(VideoReadError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


@pytest.mark.parametrize(
    "name, codec, fps",
    [
        ("a.mp4", "libx264", 24),
        ("b.mkv", "libx264", 25),  # Matroska records no frame count: counted from packets
        ("c.avi", "mpeg4", 30),
        ("d.mov", "mpeg4", Fraction(30000, 1001)),
        ("e.h264", "libx264", 25),  # a raw stream: no timestamps, no seeking, so decoded from the top
        ("f.ts", "libx264", 25),  # MPEG-TS seeks are coarse: a seek past the window restarts from the top
    ],
)
def test_reads_the_requested_frames(tmp_path, name, codec, fps):
    path = write_video(tmp_path / name, index_frames(60, 32, 64), fps, codec=codec, gop=12)
    info = probe(path)
    assert (info.num_frames, info.height, info.width, info.rotation, info.is_image) == (60, 32, 64, 0, False)
    assert info.fps == pytest.approx(float(fps))

    clip = read_clip(path, num_frames=5, start=20)
    assert clip.frames.dtype == torch.uint8 and clip.frames.shape == (5, 32, 64, 3)
    assert indices_of(clip) == [20, 21, 22, 23, 24]
    assert clip.start == 20 and clip.fps == pytest.approx(float(fps)) and clip.source_fps == clip.fps

    every_third = read_clip(path, num_frames=6, frame_interval=3, start=41)
    assert indices_of(every_third) == [41, 44, 47, 50, 53, 56]
    assert every_third.fps == pytest.approx(float(fps) / 3) and every_third.source_fps == pytest.approx(float(fps))

    assert indices_of(read_clip(path, num_frames=4)) == [0, 1, 2, 3]  # no start, no rng: the beginning
    assert indices_of(read_clip(path, num_frames=3, start=57)) == [57, 58, 59]  # the very end


def test_short_window_near_the_end_decodes_only_a_little(tmp_path):
    path = write_video(tmp_path / "long.mp4", index_frames(300, 32, 64), 30, gop=30)
    clip = read_clip(path, num_frames=8, start=290)
    assert indices_of(clip) == list(range(290, 298))
    assert 8 <= clip.decoded_frames <= 40, clip.decoded_frames  # one GOP at most, not 300
    spread = read_clip(path, num_frames=4, frame_interval=10, start=200)
    assert indices_of(spread) == [200, 210, 220, 230]
    assert spread.decoded_frames <= 31 + 30


def test_random_temporal_crop_follows_the_rng(tmp_path):
    path = write_video(tmp_path / "v.mp4", index_frames(40, 32, 64), 24, gop=8)
    starts = set()
    for seed in range(12):
        clip = read_clip(path, num_frames=6, frame_interval=2, rng=np.random.default_rng(seed))
        again = read_clip(path, num_frames=6, frame_interval=2, rng=np.random.default_rng(seed))
        assert clip.start == again.start and torch.equal(clip.frames, again.frames)
        assert 0 <= clip.start <= 40 - 11
        assert indices_of(clip) == list(range(clip.start, clip.start + 12, 2))
        starts.add(clip.start)
    assert len(starts) > 4
    assert read_clip(path, 6, start=3, rng=np.random.default_rng(0)).start == 3  # an explicit start wins


@pytest.mark.parametrize("height, width", [(32, 48), (48, 32), (36, 52), (240, 426)])
def test_sizes_and_values_survive_encoding(tmp_path, height, width):
    levels = [16, 80, 128, 200, 235]
    for codec, name in (("libx264", "v.mp4"), ("mpeg4", "v.avi")):
        path = write_video(tmp_path / name, gray_frames(levels, height, width), 25, codec=codec)
        clip = read_clip(path, num_frames=len(levels))
        assert clip.frames.shape == (len(levels), height, width, 3)
        means = clip.frames.float().mean(dim=(1, 2, 3))
        assert torch.allclose(means, torch.tensor(levels, dtype=torch.float32), atol=3), (codec, means)
        out = video_transform(clip.frames, (16, 16))
        assert out.shape == (3, len(levels), 16, 16)


def test_rotation_metadata_is_applied(tmp_path):
    stored = np.zeros((4, 32, 64, 3), np.uint8)
    stored[:, :, :16] = 255  # a white band on the stored frame's left edge
    for rotation, white_rows in ((90, slice(48, 64)), (-90, slice(0, 16))):
        path = write_video(tmp_path / f"r{rotation}.mp4", stored, 24, rotation=rotation)
        info = probe(path)
        assert (info.height, info.width, info.rotation) == (64, 32, rotation % 360)
        frames = read_clip(path, num_frames=4).frames
        assert frames.shape == (4, 64, 32, 3)
        # counter-clockwise by 90 moves the left edge to the bottom; clockwise to the top
        band = torch.zeros(64, dtype=torch.bool)
        band[white_rows] = True
        row_is_white = frames[0].float().mean(dim=(1, 2)) > 127
        assert torch.equal(row_is_white, band)
    upside_down = write_video(tmp_path / "r180.mp4", stored, 24, rotation=180)
    frames = read_clip(upside_down, num_frames=1).frames
    assert frames.shape == (1, 32, 64, 3) and frames[0, :, 48:].float().mean() > 200


def test_one_frame_video(tmp_path):
    path = write_video(tmp_path / "one.mp4", index_frames(1, 32, 64), 24)
    assert probe(path).num_frames == 1
    assert read_clip(path, num_frames=1).frames.shape == (1, 32, 64, 3)
    assert_one_line_error(lambda: read_clip(path, num_frames=2), "one.mp4", "too short")


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".bmp"])
def test_images_are_one_frame_clips(tmp_path, suffix):
    rows, cols = np.mgrid[0:30, 0:42]
    array = np.stack([rows * 8, cols * 6, np.full_like(rows, 90)], axis=-1).astype(np.uint8)  # smooth: JPEG-friendly
    path = write_image(tmp_path / f"image{suffix}", array)
    info = probe(path)
    assert (info.num_frames, info.height, info.width, info.fps, info.is_image) == (1, 30, 42, 0.0, True)
    clip = read_clip(path, num_frames=16)
    assert clip.frames.shape == (1, 30, 42, 3) and clip.frames.dtype == torch.uint8
    error = (clip.frames[0].float() - torch.from_numpy(array).float()).abs().mean()
    assert error < (0.01 if suffix in (".png", ".bmp") else 3), error


def test_image_exif_orientation_is_applied(tmp_path):
    array = np.zeros((30, 60, 3), np.uint8)
    array[:, :10] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    path = tmp_path / "phone.jpg"
    Image.fromarray(array).save(path, quality=95, exif=exif)
    assert (probe(path).height, probe(path).width) == (60, 30)
    frame = read_clip(path, 1).frames[0]
    assert frame[:10].float().mean() > 200 and frame[20:].float().mean() < 50  # left edge now on top


def test_missing_and_corrupt_files_raise_one_line(tmp_path):
    good = write_video(tmp_path / "good.mp4", index_frames(30, 32, 64), 24)
    data = good.read_bytes()
    missing = tmp_path / "missing.mp4"
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    truncated = tmp_path / "truncated.mp4"  # the index (moov) is written last, so it is lost
    truncated.write_bytes(data[: len(data) // 2])
    bad_image = tmp_path / "bad.png"
    bad_image.write_bytes(b"not a png at all")
    empty = tmp_path / "empty.mkv"  # header only: a video stream with no packets
    mkv = write_video(tmp_path / "full.mkv", index_frames(30, 32, 64), 24).read_bytes()
    empty.write_bytes(mkv[:700])
    for path, word in ((missing, "no such file"), (garbage, "cannot"), (truncated, "cannot"), (bad_image, "cannot")):
        assert_one_line_error(lambda p=path: probe(p), path.name, word)
        assert_one_line_error(lambda p=path: read_clip(p, 4), path.name, word)
    assert_one_line_error(lambda: probe(empty), "empty.mkv", "no frames")


def test_window_past_the_data_raises(tmp_path):
    path = write_video(tmp_path / "v.mp4", index_frames(60, 32, 64), 24, options={"movflags": "faststart"})
    assert_one_line_error(lambda: read_clip(path, num_frames=10, start=55), "v.mp4", "too short")
    assert_one_line_error(lambda: read_clip(path, num_frames=31, frame_interval=2), "too short")
    # the header (first) survives truncation and still promises 60 frames; the data does not
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.8)])
    assert probe(cut).num_frames == 60
    assert_one_line_error(lambda: read_clip(cut, num_frames=10, start=50), "cut.mp4")


def test_bad_arguments():
    with pytest.raises(ValueError):
        read_clip("whatever.mp4", num_frames=0)
    with pytest.raises(ValueError):
        read_clip("whatever.mp4", num_frames=2, frame_interval=0)


# --- video_transform --------------------------------------------------------------------------------


def test_transform_shape_range_and_layout():
    frames = torch.zeros(3, 24, 40, 3, dtype=torch.uint8)
    frames[1] = 255
    frames[2, ..., 0] = 255  # red
    for mode in ("resize_crop", "center", "random"):
        out = video_transform(frames, (16, 16), mode=mode, rng=np.random.default_rng(0))
        assert out.shape == (3, 3, 16, 16) and out.dtype == torch.float32  # (C, T, h, w)
        assert torch.allclose(out[:, 0], torch.tensor(-1.0)) and torch.allclose(out[:, 1], torch.tensor(1.0))
        assert torch.allclose(out[:, 2], torch.tensor([1.0, -1.0, -1.0])[:, None, None])


def test_resize_crop_takes_the_centre_and_antialiases():
    frames = torch.zeros(1, 20, 40, 3, dtype=torch.uint8)
    frames[:, :, 10:30] = 255  # only the middle 20 x 20 is white
    out = video_transform(frames, (10, 10))
    assert torch.allclose(out, torch.ones_like(out))
    # a one-pixel checkerboard shrunk 4x must average to grey, not alias to black or white
    board = ((torch.arange(32)[:, None] + torch.arange(32)) % 2 * 255).to(torch.uint8)
    small = video_transform(board[None, :, :, None].expand(1, 32, 32, 3).contiguous(), (8, 8))
    assert small.abs().max() < 0.05
    bigger = video_transform(frames[:, :, 10:30], (30, 30))  # upscaling works too
    assert bigger.shape == (3, 1, 30, 30) and torch.allclose(bigger, torch.ones_like(bigger))


def test_center_mode_matches_short_sides_then_crops_or_pads():
    frames = torch.arange(8 * 8, dtype=torch.uint8).reshape(1, 8, 8, 1).expand(1, 8, 8, 3).contiguous()
    # short sides already match (8 == min(8, 10)): no resize, crop the long side, pad the other
    padded = video_transform(frames, (8, 10), mode="center")
    assert padded.shape == (3, 1, 8, 10)
    assert torch.equal(((padded[0, 0, :, 1:9] + 1) * 127.5).round().to(torch.uint8), frames[0, ..., 0])
    assert (padded[:, :, :, :1] == -1).all() and (padded[:, :, :, 9:] == -1).all()
    wide = torch.arange(8 * 16, dtype=torch.uint8).reshape(1, 8, 16, 1).expand(1, 8, 16, 3).contiguous()
    crop = video_transform(wide, (8, 8), mode="center")
    assert torch.equal(((crop[0, 0] + 1) * 127.5).round().to(torch.uint8), wide[0, :, 4:12, 0])
    half = video_transform(wide, (4, 4), mode="center")  # 8x16 -> 4x8, then the centre 4x4
    assert half.shape == (3, 1, 4, 4)


def test_random_mode_follows_the_rng():
    frames = (torch.arange(64, dtype=torch.uint8) * 4).reshape(1, 1, 64, 1).expand(2, 16, 64, 3).contiguous()
    first = video_transform(frames, (8, 8), mode="random", rng=np.random.default_rng(1))
    again = video_transform(frames, (8, 8), mode="random", rng=np.random.default_rng(1))
    assert torch.equal(first, again)
    crops = {video_transform(frames, (8, 8), mode="random", rng=np.random.default_rng(s))[0, 0, 0, 0].item()
             for s in range(10)}  # fmt: skip
    assert len(crops) > 3  # the crop moves along the wide axis
    assert torch.equal(first[:, 0], first[:, 1])  # one crop for the whole clip


def test_transform_rejects_bad_input():
    with pytest.raises(ConfigError, match="unknown video transform mode 'zoom'"):
        video_transform(torch.zeros(1, 8, 8, 3, dtype=torch.uint8), (4, 4), mode="zoom")
    with pytest.raises(ValueError, match="uint8"):
        video_transform(torch.zeros(1, 8, 8, 3), (4, 4))
