"""Weights I/O: save/load round trips, checkpoint formats, error messages and the hub cache."""

from __future__ import annotations

import json
import logging
import re
import weakref
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


# --------------------------------------------------------------------------- sharded checkpoints

TINY_MMDIT = dict(
    in_channels=16, vec_in_dim=16, context_in_dim=16, hidden_size=32, num_heads=2, depth=1, depth_single_blocks=1,
    axes_dim=[4, 6, 6],
)  # fmt: skip


def _mmdit():
    from opensora.models.mmdit import MMDiT
    from tests.tiny import randomise_weights

    return randomise_weights(MMDiT(**TINY_MMDIT)).eval()


def _mmdit_inputs(B: int = 2, N: int = 6, L: int = 3) -> dict:
    return dict(
        img=torch.randn(B, N, 16), img_ids=torch.randint(0, 4, (B, N, 3)).float(), txt=torch.randn(B, L, 16),
        txt_ids=torch.zeros(B, L, 3), timesteps=torch.rand(B), y_vec=torch.randn(B, 16), cond=torch.randn(B, N, 20),
    )  # fmt: skip


def _save_sharded(model: ModelMixin, path: Path, shards: int = 3) -> list[str]:
    """Save ``model`` in about ``shards`` shards; returns the shard file names from the index."""
    total = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    model.save_pretrained(path, max_shard_size=total // shards + 1)
    index = json.loads((path / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == total
    return sorted(set(index["weight_map"].values()))


class _RecordingSafeOpen:
    """Stands in for ``safetensors.safe_open``: counts open files and keeps a weak reference to every
    tensor read, so a test can see how many files' tensors are alive at any read."""

    def __init__(self) -> None:
        self.real = safetensors.safe_open
        self.open_now = self.max_open = self.max_files_alive = self.max_tensors_alive = 0
        self.read: list[tuple[str, weakref.ref]] = []

    def files_read(self) -> list[str]:
        return list(dict.fromkeys(path for path, _ in self.read))

    def __call__(self, path, framework="pt", **kwargs):
        handle, recorder = self.real(path, framework=framework, **kwargs), self

        class Handle:
            def __enter__(self):
                recorder.open_now += 1
                recorder.max_open = max(recorder.max_open, recorder.open_now)
                handle.__enter__()
                return self

            def __exit__(self, *exc):
                recorder.open_now -= 1
                return handle.__exit__(*exc)

            def __getattr__(self, name):
                return getattr(handle, name)

            def get_tensor(self, key):
                tensor = handle.get_tensor(key)
                recorder.read.append((Path(path).name, weakref.ref(tensor)))
                alive = [name for name, ref in recorder.read if ref() is not None]
                recorder.max_tensors_alive = max(recorder.max_tensors_alive, len(alive))
                recorder.max_files_alive = max(recorder.max_files_alive, len(set(alive)))
                return tensor

            def get_tensors(self):  # what safetensors.torch.load_file reads a whole file with
                return {key: self.get_tensor(key) for key in handle.keys()}

        return Handle()


@pytest.fixture
def recording_open(monkeypatch: pytest.MonkeyPatch) -> _RecordingSafeOpen:
    """Every safetensors read goes through the recorder, whichever reader the loader uses."""
    from opensora.models import checkpoint_io

    recorder = _RecordingSafeOpen()
    monkeypatch.setattr(checkpoint_io, "safe_open", recorder)
    monkeypatch.setattr(safetensors.torch, "safe_open", recorder)
    return recorder


def test_sharded_save_and_load_round_trip(tmp_path: Path) -> None:
    from opensora.models.mmdit import MMDiT
    from opensora.registry import MODELS, build_module

    model = _mmdit()
    shards = _save_sharded(model, tmp_path / "mmdit")
    assert len(shards) >= 3
    files = sorted(p.name for p in (tmp_path / "mmdit").iterdir())
    assert files == sorted([*shards, "config.json", "model.safetensors.index.json"])
    inputs = _mmdit_inputs()
    by_registry = build_module({"type": "MMDiT", "from_pretrained": str(tmp_path / "mmdit")}, MODELS)
    for loaded in (MMDiT.from_pretrained(tmp_path / "mmdit"), by_registry):
        _assert_same(model, loaded)
        with torch.no_grad():
            assert torch.equal(loaded(**inputs), model(**inputs))


def test_sharded_torch_files_round_trip(tmp_path: Path) -> None:
    model = _toy()
    model.save_pretrained(tmp_path / "toy", safe_serialization=False, max_shard_size=300)
    names = sorted(p.name for p in (tmp_path / "toy").iterdir())
    assert "pytorch_model.bin.index.json" in names and "pytorch_model-00001-of-00002.bin" in names
    _assert_same(model, Toy.from_pretrained(tmp_path / "toy"))


def test_resaving_switches_between_single_file_and_shards(tmp_path: Path) -> None:
    model = _toy()
    model.save_pretrained(tmp_path / "toy")
    model.save_pretrained(tmp_path / "toy", max_shard_size="300B")
    names = sorted(p.name for p in (tmp_path / "toy").iterdir())
    assert names == ["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                     "model.safetensors.index.json"]  # fmt: skip
    _assert_same(model, Toy.from_pretrained(tmp_path / "toy"))
    model.save_pretrained(tmp_path / "toy", max_shard_size="1MB")  # fits one file: no index
    assert sorted(p.name for p in (tmp_path / "toy").iterdir()) == ["config.json", "model.safetensors"]
    _assert_same(model, Toy.from_pretrained(tmp_path / "toy"))


def test_missing_shard_names_the_file(tmp_path: Path) -> None:
    shards = _save_sharded(_mmdit(), tmp_path / "mmdit")
    (tmp_path / "mmdit" / shards[1]).unlink()
    from opensora.models.mmdit import MMDiT

    with pytest.raises(CheckpointError, match=re.escape(shards[1])) as exc:
        MMDiT.from_pretrained(tmp_path / "mmdit")
    _assert_one_line(exc)


def test_wrong_shape_in_a_shard_fails_before_any_tensor_is_read(tmp_path: Path, recording_open) -> None:
    from opensora.models.mmdit import MMDiT

    shards = _save_sharded(_mmdit(), tmp_path / "mmdit")
    last = tmp_path / "mmdit" / shards[-1]
    state = safetensors.torch.load_file(last)
    name = next(iter(state))
    state[name] = torch.zeros(3, 1)
    safetensors.torch.save_file(state, last)
    recording_open.read.clear()
    with pytest.raises(CheckpointError, match=rf"'{re.escape(name)}' has shape \[3, 1\]") as exc:
        MMDiT.from_pretrained(tmp_path / "mmdit")
    assert shards[-1] in _assert_one_line(exc)
    assert recording_open.read == []  # the headers alone showed it


def test_index_placing_a_tensor_in_the_wrong_shard_fails(tmp_path: Path) -> None:
    from opensora.models.mmdit import MMDiT

    shards = _save_sharded(_mmdit(), tmp_path / "mmdit")
    index_path = tmp_path / "mmdit" / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    name = next(key for key, shard in index["weight_map"].items() if shard == shards[0])
    index["weight_map"][name] = shards[1]
    index_path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=rf"'{re.escape(name)}' in '{shards[1]}'") as exc:
        MMDiT.from_pretrained(tmp_path / "mmdit")
    _assert_one_line(exc)


def test_shards_are_read_one_at_a_time(tmp_path: Path, recording_open) -> None:
    """While a shard is read, no tensor read from an earlier shard is alive (converted to bf16, each
    one is dropped once its copy is made): memory holds the model plus one shard at most."""
    from opensora.models.mmdit import MMDiT

    model = _mmdit()
    shards = _save_sharded(model, tmp_path / "mmdit")
    recording_open.read.clear()
    loaded = MMDiT.from_pretrained(tmp_path / "mmdit", dtype="bf16")
    assert recording_open.files_read() == shards
    assert recording_open.max_open == 1
    assert recording_open.max_files_alive == 1
    assert recording_open.max_tensors_alive <= 2  # converted one at a time, too
    assert all(ref() is None for _, ref in recording_open.read)
    assert torch.equal(loaded.img_in.weight, model.img_in.weight.bfloat16())


def _mapped_file(tensor: torch.Tensor) -> str | None:
    """The file whose memory mapping holds ``tensor``'s data (Linux), or None."""
    address = tensor.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        start, end = (int(bound, 16) for bound in fields[0].split("-"))
        if start <= address < end:
            return fields[5] if len(fields) == 6 else None
    return None


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads the Linux memory map")
def test_single_file_stays_memory_mapped(tmp_path: Path) -> None:
    """Without a conversion the parameters are the file's memory-mapped tensors: no copy is made."""
    model = _toy()
    path = save_state_dict_atomic(model.state_dict(), tmp_path / "w.safetensors")
    loaded = Toy.from_pretrained(path)
    assert _mapped_file(loaded.proj.weight) == str(path)
    assert _mapped_file(Toy.from_pretrained(path, dtype="bf16").proj.weight) != str(path)  # converted: a copy
    _assert_same(model, loaded)


def test_parse_size() -> None:
    from opensora.models.checkpoint_io import parse_size

    assert parse_size(1000) == parse_size("1KB") == parse_size("1 kb") == 1000
    assert parse_size("1.5MiB") == 3 * 2**19 and parse_size("5GB") == 5 * 10**9
    for bad in ("5 parsecs", "-1", 0, "GB"):
        with pytest.raises(ConfigError):
            parse_size(bad)
