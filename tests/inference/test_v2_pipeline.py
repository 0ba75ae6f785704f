"""Open-Sora 2.0 through the one pipeline: the tiny 2.0 config on the CLI for every mode, the adapter's
conditions and text, sizes and frame rules, offloading, and a sharded checkpoint on the command line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from opensora.config import load_config, run_cli
from opensora.datasets.aspect import get_image_size
from opensora.datasets.video_io import probe, read_clip
from opensora.inference.adapters.base import per_sample_randn
from opensora.inference.adapters.mmdit import MMDiTAdapter, decorate_prompt
from opensora.inference.config import InferenceConfig
from opensora.inference.prompts import PromptRequest
from opensora.inference.runner import build_pipeline
from opensora.inference.sizes import VideoSize
from tests.datasets.media import write_image, write_video
from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs/opensora-v2/inference/tiny.py")
T2I2V = str(ROOT / "configs/opensora-v2/inference/t2i2v_tiny.py")
SCRIPT = load_script(ROOT / "scripts" / "inference.py", "inference_script_v2")
FAST = ("--num-sampling-steps", "2", "--verbose", "0")


def infer(config: str, *args: str) -> None:
    run_cli(lambda: SCRIPT.main([config, *FAST, *args]))


def frames_of(path: Path) -> np.ndarray:
    return read_clip(path, probe(path).num_frames).frames.numpy()


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("refs")
    image = write_image(root / "red.png", np.full((48, 80, 3), (220, 40, 40), np.uint8))
    moving = np.zeros((40, 32, 64, 3), np.uint8)
    for t in range(40):
        moving[t, :, t : t + 8] = 255
    return {"image": image, "video": write_video(root / "move.mp4", moving)}


@pytest.mark.parametrize(
    ("mode", "extra", "frames"),
    [("t2v", (), 9), ("i2v_head", ("--ref", "image"), 9), ("v2v_tail", ("--ref", "video", "--num_frames", "41"), 41)],
)
def test_every_mode_writes_a_video_of_the_asked_size(tmp_path, references, mode, extra, frames):
    extra = tuple(str(references[a]) if a in references else a for a in extra)
    infer(TINY, "--prompt", "a red cat", "--cond_type", mode, "--save-dir", str(tmp_path), *extra)
    info = probe(tmp_path / "sample_0000.mp4")
    assert (info.num_frames, info.height, info.width) == (frames, 32, 64)


def test_text_to_image_to_video_draws_the_first_frame_then_the_video(tmp_path):
    infer(T2I2V, "--prompt", "a red cat", "--save-dir", str(tmp_path))
    assert probe(tmp_path / "sample_0000.mp4").num_frames == 9


def test_conditioning_changes_the_video_and_is_reproducible(tmp_path, references):
    for name, extra in [("t2v", ()), ("i2v", ("--cond_type", "i2v_head", "--ref", str(references["image"])))]:
        for run in range(2):
            infer(TINY, "--prompt", "a cat", "--save-dir", str(tmp_path / f"{name}{run}"), *extra)
    t2v, i2v = (frames_of(tmp_path / f"{n}0" / "sample_0000.mp4") for n in ("t2v", "i2v"))
    assert np.array_equal(i2v, frames_of(tmp_path / "i2v1" / "sample_0000.mp4"))
    assert np.abs(t2v.astype(int) - i2v.astype(int)).mean() > 1


@pytest.fixture(scope="module")
def pipeline():
    return build_pipeline(load_config(TINY, InferenceConfig), torch.device("cpu"))


def test_i2v_head_latent_starts_with_the_reference_latent(pipeline, references, monkeypatch):
    seen = {}
    original = type(pipeline).decode

    def keep(self, latents, *args):
        seen["latents"] = latents
        return original(self, latents, *args)

    monkeypatch.setattr(type(pipeline), "decode", keep)
    size = VideoSize(9, 32, 64)
    request = PromptRequest({0: "a cat"}, reference_paths=[str(references["image"])], cond_type="i2v_head")
    pipeline.generate([request], size, [1], progress=False)
    reference = pipeline.encode_video(pipeline.adapter.reference_clips(request, size)[0])
    torch.testing.assert_close(seen["latents"][0, :, :1], reference[:, :1])


def test_a_sample_does_not_depend_on_its_batch(pipeline):
    size = VideoSize(9, 32, 64)
    requests = [PromptRequest({0: "a cat"}), PromptRequest({0: "a dog"})]
    both = pipeline.generate(requests, size, [5, 6], progress=False)
    alone = pipeline.generate(requests[1:], size, [6], progress=False)
    torch.testing.assert_close(both[1], alone[0], atol=1e-5, rtol=1e-5)


def test_offload_visits_each_module_only_for_its_stage_and_gives_the_same_video(pipeline, monkeypatch):
    from contextlib import contextmanager

    from opensora.inference.memory import StageMemory

    size = VideoSize(9, 32, 64)
    request = [PromptRequest({0: "a cat"})]
    kept = pipeline.generate(request, size, [2], progress=False)
    names = {id(pipeline.model): "model", id(pipeline.vae): "vae", id(pipeline.text_encoder): "text"}
    visits: list[tuple[str, str]] = []
    memory = StageMemory(torch.device("cpu"))
    original = memory.stage

    @contextmanager
    def stage(name):
        visits.append(("stage", name))
        with original(name):
            yield

    @contextmanager
    def resident(self, module, always=False):
        if self.offload or always:
            visits.append(("resident", names[id(module)]))
        yield

    monkeypatch.setattr(memory, "stage", stage)
    monkeypatch.setattr(type(pipeline), "_resident", resident)
    offloaded = type(pipeline)(**{**pipeline.__dict__, "offload": True})
    moved = offloaded.generate(request, size, [2], memory=memory, progress=False)
    assert torch.equal(kept, moved)
    assert visits == [("stage", "text"), ("resident", "text"), ("stage", "sampling"), ("resident", "model"),
                      ("stage", "decode"), ("resident", "vae")]  # fmt: skip


def test_text_rows_are_prompts_then_negatives_twice_with_the_release_suffixes(pipeline):
    text = pipeline.adapter.encode_text(pipeline.text_encoder, ["a cat", "a dog."], VideoSize(9, 32, 64, 24))
    assert text["txt"].shape == (6, 8, 32) and text["y_vec"].shape == (6, 32)
    expect = pipeline.text_encoder.encode(["a cat. 24 FPS. 4 motion score.", "a dog. 24 FPS. 4 motion score.",
                                           "", "", "", ""])  # fmt: skip
    assert torch.equal(text["txt"], expect["y"][:, 0]) and torch.equal(text["y_vec"], expect["y_vec"])
    assert decorate_prompt("a cat", 16, None) == "a cat. 16 FPS."


def test_latent_size_and_noise_follow_the_release(pipeline):
    size = VideoSize(129, 192, 336)
    assert pipeline.latent_size(size) == (33, 24, 42)  # 4x causal frames; 2 * ceil(side / 16) per side
    assert pipeline.latent_size(VideoSize(9, 200, 100)) == (3, 26, 14)  # whole 2x2 patches, cropped on decode
    assert get_image_size("256px", "16:9") == (192, 336) and get_image_size("768px", "16:9") == (576, 1024)
    assert get_image_size("256px", "1:1") == (256, 256) and get_image_size("256px", "9:16") == (336, 192)
    g = [torch.Generator().manual_seed(11)]
    noise = per_sample_randn(g, (MMDiTAdapter().latent_channels, 3, 4, 8), torch.device("cpu"), torch.float32)
    assert torch.equal(noise[0], torch.randn((16, 3, 4, 8), generator=torch.Generator().manual_seed(11)))


def test_sharded_checkpoint_on_the_command_line_gives_the_model_it_was_saved_from(tmp_path):
    cfg = load_config(TINY, InferenceConfig)
    model = build_pipeline(cfg, torch.device("cpu")).model  # the random tiny model of seed 42
    model.save_pretrained(tmp_path / "ckpt", max_shard_size=60_000)
    assert len(list((tmp_path / "ckpt").glob("*.safetensors"))) >= 3
    infer(TINY, "--prompt", "a cat", "--save-dir", str(tmp_path / "random"))
    infer(TINY, "--prompt", "a cat", "--save-dir", str(tmp_path / "loaded"), "--ckpt-path", str(tmp_path / "ckpt"))
    assert np.array_equal(frames_of(tmp_path / "random" / "sample_0000.mp4"),
                          frames_of(tmp_path / "loaded" / "sample_0000.mp4"))  # fmt: skip


BAD = [
    (("--num_frames", "10"), "num_frames 10: Open-Sora 2.0 samples 1 frame or 4k+1"),
    (("--num_frames", "133"), "at most 129"),
    (("--cond_type", "i2v_mid"), "unknown cond_type 'i2v_mid'"),
    (("--cond_type", "i2v_head"), "cond_type i2v_head needs a reference"),
    (("--cond_type", "v2v_head", "--ref", "IMAGE"), "at least 33 are needed"),
    (("--mask-strategy", "0", "--ref", "IMAGE"), "mask_strategy: 1.x option(s)"),
    (("--loop", "2"), "condition_frame_length"),
    (("--ref", "MISSING", "--cond_type", "i2v_head"), "MISSING"),
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=[m[:30] for _, m in BAD])
def test_bad_2_0_input_stops_in_one_line_before_loading(tmp_path, capsys, monkeypatch, references, args, message):
    from opensora.inference import runner

    monkeypatch.setattr(runner, "build_pipeline", lambda *a, **k: pytest.fail("built before checking"))
    args = [str(references["image"]) if a == "IMAGE" else str(tmp_path / "none.png") if a == "MISSING" else a
            for a in args]  # fmt: skip
    with pytest.raises(SystemExit) as info:
        infer(TINY, "--prompt", "x", "--save-dir", str(tmp_path / "out"), *args)
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message.replace("MISSING", "none.png") in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_2_0_options_on_a_1_x_model_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_cli(lambda: SCRIPT.main([str(ROOT / "configs/opensora-v1-2/inference/tiny.py"), "--prompt", "x",
                                     "--cond_type", "i2v_head", "--save-dir", str(tmp_path)]))  # fmt: skip
    assert "Open-Sora 2.0 option(s)" in capsys.readouterr().err


RELEASE_CONFIGS = {"256px": (192, 336), "768px": (576, 1024), "t2i2v_256px": (192, 336), "t2i2v_768px": (576, 1024)}


@pytest.mark.parametrize("name", list(RELEASE_CONFIGS))
def test_release_configs_check_and_build_the_released_architectures(name):
    from opensora.inference.runner import _architecture, check_config

    cfg = load_config(str(ROOT / f"configs/opensora-v2/inference/{name}.py"), InferenceConfig)
    size, latent = check_config(cfg)  # every key, the scheduler and the frame rule, before any weight
    assert (size.num_frames, size.height, size.width) == (129, *RELEASE_CONFIGS[name])
    assert latent[0] == 33 and cfg.dtype == "bf16" and cfg.scheduler["num_sampling_steps"] == 50
    model = _architecture(cfg.model)
    assert sum(p.numel() for p in model.parameters()) == 11_891_390_528
    assert sum(p.numel() for p in _architecture(cfg.vae).parameters()) == 246_478_803
    encoders = cfg.text_encoder["encoders"]
    assert encoders["t5"]["model_max_length"] == 512 and encoders["t5"]["use_attention_mask"] is False
    if cfg.t2i is not None:
        t2i = _architecture(cfg.t2i["model"])
        assert t2i.config["guidance_embed"] and not t2i.config["cond_embed"] and cfg.cond_type == "i2v_head"
        assert sum(p.numel() for p in _architecture(cfg.t2i["vae"]).parameters()) == 83_819_683
