"""scripts/inference.py end to end on the tiny random config: files of the requested kind, size,
frame count and fps for every mode; reproducible; bad input stops in one line with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from opensora.config import run_cli
from opensora.datasets.video_io import probe, read_clip
from tests.datasets.media import write_image, write_video
from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "inference.py"
TINY = str(ROOT / "configs/opensora-v1-2/inference/tiny.py")
FAST = ("--num-sampling-steps", "2", "--image-size", "64", "64", "--verbose", "0")


SCRIPT_MODULE = load_script(SCRIPT, "inference_script")


def infer(*args: str) -> None:
    run_cli(lambda: SCRIPT_MODULE.main([TINY, *FAST, *args]))


def frames_of(path: Path) -> np.ndarray:
    info = probe(path)
    return read_clip(path, info.num_frames).frames.numpy()


def test_text_to_image_writes_a_png(tmp_path):
    infer("--prompt", "a red ball", "--num-frames", "1", "--save-dir", str(tmp_path))
    info = probe(tmp_path / "sample_0000.png")
    assert info.is_image and (info.height, info.width) == (64, 64)


def test_text_to_video_size_frames_fps_and_reproducibility(tmp_path):
    infer("--prompt", "a red ball", "a blue cube", "--batch-size", "2", "--num-frames", "17",
          "--fps", "24", "--save-fps", "12", "--save-dir", str(tmp_path / "a"))  # fmt: skip
    first = tmp_path / "a" / "sample_0000.mp4"
    info = probe(first)
    assert (info.num_frames, info.height, info.width, info.fps) == (17, 64, 64, 12.0)
    assert probe(tmp_path / "a" / "sample_0001.mp4").num_frames == 17
    # the same command gives the same file; batched or alone, the same frames up to float rounding
    infer("--prompt", "a red ball", "a blue cube", "--batch-size", "2", "--num-frames", "17",
          "--fps", "24", "--save-fps", "12", "--save-dir", str(tmp_path / "again"))  # fmt: skip
    assert (tmp_path / "again" / "sample_0000.mp4").read_bytes() == first.read_bytes()
    infer("--prompt", "a red ball", "--num-frames", "17", "--save-fps", "12", "--save-dir", str(tmp_path / "b"))
    alone = frames_of(tmp_path / "b" / "sample_0000.mp4").astype(int)
    assert np.abs(alone - frames_of(first)).mean() < 0.5
    infer("--prompt", "a red ball", "--num-frames", "17", "--seed", "7", "--save-dir", str(tmp_path / "c"))
    assert not np.array_equal(frames_of(tmp_path / "c" / "sample_0000.mp4"), frames_of(first))


def test_resolution_aspect_ratio_and_duration_names(tmp_path):
    args = ("--prompt", "x", "--resolution", "144p", "--aspect-ratio", "9:16", "--num-frames", "2s")
    run_cli(lambda: SCRIPT_MODULE.main([TINY, "--num-sampling-steps", "1", "--verbose", "0", *args,
                                        "--save-dir", str(tmp_path)]))  # fmt: skip
    info = probe(tmp_path / "sample_0000.mp4")
    # the release names ratios height:width of the *landscape* frame: 9:16 is 144 x 256
    assert (info.num_frames, info.height, info.width) == (51, 144, 256)


def test_image_to_video_keeps_the_reference_frame(tmp_path):
    """Frame 0 of an i2v sample is the reference image, up to the VAE's reconstruction error.

    The VAE here is exact on 8 x 8 block images (tests/inference/block_vae.py), so any error
    beyond H.264's comes from the pipeline: the reference must be encoded, kept through
    sampling and decoded back in place.
    """
    import tests.inference.block_vae  # noqa: F401  (registers TestBlockVAE)

    rng = np.random.default_rng(0)
    image = np.kron(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), np.ones((8, 8, 1), dtype=np.uint8))
    path = write_image(tmp_path / "ref.png", image)
    block_vae = ("--cfg-options", "vae={'type': 'TestBlockVAE'}")
    infer("--prompt", "a cat", "--num-frames", "17", "--reference-path", str(path), "--mask-strategy", "0",
          "--save-dir", str(tmp_path / "i2v"), *block_vae)  # fmt: skip
    infer("--prompt", "a cat", "--num-frames", "17", "--save-dir", str(tmp_path / "t2v"), *block_vae)
    i2v, t2v = frames_of(tmp_path / "i2v" / "sample_0000.mp4"), frames_of(tmp_path / "t2v" / "sample_0000.mp4")
    error = lambda a, b: np.abs(a.astype(float) - b.astype(float)).mean()  # noqa: E731
    # H.264 itself (4:2:0 chroma on sharp colour blocks) costs this much on a still video of the image
    from opensora.inference.media import save_sample

    still = torch.from_numpy(image).permute(2, 0, 1)[:, None].expand(3, 17, 64, 64).float() / 127.5 - 1
    codec_error = error(frames_of(save_sample(still, tmp_path / "still", 24))[0], image)
    assert error(i2v[0], image) < codec_error + 1.0
    assert error(t2v[0], image) > 30.0  # without the reference the first frame is something else
    # the reference also works with the real (random tiny) 1.2 VAE: the file has the asked-for shape
    infer("--prompt", "a cat", "--num-frames", "17", "--reference-path", str(path), "--mask-strategy", "0",
          "--save-dir", str(tmp_path / "real"))  # fmt: skip
    assert probe(tmp_path / "real" / "sample_0000.mp4").num_frames == 17


def test_video_extension_and_json_in_prompt(tmp_path):
    source = write_video(tmp_path / "src.mp4", np.full((17, 64, 64, 3), 90, dtype=np.uint8))
    prompt = f'a wave{{"reference_path": "{source}", "mask_strategy": "0,0,-2,0,2"}}'
    infer("--prompt", prompt, "--num-frames", "34", "--save-dir", str(tmp_path))
    assert probe(tmp_path / "sample_0000.mp4").num_frames == 34


def test_loop_extends_with_per_loop_prompts(tmp_path):
    infer("--prompt", "|0|a cat |1|a dog", "--num-frames", "17", "--loop", "3",
          "--condition-frame-length", "2", "--save-dir", str(tmp_path))  # fmt: skip
    # each further loop adds 17 - 5 frames: 2 latent frames decode to 5 video frames
    assert probe(tmp_path / "sample_0000.mp4").num_frames == 17 + 2 * 12


def test_prompt_as_path_skips_finished_samples(tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red ball\na blue cube\na green cone\n")
    args = ("--prompt-path", str(prompts), "--prompt-as-path", "true", "--num-frames", "1",
            "--start-index", "1", "--save-dir", str(tmp_path / "out"))  # fmt: skip
    run_cli(lambda: SCRIPT_MODULE.main([TINY, *FAST[:-2], *args]))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a blue cube.png", "a green cone.png"]
    (tmp_path / "out" / "a green cone.png").unlink()
    capsys.readouterr()
    run_cli(lambda: SCRIPT_MODULE.main([TINY, *FAST[:-2], *args]))
    saved = [line for line in capsys.readouterr().out.splitlines() if line.startswith("saved")]
    assert len(saved) == 1 and "a green cone.png" in saved[0]


def test_num_sample_and_memory_report(tmp_path, capsys):
    run_cli(lambda: SCRIPT_MODULE.main([TINY, *FAST[:-2], "--prompt", "x", "--num-frames", "1", "--num-sample", "2",
                                        "--sample-name", "run", "--save-dir", str(tmp_path)]))  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run_0000-0.png", "run_0000-1.png"]
    out = capsys.readouterr().out
    assert "estimated peak memory: text" in out and "measured peak memory" in out and "sampling" in out


def run_subprocess(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), TINY, *FAST, *args], capture_output=True, text=True, cwd=ROOT)


def test_cli_process_writes_the_video(tmp_path):
    done = run_subprocess("--prompt", "a red ball", "--num-frames", "17", "--save-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert probe(tmp_path / "sample_0000.mp4").num_frames == 17


# bad input in-process, and that nothing is built before it is refused: tests/inference/test_validation.py


def test_bad_input_in_a_process_has_no_traceback(tmp_path):
    cases = [("--prompt", "x", "--cfg-options", "model.depht=3"), ("--prompt", "x", "--seed", "abc"),
             ("--prompt", "x", "--ckpt-path", str(tmp_path / "missing.pt")), ("--save-dir", str(tmp_path))]  # fmt: skip
    for args in cases:
        done = run_subprocess(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert "Traceback" not in done.stderr and done.stderr.strip().count("\n") == 0 or "usage" in done.stderr


def test_llm_refine_without_a_key_says_what_is_missing(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(SystemExit):
        infer("--prompt", "x", "--llm-refine", "true", "--save-dir", str(tmp_path))
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --llm-refine needs") and "\n" not in err
