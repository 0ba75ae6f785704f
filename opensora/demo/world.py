"""A tiny procedural world: one coloured shape moving over a plain background.

Every clip is fully described by a :class:`Scene` (colour, shape, motion, background, size, path)
and rendered deterministically from it. Some (colour, shape, motion) triples never appear in
training (:func:`is_held_out`), so a model can be asked to compose attributes it only saw apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 230),
    "yellow": (235, 210, 40),
    "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle")
MOTIONS = ("moving left", "moving right", "moving up", "moving down", "standing still")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (15, 15, 15),
    "gray": (105, 105, 105),
    "navy": (20, 28, 70),
    "brown": (80, 55, 35),
}
DIRECTIONS = {
    "moving left": (0, -1),
    "moving right": (0, 1),
    "moving up": (-1, 0),
    "moving down": (1, 0),
    "standing still": (0, 0),
}  # fmt: skip  (dy, dx)
_SUPERSAMPLE = 4  # shapes are drawn at 4x and averaged down, so their edges are smooth


def is_held_out(colour: str, shape: str, motion: str) -> bool:
    """The 15 triples no training clip shows: (colour + 2*shape + motion) mod 5 == 0, by list index."""
    c, s, m = list(COLOURS).index(colour), SHAPES.index(shape), MOTIONS.index(motion)
    return (c + 2 * s + m) % 5 == 0


def held_out_triples() -> list[tuple[str, str, str]]:
    return [(c, s, m) for c in COLOURS for s in SHAPES for m in MOTIONS if is_held_out(c, s, m)]


def seen_triples() -> list[tuple[str, str, str]]:
    return [(c, s, m) for c in COLOURS for s in SHAPES for m in MOTIONS if not is_held_out(c, s, m)]


def caption(colour: str, shape: str, motion: str, background: str | None = None) -> str:
    """The canonical caption: ``a red circle moving left`` (``... on a gray background``)."""
    text = f"a {colour} {shape} {motion}"
    return f"{text} on a {background} background" if background else text


_TEMPLATES = (
    "a {c} {s} {m}",
    "a {c} {s} {m} on a {b} background",
    "a {c} {s} is {m}",
    "one {c} {s} {m}",
    "a {c} {s} {m}, plain {b} background",
    "video of a {c} {s} {m}",
)


def training_caption(colour: str, shape: str, motion: str, background: str, rng: np.random.Generator) -> str:
    """A caption with varied wording around the same attribute words."""
    template = _TEMPLATES[int(rng.integers(len(_TEMPLATES)))]
    return template.format(c=colour, s=shape, m=motion, b=background)


@dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    motion: str
    background: str
    height: int
    width: int
    num_frames: int
    radius: float  # half the object's extent, in pixels
    start: tuple[float, float]  # (y, x) of the centre in the first frame
    speed: float  # pixels per frame along the motion direction

    def centre(self, frame: int) -> tuple[float, float]:
        dy, dx = DIRECTIONS[self.motion]
        return self.start[0] + dy * self.speed * frame, self.start[1] + dx * self.speed * frame


def random_scene(
    rng: np.random.Generator,
    height: int,
    width: int,
    num_frames: int,
    triple: tuple[str, str, str] | None = None,
    allow_held_out: bool = False,
) -> Scene:
    """A scene whose whole path stays in the frame; the triple is drawn from the seen ones unless given."""
    if triple is None:
        pool = seen_triples() if not allow_held_out else [*seen_triples(), *held_out_triples()]
        triple = pool[int(rng.integers(len(pool)))]
    colour, shape, motion = triple
    background = list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
    short = min(height, width)
    radius = short * rng.uniform(0.14, 0.18)
    dy, dx = DIRECTIONS[motion]
    span = height if dy else width
    # cover about 40-55% of the frame over the clip, whatever its length
    travel = 0.0 if motion == "standing still" else span * rng.uniform(0.40, 0.55)
    speed = travel / max(num_frames - 1, 1)
    margin = radius + 1
    lo_y, hi_y = margin + max(0.0, -dy * travel), height - margin - max(0.0, dy * travel)
    lo_x, hi_x = margin + max(0.0, -dx * travel), width - margin - max(0.0, dx * travel)
    start = (float(rng.uniform(lo_y, max(lo_y, hi_y))), float(rng.uniform(lo_x, max(lo_x, hi_x))))
    return Scene(colour, shape, motion, background, height, width, num_frames, float(radius), start, float(speed))


def shape_mask(shape: str, height: int, width: int, centre: tuple[float, float], radius: float) -> np.ndarray:
    """Coverage in [0, 1] of each pixel by the shape, float32 (H, W)."""
    k = _SUPERSAMPLE
    ys = (np.arange(height * k) + 0.5) / k
    xs = (np.arange(width * k) + 0.5) / k
    y, x = np.meshgrid(ys - centre[0], xs - centre[1], indexing="ij")
    if shape == "circle":
        inside = x**2 + y**2 <= radius**2
    elif shape == "square":
        side = radius * 0.886  # the area of the circle, so size does not tell the shapes apart
        inside = (np.abs(x) <= side) & (np.abs(y) <= side)
    elif shape == "triangle":  # apex up, base down: fills half of its bounding box
        half = radius * 1.15
        inside = (y >= -half) & (y <= half) & (np.abs(x) <= (y + half) / 2)
    else:
        raise ValueError(f"unknown shape {shape!r} (known: {', '.join(SHAPES)})")
    return inside.reshape(height, k, width, k).mean(axis=(1, 3)).astype(np.float32)


def render(scene: Scene) -> np.ndarray:
    """uint8 frames (T, H, W, 3)."""
    background = np.array(BACKGROUNDS[scene.background], dtype=np.float32)
    colour = np.array(COLOURS[scene.colour], dtype=np.float32)
    frames = np.empty((scene.num_frames, scene.height, scene.width, 3), dtype=np.uint8)
    for t in range(scene.num_frames):
        cover = shape_mask(scene.shape, scene.height, scene.width, scene.centre(t), scene.radius)[..., None]
        frames[t] = np.round(background * (1 - cover) + colour * cover).astype(np.uint8)
    return frames


def motion_score(frames: np.ndarray) -> float:
    """How much a clip (T, H, W, 3) uint8 moves: the mean absolute change of luma (0-255) between
    consecutive frames, the quantity VMAF's motion feature measures (on blurred frames), which
    Open-Sora 2.0 appends to captions; NaN for a single frame."""
    if len(frames) < 2:
        return float("nan")
    luma = frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # (T, H, W)
    return float(np.abs(np.diff(luma, axis=0)).mean())
