"""Feature shards: round trip, atomic index, and extraction from tiny videos with a tiny VAE."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from opensora.datasets.dataset import VideoTextDataset
from opensora.datasets.features import FeatureDataset, write_feature_shards
from opensora.errors import OpenSoraError
from opensora.registry import DATASETS, MODELS, build_module
from tests.datasets.media import metadata_table, write_sample
from tests.scripts import load_script
from tests.tiny import TINY_TEXT_ENCODER, TINY_VAE

ROOT = Path(__file__).resolve().parents[2]
TEXT_ENCODER = TINY_TEXT_ENCODER
VAE = TINY_VAE


def load_tool():
    return load_script(ROOT / "tools/datasets/extract_features.py", "extract_features")


def fake_sample(i: int) -> dict:
    t = 1 + i % 3  # latents of different lengths may share a folder
    return {"x": torch.full((4, t, 2, 3), float(i)), "y": torch.randn(1, 8, 32), "mask": torch.arange(8) % 2,
            "text": f"caption {i}", "num_frames": np.int64(t), "fps": torch.tensor(24.0)}  # fmt: skip


def test_round_trip_over_shards_and_workers(tmp_path: Path) -> None:
    samples = [fake_sample(i) for i in range(5)]
    index = write_feature_shards(iter(samples), tmp_path / "features", shard_size=2)
    assert len(json.loads(index.read_text())["shards"]) == 3
    dataset = build_module({"type": "FeatureDataset", "shard_dir": str(tmp_path / "features")}, DATASETS)
    assert len(dataset) == 5
    for i, sample in enumerate(samples):
        got = dataset[i] if i % 2 else dataset[(i, "any bucket")]
        for key in ("x", "y", "mask"):
            assert torch.equal(got[key], sample[key])
        assert (got["text"], got["num_frames"], got["fps"], got["index"]) == (f"caption {i}", 1 + i % 3, 24.0, i)
    copy = pickle.loads(pickle.dumps(dataset))  # as a DataLoader worker receives it, open shards and all
    assert torch.equal(copy[4]["x"], samples[4]["x"])
    assert dataset.metadata["num_frames"].tolist() == [1, 2, 3, 1, 2]


def test_existing_unfinished_and_replaced_folders(tmp_path: Path) -> None:
    out = tmp_path / "features"
    write_feature_shards([fake_sample(i) for i in range(4)], out, shard_size=1)
    with pytest.raises(OpenSoraError, match="already holds features"):
        write_feature_shards([fake_sample(0)], out)
    before = FeatureDataset(out).fingerprint
    write_feature_shards([fake_sample(9)], out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["index.json", "shard-00000.safetensors"]
    replaced = FeatureDataset(out)
    assert len(replaced) == 1 and replaced.fingerprint != before
    assert not list(out.glob("*.tmp"))
    (out / "index.json").unlink()
    with pytest.raises(OpenSoraError, match="extraction unfinished"):
        FeatureDataset(out)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("features_media")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(3):
        frames = rng.integers(0, 256, (6, 32, 48, 3), np.uint8)
        rows.append(write_sample(root / f"v{i}.mp4", frames, f"clip {i} of a dog"))
    (root / "broken.mp4").write_bytes(b"\x00" * 64)
    rows.append(("broken.mp4", "nothing", 6, 32, 48))
    for i in range(2):
        rows.append(write_sample(root / f"im{i}.png", rng.integers(0, 256, (144, 256, 3), np.uint8), f"image {i}"))
    table = metadata_table(rows)
    table.iloc[:4].to_csv(root / "videos.csv", index=False)
    table.to_csv(root / "all.csv", index=False)
    return root


def write_config(path: Path, **extra: object) -> Path:
    dataset = dict(type="VideoTextDataset", num_frames=5, image_size=(32, 48))
    cfg = {"dataset": dataset, "vae": VAE, "text_encoder": TEXT_ENCODER, "batch_size": 2, "seed": 3, **extra}
    cfg["model"] = dict(type="ignored")  # a training config's other keys are ignored
    path.write_text("\n".join(f"{key} = {value!r}" for key, value in cfg.items()))
    return path


def test_extract_features_matches_direct_encoding(media: Path, tmp_path: Path, capsys) -> None:
    config = write_config(tmp_path / "extract.py")
    out = tmp_path / "features"
    tool = load_tool()
    tool.main([str(config), "--data-path", str(media / "videos.csv"), "--output", str(out), "--shard-size", "2"])
    printed = capsys.readouterr().out
    assert "wrote 3 samples" in printed and "1 skipped" in printed
    features = FeatureDataset(out)
    assert len(features) == 3 and len(list(out.glob("shard-*.safetensors"))) == 2
    torch.manual_seed(3)
    vae = build_module(VAE, MODELS).eval()
    encoder = build_module(TEXT_ENCODER, MODELS)
    videos = VideoTextDataset(media / "videos.csv", num_frames=5, image_size=(32, 48), seed=3)
    for i in range(3):
        item, feature = videos[i], features[i]
        assert feature["path"] == item["path"] and feature["text"] == item["text"]
        with torch.no_grad():
            expected = vae.encode(item["video"][None], sample=False)[0]
        assert feature["x"].shape == (4, 2, 4, 6) == expected.shape
        torch.testing.assert_close(feature["x"], expected)
        text = encoder.encode([item["text"]])
        assert torch.equal(feature["y"], text["y"][0]) and torch.equal(feature["mask"], text["mask"][0])


def test_bucketed_extraction_uses_bucket_sizes(media: Path, tmp_path: Path) -> None:
    buckets = {"144p": {1: (1.0, 2)}}
    config = write_config(tmp_path / "extract.py", bucket_config=buckets)
    config.write_text(config.read_text() + "\ndataset = dict(type='VariableVideoTextDataset')\n")
    out = tmp_path / "features"
    load_tool().main([str(config), "--data-path", str(media / "all.csv"), "--output", str(out)])
    features = FeatureDataset(out)
    assert len(features) == 2  # the images; no bucket takes the videos
    assert {tuple(features[i]["x"].shape) for i in range(2)} == {(4, 1, 18, 32)}
    assert all(features[i]["height"] == 144 and features[i]["num_frames"] == 1 for i in range(2))
