"""The interactive front end's logic (size choices, prompts, one generation) on the tiny random model."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from opensora.config import load_config
from opensora.datasets.video_io import probe, read_clip
from opensora.errors import ConfigError
from opensora.inference.config import InferenceConfig
from opensora.inference.interactive import (
    GenerationRequest,
    InteractiveGenerator,
    Scores,
    duration_frames,
    refine_available,
    size_choices,
)
from opensora.inference.pipeline import VideoSize

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "opensora-v1-2" / "inference" / "tiny.py"


@pytest.fixture(scope="module")
def tiny_cfg() -> InferenceConfig:
    return load_config(TINY, InferenceConfig)


@pytest.fixture(scope="module")
def generator(tiny_cfg: InferenceConfig, tmp_path_factory: pytest.TempPathFactory) -> InteractiveGenerator:
    return InteractiveGenerator.from_config(tiny_cfg, tmp_path_factory.mktemp("results"))


def _image(generator: InteractiveGenerator, **fields) -> np.ndarray:
    """A one-frame sample as uint8 (H, W, 3): the cheapest full pass through the pipeline."""
    fields = {"prompt": "a red ball", "size": generator.choices.size("144p", "1:1", "image"), "seed": 3, **fields}
    result = generator.generate(GenerationRequest(**fields), progress=False)
    assert result.path.suffix == ".png"
    return np.asarray(Image.open(result.path))


def test_choices_of_a_variable_size_model_default_to_the_config(tiny_cfg, generator):
    choices = generator.choices
    # the tiny config asks for 17 frames of 128x128: offered as itself, first; ratios default to the closest
    assert (choices.resolution, choices.aspect_ratio, choices.duration) == ("128x128", "1:1", "17 frames")
    assert choices.resolutions == ("128x128", "144p", "240p", "360p", "480p", "720p")
    assert choices.size("128x128", "1:1", "17 frames") == VideoSize(17, 128, 128, 24)
    assert choices.durations == ("image", "17 frames", "2s", "4s", "8s", "16s")
    assert choices.size("144p", "1:1", "17 frames") == VideoSize(17, 192, 192, 24)
    assert choices.size("240p", "9:16", "2s") == VideoSize(51, 240, 426, 24)
    assert choices.size("144p", "16:9", "image").num_frames == 1
    assert (generator.sampling_steps, generator.guidance_scale) == (10, 7.0)


def test_release_config_keeps_its_resolution_and_ratio(tiny_cfg):
    cfg = InferenceConfig(**{**vars(tiny_cfg), "resolution": "720p", "aspect_ratio": "3:4", "num_frames": "4s",
                             "image_size": None})  # fmt: skip
    choices = size_choices(cfg, SimpleNamespace(model=SimpleNamespace(), adapter=None))
    assert (choices.resolution, choices.aspect_ratio, choices.duration) == ("720p", "3:4", "4s")
    assert choices.durations == ("image", "2s", "4s", "8s", "16s")


def test_fixed_size_model_offers_only_its_size(tiny_cfg):
    cfg = InferenceConfig(**{**vars(tiny_cfg), "image_size": (64, 96), "num_frames": 16})
    choices = size_choices(cfg, SimpleNamespace(model=SimpleNamespace(input_size=(16, 8, 12))))
    assert (choices.resolutions, choices.aspect_ratios, choices.durations) == (("64x96",), (), ("16 frames",))
    assert choices.size("64x96", None, "16 frames") == VideoSize(16, 64, 96, 24)
    with pytest.raises(ConfigError, match="not offered"):
        choices.size("144p", "1:1", "16 frames")


@pytest.mark.parametrize(
    ("resolution", "ratio", "duration", "message"),
    [("999p", "1:1", "2s", "resolution '999p'.*144p, 240p"), ("144p", "7:5", "2s", "aspect ratio '7:5'"),
     ("144p", "1:1", "3 hours", "duration")],
)  # fmt: skip
def test_choices_reject_what_the_model_does_not_offer(generator, resolution, ratio, duration, message):
    with pytest.raises(ConfigError, match=message):
        generator.choices.size(resolution, ratio, duration)


def test_duration_names():
    assert [duration_frames(name) for name in ("image", "17 frames", "2s", "16s")] == [1, 17, 51, 408]


def test_scores_reach_the_prompt_only_when_switched_on(generator):
    size = generator.choices.size("144p", "1:1", "image")
    plain = GenerationRequest("  a   cat ", size, 0)
    assert generator.prompt_text(plain) == "a cat"
    scored = GenerationRequest("a cat", size, 0, scores=Scores(aes=6.5, flow=4, camera_motion="pan left"))
    assert generator.prompt_text(scored) == "a cat aesthetic score: 6.5. motion score: 4.0. camera motion: pan left."
    with pytest.raises(ConfigError, match="camera motion"):
        generator.prompt_text(GenerationRequest("a cat", size, 0, scores=Scores(camera_motion="spin")))
    with pytest.raises(ConfigError, match="enter a prompt"):
        generator.prompt_text(GenerationRequest("   ", size, 0))


def test_refinement_without_a_key_is_one_clear_error(generator, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert not refine_available()
    request = GenerationRequest("a cat", generator.choices.size("144p", "1:1", "image"), 0, refine=True)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY|openai"):
        generator.prompt_text(request)


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"sampling_steps": 0}, "sampling steps"), ({"guidance_scale": float("nan")}, "guidance"),
     ({"seed": -1}, "seed"), ({"reference_path": "/no/such/image.png"}, "does not exist")],
)  # fmt: skip
def test_bad_requests_fail_in_one_line(generator, fields, message):
    with pytest.raises(ConfigError, match=message):
        _image(generator, **fields)


def test_video_and_image_files_have_the_chosen_size(generator):
    request = GenerationRequest("a red ball", generator.choices.size("144p", "16:9", "17 frames"), 0, sampling_steps=1)
    result = generator.generate(request, progress=False)
    info = probe(result.path)
    assert (result.path.suffix, info.num_frames, info.height, info.width) == (".mp4", 17, 256, 144)
    assert _image(generator).shape == (192, 192, 3)


def test_same_request_same_image_and_each_setting_matters(generator):
    first = _image(generator, sampling_steps=2)
    assert np.array_equal(first, _image(generator, sampling_steps=2))
    assert not np.array_equal(first, _image(generator, sampling_steps=2, seed=4))
    assert not np.array_equal(first, _image(generator, sampling_steps=3))
    assert generator.pipeline.scheduler.num_sampling_steps == 10  # a request never changes the shared pipeline


def test_guidance_scale_reaches_the_sampler(generator, monkeypatch):
    # the untrained model ignores its prompt (zero-initialised cross-attention), so guidance changes no pixel
    seen = []
    adapter = type(generator.pipeline.adapter)
    original = adapter.sample

    def spy(self, model, scheduler, z, text, inputs):
        seen.append(inputs.guidance_scale)
        return original(self, model, scheduler, z, text, inputs)

    monkeypatch.setattr(adapter, "sample", spy)
    _image(generator, guidance_scale=2.5)
    _image(generator)
    assert seen == [2.5, None]  # None: the scheduler's own cfg_scale


def test_reference_image_conditions_the_video(generator, tmp_path):
    Image.fromarray(np.full((192, 192, 3), (250, 30, 30), np.uint8)).save(tmp_path / "red.png")
    size = generator.choices.size("144p", "1:1", "17 frames")
    plain = GenerationRequest("a red ball", size, 0, sampling_steps=1)
    conditioned = GenerationRequest("a red ball", size, 0, sampling_steps=1, reference_path=str(tmp_path / "red.png"))
    free = read_clip(generator.generate(plain, progress=False).path, num_frames=17).frames
    tied = read_clip(generator.generate(conditioned, progress=False).path, num_frames=17).frames
    assert not np.array_equal(free.numpy(), tied.numpy())


def test_results_never_overwrite_earlier_ones(tiny_cfg, generator, tmp_path):
    (tmp_path / "sample_0007.mp4").write_bytes(b"earlier")
    again = InteractiveGenerator(tiny_cfg, generator.pipeline, tmp_path)
    assert _image(again).shape == (192, 192, 3)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["sample_0007.mp4", "sample_0008.png"]


def test_needs_a_vae(tiny_cfg, generator, tmp_path):
    with pytest.raises(ConfigError, match="vae"):
        InteractiveGenerator(tiny_cfg, SimpleNamespace(vae=None), tmp_path)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"resolution": "240p"}, "sets both resolution '240p' and image_size 128x128"),
        ({"scheduler": {"type": "rflow", "num_sampling_steps": 0}}, "num_sampling_steps must be at least 1"),
        ({"model": {"type": "STDiT3", "depht": 2}}, "unknown argument 'depht'"),
    ],
)
def test_a_bad_config_fails_before_the_pipeline_is_built(tiny_cfg, tmp_path, monkeypatch, fields, message):
    import opensora.inference.interactive as interactive

    monkeypatch.setattr(interactive, "build_pipeline", lambda *_: pytest.fail("the pipeline was built"))
    with pytest.raises(ConfigError, match=message):
        InteractiveGenerator.from_config(InferenceConfig(**{**vars(tiny_cfg), **fields}), tmp_path)


def test_open_sora_2_runs_through_the_same_page_logic(tmp_path):
    """The 2.0 tiny config: its own sizes (256px/768px, W:H ratios, 4k+1 frames), a text-only video,
    an image-conditioned one that differs, and guidance reaching the 2.0 sampler."""
    cfg = load_config(str(ROOT / "configs/opensora-v2/inference/tiny.py"), InferenceConfig)
    generator = InteractiveGenerator.from_config(cfg, tmp_path / "out", torch.device("cpu"))
    choices = generator.choices
    assert choices.resolutions[1:] == ("256px", "768px") and "2.39:1" in choices.aspect_ratios
    assert "129 frames" in choices.durations and choices.size("256px", "16:9", "33 frames") == VideoSize(33, 192, 336)
    size = choices.size("32x64", None, "9 frames")
    Image.fromarray(np.full((64, 64, 3), (250, 30, 30), np.uint8)).save(tmp_path / "red.png")
    plain = generator.generate(GenerationRequest("a red ball", size, 0, sampling_steps=1), progress=False)
    tied = generator.generate(GenerationRequest("a red ball", size, 0, sampling_steps=1, guidance_scale=2.0,
                                                reference_path=str(tmp_path / "red.png")), progress=False)  # fmt: skip
    free, cond = (read_clip(g.path, num_frames=9).frames.numpy().astype(int) for g in (plain, tied))
    assert free.shape == (9, 32, 64, 3) and np.abs(free - cond).mean() > 1
    assert plain.prompt == "a red ball"  # the 2.0 suffixes are the adapter's, not the page's 1.x scores
