"""scripts/inference.py checks the whole request before anything is built: each bad input stops in one
line with exit code 2, and no model, VAE or text encoder was built; the size flags say which one wins;
building a pipeline leaves torch's global random state alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from opensora.config import load_config, run_cli
from opensora.inference import runner
from opensora.inference.config import InferenceConfig, prefer_command_line
from tests.datasets.media import write_image
from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
SCRIPT_MODULE = load_script(ROOT / "scripts" / "inference.py", "inference_script")
TINY = str(ROOT / "configs/opensora-v1-2/inference/tiny.py")  # STDiT3 + 1.2 VAE, 17 x 128 x 128
TINY_V1_0 = str(ROOT / "configs/opensora/inference/tiny.py")  # STDiT with input_size (8, 8, 8): 8 x 64 x 64 only
SAMPLE_V1_2 = str(ROOT / "configs/opensora-v1-2/inference/sample.py")  # resolution 240p, aspect ratio 9:16

BAD_INPUT = [
    # sampling
    (("--num-sampling-steps", "-3"), "rflow: num_sampling_steps must be at least 1, got -3"),
    (("--cfg-scale", "-1"), "rflow: cfg_scale must be a finite number >= 0, got -1.0"),
    (("--cfg-options", "scheduler.num_sampling_step=3"), "scheduler 'rflow': unknown argument 'num_sampling_step'"),
    (("--batch-size", "0"), "config key 'batch_size' must be >= 1, got 0"),
    (("--device", "gpu"), "unknown device 'gpu'"),
    # unknown keys, at the top and inside the module configs
    (("--cfg-options", "bogus=1"), "unknown config key 'bogus'"),
    (("--cfg-options", "model.depht=3"), "model 'STDiT3': unknown argument 'depht'"),
    (("--cfg-options", "vae.vae_temporal.filterz=8"), "model 'VAE_Temporal': unknown argument 'filterz'"),
    (("--cfg-options", "text_encoder.dim=8"), "model 'hash': unknown argument 'dim'"),
    (("--cfg-options", "multi_resolution=STDiT3"), "config key 'multi_resolution' expects one of 'STDiT2' | None"),
    (("--cfg-options", "model.in_channels=8"), "the VAE gives 4-channel latents; the model takes 8-channel"),
    # mask strategies and references
    (("--mask-strategy", "0,x"), "malformed mask strategy '0,x'"),
    (("--mask-strategy", "0,1"), "uses reference 1 but 0 reference(s) are given"),
    (("--reference-path", "{tmp}/ref.png"), "reference 0 ('"),
    (("--reference-path", "{tmp}/ref.png", "--mask-strategy", "1"), "is for loop 1, but only loops 0..0 run"),
    (("--reference-path", "{tmp}/ref.png", "--mask-strategy", "0,0,0,9"),
     "target start 9 lies outside the sample's 5 latent frames"),
    (("--reference-path", "{tmp}/missing.png", "--mask-strategy", "0"), "missing.png': no such file"),
    (("--reference-path", "{tmp}/broken.mp4", "--mask-strategy", "0"), "broken.mp4"),
    (("--cfg-options", "vae=None", "--reference-path", "{tmp}/ref.png", "--mask-strategy", "0"),
     "references need a VAE"),
    # frames, sizes, loops
    (("--num-frames", "0"), "frame count must be >= 1"),
    (("--num-frames", "3q"), "unknown frame count '3q' (an integer or one of: 1x"),
    (("--loop", "2", "--num-frames", "1"), "condition_frame_length 5 must be between 1 and the 0 latent frames"),
    (("--resolution", "123p"), "unknown resolution '123p' (known: 144p"),
    (("--resolution", "240p", "--aspect-ratio", "5:7"), "unknown aspect ratio '5:7' for 240p (names:"),
    (("--image-size", "0", "64"), "image_size must be two positive numbers"),
    (("--aspect-ratio", "1:1"), "aspect_ratio '1:1' needs a resolution (e.g. --resolution 720p); the size is "
                                "image_size 128x128 otherwise"),
    (("--image-size", "64", "64", "--resolution", "240p"), "--image-size and --resolution are alternatives"),
    (("--cfg-options", "resolution=240p"), "the config sets both resolution '240p' and image_size 128x128"),
    # prompts
    (("--camera-motion", "spin"), "unknown camera motion 'spin' (known: static"),
    (("--prompt-path", "{tmp}/prompts.txt"), "--prompt and --prompt-path are alternatives"),
]  # fmt: skip


@pytest.fixture
def no_build(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args, **_kwargs):
        raise AssertionError("a pipeline was built before the request was checked")

    monkeypatch.setattr(runner, "build_pipeline", refuse)


def fails_in_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as info:
        run_cli(lambda: SCRIPT_MODULE.main(argv))
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.mark.parametrize(("args", "message"), BAD_INPUT, ids=[case[1][:40] for case in BAD_INPUT])
def test_bad_input_stops_in_one_line_before_anything_is_built(tmp_path, capsys, no_build, args, message):
    write_image(tmp_path / "ref.png", np.zeros((64, 64, 3), dtype=np.uint8))
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    (tmp_path / "prompts.txt").write_text("a cat\n")
    argv = [TINY, "--prompt", "x", "--verbose", "0", "--save-dir", str(tmp_path / "out"),
            *(arg.replace("{tmp}", str(tmp_path)) for arg in args)]  # fmt: skip
    assert message in fails_in_one_line(argv, capsys)


def test_a_fixed_size_model_refuses_other_sizes_before_it_is_built(tmp_path, capsys, no_build):
    base = [TINY_V1_0, "--prompt", "x", "--verbose", "0", "--save-dir", str(tmp_path)]
    line = fails_in_one_line([*base, "--num-frames", "9"], capsys)
    assert "this model samples latents of exactly [8, 8, 8] (T, H, W); 9x64x64 gives [9, 8, 8]" in line
    line = fails_in_one_line([*base, "--image-size", "64", "128"], capsys)
    assert "8x64x128 gives [8, 8, 16]" in line


def test_a_good_request_passes_the_checks_and_reaches_the_build(tmp_path, no_build):
    write_image(tmp_path / "ref.png", np.zeros((64, 64, 3), dtype=np.uint8))
    argv = [TINY, "--prompt", "x", "--verbose", "0", "--reference-path", str(tmp_path / "ref.png"),
            "--mask-strategy", "0;0,0,0,-1", "--loop", "2", "--condition-frame-length", "2"]  # fmt: skip
    with pytest.raises(AssertionError, match="a pipeline was built"):
        SCRIPT_MODULE.main(argv)


# ---- which size and which prompts win -------------------------------------------------------------


def loaded(path: str, **given: object) -> InferenceConfig:
    return prefer_command_line(load_config(path, InferenceConfig, given), given)


def test_the_command_line_size_replaces_the_configs():
    assert loaded(TINY).pixel_size() == (128, 128)  # the config's image_size
    assert loaded(TINY, resolution="144p").pixel_size() == (144, 256)  # --resolution: default ratio 9:16
    assert loaded(TINY, resolution="144p", aspect_ratio="1:1").pixel_size() == (192, 192)
    assert loaded(SAMPLE_V1_2).pixel_size() == (240, 426)  # the config's resolution and ratio
    assert loaded(SAMPLE_V1_2, image_size=(64, 96)).pixel_size() == (64, 96)  # --image-size
    assert loaded(SAMPLE_V1_2, aspect_ratio="1:1").pixel_size() == (320, 320)  # 240p's pixels, square


def test_the_command_line_prompts_replace_the_configs(tmp_path):
    config = tmp_path / "cfg.py"
    config.write_text(f"_base_ = [{TINY!r}]\nprompt_path = 'prompts.txt'\n")
    assert loaded(str(config), prompt=["a cat"]).prompt_source() == ["a cat"]
    assert loaded(str(config)).prompt_source() == "prompts.txt"


# ---- the global random state ----------------------------------------------------------------------


def weights(pipeline) -> list[torch.Tensor]:
    return [p.detach().clone() for p in pipeline.model.parameters()]


def test_build_pipeline_leaves_the_global_random_state_alone():
    cfg = load_config(TINY, InferenceConfig)
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    first = runner.build_pipeline(cfg, torch.device("cpu"))
    assert torch.initial_seed() == 1234 and torch.equal(torch.get_rng_state(), state)
    # random (unloaded) weights still come from the config's seed, and only from it
    again = runner.build_pipeline(cfg, torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(weights(first), weights(again), strict=True))
    other = runner.build_pipeline(InferenceConfig(**{**vars(cfg), "seed": 7}), torch.device("cpu"))
    assert not all(torch.equal(a, b) for a, b in zip(weights(first), weights(other), strict=True))


def test_samples_depend_on_their_seeds_only(tmp_path):
    """After build_pipeline the pipeline draws every noise from per-sample generators: the global state is unused."""
    from opensora.inference.pipeline import VideoSize
    from opensora.inference.prompts import PromptRequest

    write_image(tmp_path / "ref.png", np.full((64, 64, 3), 90, dtype=np.uint8))
    cfg = load_config(TINY, InferenceConfig, {"scheduler.num_sampling_steps": 2})
    pipeline = runner.build_pipeline(cfg, torch.device("cpu"))
    # an edit ratio re-noises the reference part way: the one draw after the start
    requests = [PromptRequest({0: "a cat"}), PromptRequest({0: "a dog"}, [str(tmp_path / "ref.png")], "0,0,0,0,1,0.5")]
    size = VideoSize(17, 64, 64)
    outputs = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        outputs.append(pipeline.generate(requests, size, seeds=[5, 6], progress=False))
    assert torch.equal(outputs[0], outputs[1])
