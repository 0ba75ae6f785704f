"""Prompt following of a model trained on the demo world, measured by image analysis.

For each (colour, shape, motion) triple and seed the model samples a video from the canonical
caption; :func:`opensora.demo.analysis.read_video` reads the attributes back. Accuracy is
reported per attribute, separately for triples seen in training and the held-out ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from opensora.demo.analysis import Reading, read_video
from opensora.demo.world import caption, held_out_triples, seen_triples
from opensora.inference.media import to_uint8_frames
from opensora.inference.pipeline import VideoPipeline, VideoSize
from opensora.inference.prompts import PromptRequest

ATTRIBUTES = ("colour", "shape", "motion")


@dataclass(frozen=True)
class Trial:
    triple: tuple[str, str, str]
    seed: int
    held_out: bool
    reading: Reading

    def correct(self, attribute: str) -> bool:
        return getattr(self.reading, attribute) == self.triple[ATTRIBUTES.index(attribute)]


def run_trials(
    pipeline: VideoPipeline,
    size: VideoSize,
    seeds: Iterable[int],
    batch_size: int = 8,
    include_seen: bool = True,
) -> list[Trial]:
    """Sample every held-out (and seen) triple once per seed and read the videos back."""
    cases = [(t, True) for t in held_out_triples()] + ([(t, False) for t in seen_triples()] if include_seen else [])
    jobs = [(triple, held, seed) for seed in seeds for triple, held in cases]
    trials = []
    for start in range(0, len(jobs), batch_size):
        batch = jobs[start : start + batch_size]
        requests = [PromptRequest({0: caption(*triple)}) for triple, _, _ in batch]
        with torch.no_grad():
            videos = pipeline.generate(requests, size, [seed for _, _, seed in batch], progress=False)
        for (triple, held, seed), video in zip(batch, videos, strict=True):
            trials.append(Trial(triple, seed, held, read_video(to_uint8_frames(video))))
    return trials


def accuracy(trials: list[Trial]) -> dict[str, dict[str, float]]:
    """{"held_out" | "seen": {attribute: fraction correct}} over the trials of each group."""
    report = {}
    for group, held in (("held_out", True), ("seen", False)):
        chosen = [t for t in trials if t.held_out == held]
        if chosen:
            report[group] = {a: sum(t.correct(a) for t in chosen) / len(chosen) for a in ATTRIBUTES}
            report[group]["n"] = len(chosen)
    return report
