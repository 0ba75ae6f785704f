"""The VAE's loss maths, the 3-D patch discriminator, and the pipeline's training pass."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from opensora.models.vae.discriminator import NLayerDiscriminator3D
from opensora.models.vae.distributions import DiagonalGaussian
from opensora.registry import MODELS, build_module
from opensora.training.vae_losses import (
    adaptive_generator_weight,
    hinge_discriminator_loss,
    hinge_generator_loss,
    kl_loss,
    reconstruction_loss,
)
from tests.tiny import TINY_VAE, randomise_weights


def test_reconstruction_loss_sums_each_frame_and_adds_the_perceptual_distance_per_element() -> None:
    real, fake = torch.zeros(2, 3, 4, 5, 6), torch.ones(2, 3, 4, 5, 6)
    fake[1, :, 3] = 3.0  # one frame of sample 2 three times as far
    per_frame = 3 * 5 * 6  # elements per frame
    assert reconstruction_loss(real, fake).item() == pytest.approx(per_frame * (7 + 3) / 8)
    seen = []

    def perceptual(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        seen.append((a, b))
        return torch.full((a.shape[0],), 0.5)

    loss = reconstruction_loss(real, fake, perceptual, perceptual_weight=0.1)
    assert loss.item() == pytest.approx(per_frame * (7 + 3) / 8 + 0.1 * 0.5 * per_frame)
    a, b = seen[0]
    assert a.shape == (8, 3, 5, 6) and a.max() == 0.5 and b.min() == 1.0  # frames mapped to [0, 1]
    assert reconstruction_loss(real, fake, perceptual, perceptual_weight=0.0).item() == pytest.approx(
        per_frame * 10 / 8
    )


def test_kl_is_zero_at_the_prior_and_sums_over_micro_clips() -> None:
    prior = DiagonalGaussian(torch.zeros(2, 8, 1, 2, 2))
    assert kl_loss([prior]).item() == 0.0
    shifted = DiagonalGaussian(torch.cat([torch.ones(2, 4, 1, 2, 2), torch.zeros(2, 4, 1, 2, 2)], dim=1))
    assert kl_loss([shifted]).item() == pytest.approx(0.5 * 16)  # 0.5 * mean^2 per latent element
    assert kl_loss([shifted, shifted, prior]).item() == pytest.approx(16)


def test_hinge_losses() -> None:
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-2.0, 0.5])
    # real: relu(1 - [2, 0]) = [0, 1]; fake: relu(1 + [-2, 0.5]) = [0, 1.5]
    assert hinge_discriminator_loss(real, fake).item() == pytest.approx(0.5 * (0.5 + 0.75))
    assert hinge_generator_loss(fake).item() == pytest.approx(0.75)


def test_adaptive_weight_is_the_ratio_of_gradient_norms_at_the_last_layer() -> None:
    torch.manual_seed(0)
    body, last = nn.Linear(4, 4), nn.Linear(4, 3)
    out = last(body(torch.randn(5, 4)))
    rec, gan = out.pow(2).sum(), -out[:, 0].mean()
    expected_rec = torch.autograd.grad(rec, last.weight, retain_graph=True)[0].norm()
    expected_gan = torch.autograd.grad(gan, last.weight, retain_graph=True)[0].norm()
    weight = adaptive_generator_weight(rec, gan, last.weight, factor=0.5)
    assert not weight.requires_grad
    assert weight.item() == pytest.approx(0.5 * expected_rec.item() / (expected_gan.item() + 1e-4), rel=1e-5)
    (rec + weight * gan).backward()  # the graph survives for the real backward
    assert body.weight.grad is not None
    # a GAN loss with no gradient there: the weight is capped, not infinite
    out = last(body(torch.randn(5, 4)))
    assert adaptive_generator_weight(100 * out.pow(2).sum(), 0.0 * out.sum(), last.weight).item() == 1e4


def test_discriminator_judges_patches_of_videos_and_images() -> None:
    model = build_module(dict(type="NLayerDiscriminator3D", ndf=8, n_layers=3), MODELS)
    assert isinstance(model, NLayerDiscriminator3D)
    video = torch.randn(2, 3, 9, 32, 32, requires_grad=True)
    logits = model(video)
    assert logits.shape == (2, 1, 3, 4, 4)  # time / 4 (two strided levels), space / 8
    assert model(torch.randn(2, 3, 1, 32, 32)).shape == (2, 1, 1, 4, 4)
    logits.mean().backward()
    assert video.grad.abs().sum() > 0 and all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="odd kernel_size"):
        NLayerDiscriminator3D(kernel_size=4)


def test_discriminator_round_trips_through_save_pretrained(tmp_path) -> None:
    model = randomise_weights(NLayerDiscriminator3D(ndf=4, n_layers=2)).eval()
    model.save_pretrained(tmp_path / "d")
    loaded = build_module(dict(type="NLayerDiscriminator3D", from_pretrained=str(tmp_path / "d")), MODELS).eval()
    x = torch.randn(1, 3, 5, 16, 16)
    assert loaded.config == model.config and torch.equal(loaded(x), model(x))


def tiny_pipeline():
    return randomise_weights(build_module(TINY_VAE, MODELS), seed=1)


def test_training_pass_matches_encode_and_decode() -> None:
    vae = tiny_pipeline().eval()
    x = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    with torch.no_grad():
        out = vae(x, sample=False)
        expected = vae.decode(vae.encode(x, sample=False), num_frames=9)
        latents_only = vae(x, sample=False, decode_pixels=False)
    assert out.x_z.shape == (1, 4, 9, 4, 4) and out.z.shape == (1, 4, 3, 4, 4) and out.x_z_rec.shape == out.x_z.shape
    assert len(out.posteriors) == 1 and torch.equal(out.z, out.posteriors[0].mean)
    torch.testing.assert_close(out.x_rec, expected)
    assert latents_only.x_rec is None and torch.equal(latents_only.x_z_rec, out.x_z_rec)


def _count_call(count: dict[str, int], key: str, *hook_args: object) -> None:
    count[key] += 1


def test_gradient_checkpointing_recomputes_blocks_and_keeps_the_gradients() -> None:
    x = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    grads, calls = [], []
    for checkpointing in (False, True):
        vae = tiny_pipeline().train()
        vae.set_grad_checkpointing(checkpointing)
        # a recomputed block starts again in the backward pass: count the starts of one block of each VAE
        count = {"temporal": 0, "spatial": 0}
        blocks = {
            "temporal": vae.temporal_vae.decoder.res_blocks[0],
            "spatial": vae.spatial_vae.module.decoder.up_blocks[0],
        }
        for key, block in blocks.items():
            block.register_forward_pre_hook(functools.partial(_count_call, count, key))
        out = vae(x, sample=False)
        (out.x_rec.abs().mean() + out.x_z_rec.pow(2).mean()).backward()
        grads.append({name: p.grad.clone() for name, p in vae.named_parameters()})
        calls.append(count)
    # one decode per micro-clip (temporal) and per micro-batch of 4 frames (spatial), twice when recomputed
    assert calls == [{"temporal": 1, "spatial": 3}, {"temporal": 2, "spatial": 6}]
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6, msg=name)
