"""Prompts as the release writes them, turned into typed requests.

A prompt line may carry, after its text, a JSON object with per-prompt references
(``a cat{"reference_path": "cat.png", "mask_strategy": "0"}``) and, for looped generation, a
prompt per loop (``|0|a cat |2|a dog``: loops 0 and 1 use "a cat", loop 2 on "a dog").
Scores are appended to the text as the 1.2 models were trained to read them.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from opensora.errors import ConfigError

_LOOP_MARK = re.compile(r"\|(\d+)\|")
CAMERA_MOTIONS = ("static", "pan right", "pan left", "tilt up", "tilt down", "zoom in", "zoom out")


@dataclass
class PromptRequest:
    """One prompt: its text per loop, and the references its mask strategy (1.x) or cond type (2.0) places."""

    loop_texts: dict[int, str]  # first loop index -> text used from that loop on
    reference_paths: list[str] = field(default_factory=list)
    mask_strategy: str | None = None
    cond_type: str | None = None  # Open-Sora 2.0's conditioning mode (t2v, i2v_head, ...); None: the config's
    # references already in pixels [3, T, H, W] in [-1, 1] (t2i2v's drawn first frame), before those of the files
    reference_images: list = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.text_for_loop(0)

    def text_for_loop(self, loop: int) -> str:
        starts = [start for start in self.loop_texts if start <= loop]
        return self.loop_texts[max(starts)] if starts else self.loop_texts[min(self.loop_texts)]

    def map_texts(self, fn) -> PromptRequest:
        texts = {start: fn(text) for start, text in self.loop_texts.items()}
        return replace(self, loop_texts=texts)

    def with_first_frame(self, frame, cond_type: str) -> PromptRequest:
        """This request conditioned on ``frame`` [3, 1, H, W] (in place of its reference files) by ``cond_type``."""
        return replace(self, reference_paths=[], reference_images=[frame], cond_type=cond_type)


def parse_prompt(line: str, reference_path: str | None = None, mask_strategy: str | None = None) -> PromptRequest:
    """A :class:`PromptRequest` from one prompt line; JSON in the line overrides the given defaults."""
    text, extra = split_json(line)
    reference_path = extra.get("reference_path", reference_path)
    mask_strategy = extra.get("mask_strategy", mask_strategy)
    references = [part.strip() for part in reference_path.split(";") if part.strip()] if reference_path else []
    return PromptRequest(split_loop_prompts(text), references, mask_strategy or None)


def split_json(line: str) -> tuple[str, dict]:
    """(text, options) from ``text{"key": value}``; a line without a trailing object has no options."""
    stripped = line.rstrip()
    if not stripped.endswith("}"):
        return line.strip(), {}
    for start in [i for i, char in enumerate(stripped) if char == "{"]:
        try:
            options = json.loads(stripped[start:])
        except json.JSONDecodeError:
            continue
        if not isinstance(options, dict):
            break
        unknown = set(options) - {"reference_path", "mask_strategy"}
        if unknown:
            raise ConfigError(f"unknown key(s) {sorted(unknown)} in the JSON after prompt {stripped[:40]!r} "
                              "(known: reference_path, mask_strategy)")  # fmt: skip
        return stripped[:start].strip(), {key: str(value) for key, value in options.items()}
    raise ConfigError(f"prompt {stripped[:60]!r} ends with '}}' but holds no valid JSON object")


def split_loop_prompts(text: str) -> dict[int, str]:
    """``"|0|a cat |2|a dog"`` -> ``{0: "a cat", 2: "a dog"}``; a plain text is ``{0: text}``."""
    if not text.startswith("|"):
        return {0: text}
    parts = _LOOP_MARK.split(text)
    if parts[0].strip():
        raise ConfigError(f"malformed per-loop prompt {text[:60]!r} (expected '|0|text |2|text')")
    texts = {int(start): body.strip() for start, body in zip(parts[1::2], parts[2::2], strict=True)}
    if 0 not in texts:
        raise ConfigError(f"per-loop prompt {text[:60]!r} has no text for loop 0 ('|0|...')")
    return texts


def append_scores(text: str, aes: float | None, flow: float | None, camera_motion: str | None) -> str:
    """The 1.2 prompt suffixes: ``aesthetic score: 6.5.``, ``motion score: 4.0.``, ``camera motion: pan left.``"""
    if aes is not None and "aesthetic score:" not in text:
        text = f"{text} aesthetic score: {aes:.1f}."
    if flow is not None and "motion score:" not in text:
        text = f"{text} motion score: {flow:.1f}."
    if camera_motion is not None and "camera motion:" not in text:
        text = f"{text} camera motion: {camera_motion}."
    return text


def check_camera_motion(camera_motion: str | None) -> None:
    if camera_motion is not None and camera_motion not in CAMERA_MOTIONS:
        raise ConfigError(f"unknown camera motion {camera_motion!r} (known: {', '.join(CAMERA_MOTIONS)})")


def read_prompt_file(path: str | Path) -> list[str]:
    """Prompts from a text file (one per line) or a CSV file with a ``text`` column."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"prompt file '{path}' does not exist")
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if "text" not in (reader.fieldnames or []):
                raise ConfigError(f"prompt file '{path}' has no 'text' column (columns: {reader.fieldnames})")
            return [row["text"].strip() for row in reader if (row["text"] or "").strip()]
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def prompt_file_stem(text: str, max_length: int = 100) -> str:
    """A file name for ``--prompt-as-path``: the prompt, path separators and odd characters replaced."""
    name = re.sub(r"[^\w\-. ,]+", "_", text).strip(" ._")
    return name[:max_length] or "prompt"
