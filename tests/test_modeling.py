"""Weights I/O: save/load round trips, checkpoint formats, error messages and the hub cache."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import safetensors.torch
import torch
from torch import nn

from opensora.errors import CheckpointError, ConfigError
from opensora.models.modeling import (
    LoadReport,
    ModelMixin,
    load_state_dict_file,
    load_weights,
    save_state_dict_atomic,
)


class Toy(ModelMixin):
    """Linear + LayerNorm, a persistent buffer, a derived non-persistent buffer and a runtime switch."""

    RUNTIME_KEYS = ("enable_fast",)

    def __init__(self, dim: int = 8, scales: tuple[float, ...] = (1.0, 2.0), enable_fast: bool = False) -> None:
        super().__init__()
        self.register_config(dim=dim, scales=scales, enable_fast=enable_fast)
        self.dim, self.scales, self.enable_fast = dim, tuple(scales), enable_fast
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.register_buffer("offset", torch.zeros(dim))
        self.register_buffer("freqs", self._freqs(), persistent=False)

    def _freqs(self) -> torch.Tensor:
        return torch.arange(self.dim, dtype=torch.float32) * self.scales[-1] / self.dim

    def reset_non_persistent_buffers(self) -> None:
        self.freqs = self._freqs()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x) + self.offset + self.freqs)


class Tied(ModelMixin):
    def __init__(self, vocab: int = 6, dim: int = 4) -> None:
        super().__init__()
        self.register_config(vocab=vocab, dim=dim)
        self.embed = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.embed.weight


class NotAllowed:
    """Any class that weights_only unpickling refuses."""


def _toy(**kwargs: object) -> Toy:
    torch.manual_seed(0)
    model = Toy(**kwargs)
    with torch.no_grad():
        for tensor in [*model.parameters(), model.offset]:
            tensor.normal_()
    return model.eval()


def _assert_same(a: nn.Module, b: nn.Module) -> None:
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key


def _assert_one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_round_trip_is_bit_exact(tmp_path: Path) -> None:
    model = _toy()
    model.save_pretrained(tmp_path / "toy")
    loaded = Toy.from_pretrained(tmp_path / "toy")
    _assert_same(model, loaded)
    assert torch.equal(loaded.freqs, model.freqs)
    x = torch.randn(3, 8)
    assert torch.equal(model(x), loaded(x))
    assert loaded.config == model.config == {"dim": 8, "scales": [1.0, 2.0]}
    assert not loaded.training


def test_config_json_holds_architecture_only(tmp_path: Path) -> None:
    _toy(enable_fast=True).save_pretrained(tmp_path / "toy")
    config = json.loads((tmp_path / "toy" / "config.json").read_text())
    assert config["_class_name"] == "Toy"
    assert config["scales"] == [1.0, 2.0]
    assert "enable_fast" not in config
    assert sorted(p.name for p in (tmp_path / "toy").iterdir()) == ["config.json", "model.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["toy"]  # no staging directory left behind


def test_runtime_switch_passes_through_but_is_not_saved(tmp_path: Path) -> None:
    _toy().save_pretrained(tmp_path / "toy")
    loaded = Toy.from_pretrained(tmp_path / "toy", enable_fast=True)
    assert loaded.enable_fast
    assert "enable_fast" not in loaded.config


def test_released_config_boilerplate_is_ignored(tmp_path: Path) -> None:
    model = _toy(dim=4)
    model.save_pretrained(tmp_path / "toy")
    released = {
        "architectures": ["Toy"],
        "model_type": "Toy",
        "torch_dtype": "float32",
        "transformers_version": "4.36.2",
        "_name_or_path": "/cluster/ckpt",
        "_commit_hash": None,
        "dim": 4,
        "scales": [1.0, 2.0],
        "enable_fast": True,
    }
    (tmp_path / "toy" / "config.json").write_text(json.dumps(released))
    loaded = Toy.from_pretrained(tmp_path / "toy")
    assert loaded.enable_fast
    _assert_same(model, loaded)


def test_unknown_config_key_and_override_fail(tmp_path: Path) -> None:
    _toy().save_pretrained(tmp_path / "toy")
    config_path = tmp_path / "toy" / "config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "depth": 3}))
    with pytest.raises(CheckpointError, match="depth") as exc:
        Toy.from_pretrained(tmp_path / "toy")
    _assert_one_line(exc)
    with pytest.raises(ConfigError, match="heads"):
        Toy.from_config({"dim": 4}, heads=2)


def test_pytorch_bin_replaces_safetensors(tmp_path: Path) -> None:
    model = _toy()
    model.save_pretrained(tmp_path / "toy")
    model.save_pretrained(tmp_path / "toy", safe_serialization=False)
    assert sorted(p.name for p in (tmp_path / "toy").iterdir()) == ["config.json", "pytorch_model.bin"]
    _assert_same(model, Toy.from_pretrained(tmp_path / "toy"))


def test_single_safetensors_file_with_architecture_kwargs(tmp_path: Path) -> None:
    model = _toy(dim=4, scales=(3.0,))
    path = save_state_dict_atomic(model.state_dict(), tmp_path / "w.safetensors")
    loaded = Toy.from_pretrained(path, dim=4, scales=(3.0,))
    _assert_same(model, loaded)
    assert torch.equal(loaded.freqs, model.freqs)


def test_training_checkpoint_nesting_and_prefixes(tmp_path: Path) -> None:
    model = _toy()
    ema = {f"module._orig_mod.{key}": value for key, value in model.state_dict().items()}
    checkpoint = {"ema": ema, "optimizer": {"state": {}, "lr": [1e-4]}, "step": 3}
    torch.save(checkpoint, tmp_path / "epoch1.pt")
    _assert_same(model, Toy.from_pretrained(tmp_path / "epoch1.pt"))
    assert load_state_dict_file(tmp_path / "epoch1.pt").keys() == model.state_dict().keys()


def test_sharded_directory(tmp_path: Path) -> None:
    model = _toy()
    model.save_pretrained(tmp_path / "toy")
    (tmp_path / "toy" / "model.safetensors").unlink()
    state = model.state_dict()
    shards = {"a.safetensors": ["proj.weight", "proj.bias"], "b.safetensors": ["norm.weight", "norm.bias", "offset"]}
    for shard, keys in shards.items():
        save_state_dict_atomic({key: state[key] for key in keys}, tmp_path / "toy" / shard)
    weight_map = {key: shard for shard, keys in shards.items() for key in keys}
    (tmp_path / "toy" / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    _assert_same(model, Toy.from_pretrained(tmp_path / "toy"))


def test_wrong_shape_names_tensor_and_shapes(tmp_path: Path) -> None:
    state = {**_toy().state_dict(), "proj.weight": torch.zeros(3, 5)}
    save_state_dict_atomic(state, tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match=r"'proj\.weight' has shape") as exc:
        Toy.from_pretrained(tmp_path / "w.safetensors", strict=False)
    message = _assert_one_line(exc)
    assert "[3, 5]" in message and "[8, 8]" in message


def test_wrong_architecture_reports_first_mismatch_and_count(tmp_path: Path) -> None:
    save_state_dict_atomic(_toy(dim=8).state_dict(), tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match=r"'offset' has shape \[8\] but the model expects \[4\]") as exc:
        Toy.from_pretrained(tmp_path / "w.safetensors", dim=4)
    assert "4 more" in _assert_one_line(exc)


def test_missing_key_strict_and_not_strict(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = _toy()
    state = model.state_dict()
    del state["norm.bias"]
    save_state_dict_atomic(state, tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match=r"norm\.bias") as exc:
        Toy.from_pretrained(tmp_path / "w.safetensors")
    _assert_one_line(exc)
    with caplog.at_level(logging.WARNING, logger="opensora.models.modeling"):
        loaded = Toy.from_pretrained(tmp_path / "w.safetensors", strict=False)
    assert "norm.bias" in caplog.text
    assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])
    assert torch.equal(loaded.norm.bias, torch.zeros(8))  # LayerNorm's own initialisation
    assert torch.equal(loaded.norm.weight, model.norm.weight)  # loaded sibling kept through reset_parameters()
    assert torch.equal(loaded.proj.weight, model.proj.weight)


def test_missing_key_uses_init_missing_hook(tmp_path: Path) -> None:
    class Hooked(Toy):
        def init_missing(self, names: list[str]) -> None:
            for name in names:
                self.get_parameter(name).fill_(7.0)

    state = _toy().state_dict()
    del state["proj.bias"]
    save_state_dict_atomic(state, tmp_path / "w.safetensors")
    loaded = Hooked.from_pretrained(tmp_path / "w.safetensors", strict=False)
    assert torch.equal(loaded.proj.bias, torch.full((8,), 7.0))


def test_missing_tensor_without_any_initialiser_fails(tmp_path: Path) -> None:
    class WithRootParam(Toy):
        def __init__(self, **kwargs: object) -> None:
            super().__init__(**kwargs)
            self.gain = nn.Parameter(torch.ones(1))

    save_state_dict_atomic(_toy().state_dict(), tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match="'gain'.*init_missing") as exc:
        WithRootParam.from_pretrained(tmp_path / "w.safetensors", strict=False)
    _assert_one_line(exc)


def test_unexpected_key(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = {**_toy().state_dict(), "extra.weight": torch.ones(2)}
    save_state_dict_atomic(state, tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match=r"extra\.weight") as exc:
        Toy.from_pretrained(tmp_path / "w.safetensors")
    _assert_one_line(exc)
    with caplog.at_level(logging.WARNING, logger="opensora.models.modeling"):
        Toy.from_pretrained(tmp_path / "w.safetensors", strict=False)
    assert "extra.weight" in caplog.text


@pytest.mark.parametrize("name", ["model.safetensors", "pytorch_model.bin"])
def test_corrupt_weights_file(tmp_path: Path, name: str) -> None:
    _toy().save_pretrained(tmp_path / "toy", safe_serialization=name.endswith(".safetensors"))
    (tmp_path / "toy" / name).write_bytes(b"\x00garbage" * 64)
    with pytest.raises(CheckpointError, match=re.escape(name)) as exc:
        Toy.from_pretrained(tmp_path / "toy")
    _assert_one_line(exc)


def test_truncated_safetensors(tmp_path: Path) -> None:
    path = save_state_dict_atomic(_toy().state_dict(), tmp_path / "w.safetensors")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=r"w\.safetensors") as exc:
        load_state_dict_file(path)
    _assert_one_line(exc)


def test_missing_file_and_non_tensor_pickle(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such file") as exc:
        Toy.from_pretrained(tmp_path / "nope.safetensors")
    _assert_one_line(exc)
    torch.save({"model": _toy().state_dict(), "cfg": NotAllowed()}, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="objects other than tensors") as exc:
        load_state_dict_file(tmp_path / "old.pt")
    _assert_one_line(exc)


def test_hub_id_offline_and_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE=1") as exc:
        Toy.from_pretrained("hpcai-tech/OpenSora-STDiT-v3")
    _assert_one_line(exc)


def test_hub_id_found_in_local_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _toy()
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--org--toy"
    model.save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    loaded = Toy.from_pretrained("org/toy")
    _assert_same(model, loaded)


def test_meta_build_and_dtype(tmp_path: Path) -> None:
    model = _toy()
    model.save_pretrained(tmp_path / "toy")
    loaded = Toy.from_pretrained(tmp_path / "toy", dtype="bf16")
    tensors = [*loaded.parameters(), *loaded.buffers()]
    assert all(not t.is_meta and t.device.type == "cpu" for t in tensors)
    assert all(t.dtype == torch.bfloat16 for t in tensors)
    assert all(p.requires_grad for p in loaded.parameters())
    assert torch.equal(loaded.proj.weight, model.proj.weight.to(torch.bfloat16))


def test_low_precision_checkpoint_is_cast_to_model_dtype(tmp_path: Path) -> None:
    state = {key: value.half() for key, value in _toy().state_dict().items()}
    save_state_dict_atomic(state, tmp_path / "w.safetensors")
    loaded = Toy.from_pretrained(tmp_path / "w.safetensors")
    assert loaded.proj.weight.dtype == torch.float32
    assert torch.equal(loaded.proj.weight, state["proj.weight"].float())


def test_non_persistent_buffer_without_hook_is_reported(tmp_path: Path) -> None:
    class NoHook(Toy):
        reset_non_persistent_buffers = None  # type: ignore[assignment]

    save_state_dict_atomic(_toy().state_dict(), tmp_path / "w.safetensors")
    with pytest.raises(RuntimeError, match="reset_non_persistent_buffers"):
        NoHook.from_pretrained(tmp_path / "w.safetensors")


def test_tied_weights_survive_round_trip(tmp_path: Path) -> None:
    model = Tied()
    model.save_pretrained(tmp_path / "tied")
    loaded = Tied.from_pretrained(tmp_path / "tied")
    assert loaded.head.weight is loaded.embed.weight
    assert torch.equal(loaded.embed.weight, model.embed.weight)


def test_shared_storage_saves_to_safetensors(tmp_path: Path) -> None:
    base = torch.arange(6.0)
    path = save_state_dict_atomic({"a": base, "b": base, "c": base[:2]}, tmp_path / "s.safetensors")
    loaded = safetensors.torch.load_file(path)
    assert torch.equal(loaded["b"], base) and torch.equal(loaded["c"], base[:2])


def test_load_weights_into_materialised_model() -> None:
    source, target = _toy(), Toy()
    state = {**source.state_dict(), "unused": torch.ones(1)}
    report = load_weights(target, state, strict=False)
    assert report == LoadReport(missing=[], unexpected=["unused"])
    _assert_same(source, target)
    with pytest.raises(CheckpointError, match="offset"):
        load_weights(Toy(dim=4), source.state_dict())
