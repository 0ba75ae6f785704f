"""A sample depends on its prompt and seed only: batched with others or alone, with references
(whose generated frames are re-noised during sampling) the same video comes out."""

from __future__ import annotations

import numpy as np

from opensora.config import run_cli
from opensora.datasets.video_io import probe, read_clip
from tests.datasets.media import write_image
from tests.inference.test_cli import FAST, SCRIPT_MODULE, TINY


def frames(path) -> np.ndarray:
    return read_clip(path, probe(path).num_frames).frames.numpy().astype(float)


def test_referenced_samples_do_not_depend_on_batch_size(tmp_path):
    rng = np.random.default_rng(0)
    reference = write_image(tmp_path / "ref.png", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    # latent frame 0 kept; the image also seeds frame 2, regenerated from half way (an edit ratio)
    common = ("--num-frames", "17", "--reference-path", str(reference), "--mask-strategy", "0;0,0,0,2,1,0.5")

    def infer(out: str, *args: str) -> None:
        argv = [TINY, *FAST, *common, "--save-dir", str(tmp_path / out), *args]
        run_cli(lambda: SCRIPT_MODULE.main(argv))

    infer("batched", "--prompt", "a red ball", "a blue cube", "--batch-size", "2")
    infer("alone", "--prompt", "a red ball", "a blue cube", "--batch-size", "1")
    for name in ("sample_0000.mp4", "sample_0001.mp4"):
        batched, alone = frames(tmp_path / "batched" / name), frames(tmp_path / "alone" / name)
        # float rounding of a batched matmul at most; the lossy H.264 encoder can turn rounding-level
        # differences into a few levels at some blocks (means of 0.2 to 0.9 on different CPUs)
        assert np.abs(batched - alone).mean() < 2.0, name
    first, second = frames(tmp_path / "alone" / "sample_0000.mp4"), frames(tmp_path / "alone" / "sample_0001.mp4")
    assert np.abs(first[1:] - second[1:]).mean() > 5  # the two samples really differ


def test_later_noise_continues_each_samples_stream_instead_of_repeating_it(monkeypatch):
    import torch

    import opensora.inference.adapters.stdit as pipeline_module
    from opensora.config import load_config
    from opensora.inference.config import InferenceConfig
    from opensora.inference.pipeline import VideoSize
    from opensora.inference.prompts import PromptRequest
    from opensora.inference.runner import build_pipeline

    pipeline = build_pipeline(load_config(TINY, InferenceConfig), torch.device("cpu"))
    pipeline.vae = None
    seen = {}

    def record(_model, _scheduler, z, *_args, noise_fn=None, **_kwargs):
        seen["z"], seen["later"] = z.clone(), noise_fn(0, z)
        return z

    monkeypatch.setattr(pipeline_module, "sample", record)
    requests = [PromptRequest({0: "a"}), PromptRequest({0: "b"})]
    pipeline.generate(requests, VideoSize(1, 16, 16), seeds=[3, 4], progress=False)
    z, later = seen["z"], seen["later"]
    for i in range(2):  # a later draw that equals the starting noise would correlate the two
        assert (later[i] - z[i]).abs().mean() > 0.5
    pipeline.generate(requests[1:], VideoSize(1, 16, 16), seeds=[4], progress=False)
    assert torch.equal(seen["later"][0], later[1])  # still the sample's own stream, batched or alone
