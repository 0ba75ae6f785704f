"""Reading a demo-world video back with plain image analysis: colour, shape and motion.

The background is the colour of the frame's border; object pixels are those far from it. Colour
is the nearest palette colour to the object's mean; shape comes from how much of its bounding
box the object fills (square 1.0, circle 0.79, triangle 0.5); motion from the track of its
centroid over the clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from opensora.demo.world import COLOURS

FILL_RATIOS = {"square": 1.0, "circle": np.pi / 4, "triangle": 0.5}
_OBJECT_DISTANCE = 60.0  # RGB distance from the background that counts as object
_STILL_FRACTION = 0.08  # total displacement below this fraction of the frame size is "standing still"


@dataclass(frozen=True)
class Reading:
    colour: str | None
    shape: str | None
    motion: str | None
    found_frames: int  # frames in which an object was found


def _background(frame: np.ndarray) -> np.ndarray:
    border = np.concatenate([frame[0], frame[-1], frame[:, 0], frame[:, -1]]).astype(np.float32)
    return np.median(border, axis=0)


def object_mask(frame: np.ndarray) -> np.ndarray:
    """Boolean (H, W): pixels far from the border's colour."""
    distance = np.linalg.norm(frame.astype(np.float32) - _background(frame), axis=-1)
    return distance > _OBJECT_DISTANCE


def nearest_colour(rgb: np.ndarray) -> str:
    names = list(COLOURS)
    palette = np.array([COLOURS[name] for name in names], dtype=np.float32)
    return names[int(np.argmin(np.linalg.norm(palette - rgb, axis=1)))]


def nearest_shape(fill: float) -> str:
    return min(FILL_RATIOS, key=lambda name: abs(FILL_RATIOS[name] - fill))


def classify_motion(track: list[tuple[float, float]], height: int, width: int) -> str:
    """The motion whose direction best matches the centroid's displacement (first third to last third)."""
    points = np.array(track)
    third = max(1, len(points) // 3)
    dy, dx = points[-third:].mean(axis=0) - points[:third].mean(axis=0)
    if abs(dy) < _STILL_FRACTION * height and abs(dx) < _STILL_FRACTION * width:
        return "standing still"
    if abs(dx) / width >= abs(dy) / height:
        return "moving right" if dx > 0 else "moving left"
    return "moving down" if dy > 0 else "moving up"


def read_video(frames: np.ndarray) -> Reading:
    """Analyse uint8 frames (T, H, W, 3)."""
    T, H, W = frames.shape[:3]
    colours, fills, track = [], [], []
    for frame in frames:
        mask = object_mask(frame)
        if mask.sum() < 4:
            continue
        ys, xs = np.nonzero(mask)
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        fills.append(mask.sum() / box)
        colours.append(frame[mask].astype(np.float32).mean(axis=0))
        track.append((ys.mean(), xs.mean()))
    if not track:
        return Reading(None, None, None, 0)
    colour = nearest_colour(np.median(np.array(colours), axis=0))
    shape = nearest_shape(float(np.median(fills)))
    motion = classify_motion(track, H, W) if len(track) >= 2 else None
    return Reading(colour, shape, motion, len(track))
