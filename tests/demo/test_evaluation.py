"""The prompt-following evaluation: an oracle that renders the caption scores 100%, chance does not."""

from __future__ import annotations

import numpy as np
import torch

from opensora.demo.evaluation import accuracy, run_trials
from opensora.demo.world import COLOURS, MOTIONS, SHAPES, random_scene, render
from opensora.inference.pipeline import VideoSize


class Oracle:
    """Renders exactly what the caption says (or, with ``wrong_motion``, every object standing still)."""

    def __init__(self, wrong_motion: bool = False) -> None:
        self.wrong_motion = wrong_motion

    def generate(self, requests, size, seeds, progress=False):
        videos = []
        for request, seed in zip(requests, seeds, strict=True):
            words = request.text.split()  # "a {colour} {shape} {moving left | standing still}"
            colour, shape, motion = words[1], words[2], " ".join(words[3:5])
            assert colour in COLOURS and shape in SHAPES and motion in MOTIONS
            motion = "standing still" if self.wrong_motion else motion
            scene = random_scene(np.random.default_rng(seed), size.height, size.width, size.num_frames,
                                 triple=(colour, shape, motion), allow_held_out=True)  # fmt: skip
            frames = torch.from_numpy(render(scene)).permute(3, 0, 1, 2).float() / 127.5 - 1  # (3, T, H, W)
            videos.append(frames)
        return torch.stack(videos)


def test_an_oracle_scores_everything_and_groups_are_separate():
    trials = run_trials(Oracle(), VideoSize(17, 64, 64, 12), seeds=[0], batch_size=16)
    report = accuracy(trials)
    assert report["held_out"] == {"colour": 1.0, "shape": 1.0, "motion": 1.0, "n": 15}
    assert report["seen"] == {"colour": 1.0, "shape": 1.0, "motion": 1.0, "n": 60}


def test_a_model_that_ignores_motion_is_caught():
    report = accuracy(run_trials(Oracle(wrong_motion=True), VideoSize(17, 64, 64, 12), seeds=[1], include_seen=False))
    assert report["held_out"]["colour"] == 1.0 and report["held_out"]["shape"] == 1.0
    assert report["held_out"]["motion"] == 3 / 15  # only the "standing still" prompts
