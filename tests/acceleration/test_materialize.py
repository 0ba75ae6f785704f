"""Models built on the meta device get their weights one parameter at a time, the same on every call."""

from __future__ import annotations

import torch

from opensora.acceleration.materialize import build_on_meta, init_tape, materialize
from opensora.models.stdit.stdit3 import STDiT3


def _tiny() -> STDiT3:
    return STDiT3(depth=2, hidden_size=64, num_heads=4, caption_channels=32, model_max_length=8)


def _materialised(seed: int) -> STDiT3:
    model = build_on_meta(_tiny, seed=seed)
    assert all(p.is_meta for p in model.parameters())
    materialize(model, torch.device("cpu"), init_tape(model))
    return model


def test_replayed_initialisation_is_deterministic_and_follows_the_model_rules() -> None:
    a, b, other = _materialised(3), _materialised(3), _materialised(4)
    reference = _tiny()  # built eagerly: the same rules, other random draws
    for (name, p), q, r in zip(a.named_parameters(), b.parameters(), other.parameters()):
        assert not p.is_meta and torch.equal(p, q), name
        eager = dict(reference.named_parameters())[name]
        if eager.std() == 0 or name == "rope.freqs":  # zero-initialised layers and computed constants
            assert torch.equal(p, eager), name
        elif p.numel() > 256:
            assert not torch.equal(p, r), name  # another seed draws other values
            assert abs(p.std().item() - eager.std().item()) < 0.25 * eager.std().item(), name
    assert a.y_embedder.y_embedding.shape == reference.y_embedder.y_embedding.shape  # buffers are replayed too
