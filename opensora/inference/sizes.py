"""What one generation asks for (size, frame rate, loop settings), in a module light enough for the
config schema to import without the models."""

from __future__ import annotations

from dataclasses import dataclass

from opensora.errors import ConfigError

IMAGE_FPS = 120  # the frame rate the 1.2 models were conditioned on for still images
DEFAULT_FPS = 24  # the frame rate a video is conditioned on (and saved at) unless one is asked for


@dataclass(frozen=True)
class VideoSize:
    num_frames: int
    height: int
    width: int
    fps: float = DEFAULT_FPS

    @property
    def model_fps(self) -> float:
        return IMAGE_FPS if self.num_frames == 1 else self.fps


@dataclass(frozen=True)
class LoopSettings:
    """Long generation: ``loops`` segments, each conditioned on the previous one's last frames."""

    loops: int = 1
    condition_frame_length: int = 5  # latent frames shared by consecutive segments
    condition_frame_edit: float = 0.0  # edit ratio of those frames (0 keeps them exactly)
    align: int | None = None  # snap reference and target starts to multiples of this many latent frames


def check_loop(loop: LoopSettings, latent_frames: int) -> None:
    """Loop settings that fit segments of ``latent_frames`` latent frames."""
    if loop.loops < 1:
        raise ConfigError(f"loop must be >= 1, got {loop.loops}")
    if loop.loops > 1 and not 1 <= loop.condition_frame_length < latent_frames:
        raise ConfigError(
            f"condition_frame_length {loop.condition_frame_length} must be between 1 and the "
            f"{latent_frames - 1} latent frames after the first of a {latent_frames}-latent-frame segment"
        )
