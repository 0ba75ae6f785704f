"""The math of Open-Sora 2.0's training step, as plain functions (the trainer orchestrates them).

Flow matching runs from data at t = 0 to noise at t = 1:

    x_t = (1 - t) x_0 + (1 - (1 - sigma_min) (1 - t)) x_1,    target v = (1 - sigma_min) x_1 - x_0

with x_1 ~ N(0, I). Timesteps are logit-normal, t = sigmoid(n) with n ~ N(0, 1), then warped
towards noise by the resolution- and length-dependent shift of sampling
(:func:`opensora.schedulers.shifted_flow.time_shift`). Each video sample draws a conditioning
mode from a weighted mix; its condition is a mask channel plus the masked reference latent, laid
out exactly as sampling lays it out (:func:`opensora.inference.mmdit_sampling.inference_condition`).
For classifier-free guidance, T5 states and the CLIP vector are each replaced by those of the
empty prompt with their own probability.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from opensora.inference.mmdit_sampling import inference_condition
from opensora.schedulers.shifted_flow import shift_alpha, time_shift

TIME_COMPRESSION = 4  # latent frames per 4 video frames: both 2.0 VAEs (the Hunyuan VAE, the DC-AE)


# ---- timesteps, noise and target ------------------------------------------------------------
def sample_timesteps(
    batch: int, latent_hw: tuple[int, int], latent_frames: int, device: torch.device | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:  # fmt: skip
    """[batch] float32 timesteps in (0, 1): logit-normal, then shifted for the latent's size.

    The release counts the tokens of a frame as H * W // 4 of the latent (2x2 patches) whatever
    the patch size, and scales the shift by sqrt(latent frames), as sampling does.
    """
    t = torch.sigmoid(torch.randn(batch, device=device, generator=generator))
    alpha = shift_alpha(latent_hw[0] * latent_hw[1] // 4, latent_frames)
    return time_shift(alpha, t)


def noised(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor, sigma_min: float) -> torch.Tensor:
    """x_t of data ``x0`` and noise ``x1`` [B, ...] at timesteps ``t`` [B]."""
    t = t.view(-1, *([1] * (x0.ndim - 1)))  # (B, 1, ...)
    return (1 - t) * x0 + (1 - (1 - sigma_min) * (1 - t)) * x1


def velocity(x0: torch.Tensor, x1: torch.Tensor, sigma_min: float) -> torch.Tensor:
    """The flow-matching target: d x_t / d t."""
    return (1 - sigma_min) * x1 - x0


# ---- text dropout for classifier-free guidance -----------------------------------------------
def drop_condition(prob: float, values: torch.Tensor, null: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
    """``values`` [B, ...] with each sample replaced by ``null`` [1, ...] with probability ``prob``."""
    drop = torch.rand(values.shape[0], device=values.device, generator=generator) < prob
    return torch.where(drop.view(-1, *([1] * (values.ndim - 1))), null.to(values), values)


def pad_null_text(null: torch.Tensor, length: int) -> torch.Tensor:
    """The empty prompt's states [1, L0, C] stretched to ``length`` tokens by repeating the last one."""
    missing = length - null.shape[1]
    if missing < 0:
        raise ValueError(f"the empty prompt has {null.shape[1]} text tokens, more than the batch's {length}")
    return torch.cat([null, null[:, -1:].expand(-1, missing, -1)], dim=1)


# ---- conditioning modes ----------------------------------------------------------------------
def usable_cond_types(weights: Mapping[str, float], latent_frames: int, causal: bool,
                      temporal: int = TIME_COMPRESSION) -> dict[str, float]:  # fmt: skip
    """The mix without the v2v modes a video of ``latent_frames`` is too short for.

    v2v_head/tail condition on 32 video frames, the "_easy" ones on 64 (plus one for a causal
    VAE); the release drops a mode unless the latent holds more frames than that. If nothing is
    left, the sample is text-to-video.
    """
    extra = 1 if causal else 0
    usable = dict(weights)
    if latent_frames <= 32 // temporal + extra:
        for name in ("v2v_head", "v2v_tail", "v2v_head_easy", "v2v_tail_easy"):
            usable.pop(name, None)
    if latent_frames <= 64 // temporal + extra:
        for name in ("v2v_head_easy", "v2v_tail_easy"):
            usable.pop(name, None)
    return usable if any(usable.values()) else {"t2v": 1.0}


def draw_cond_types(weights: Mapping[str, float] | None, batch: int, latent_frames: int, causal: bool,
                    generator: torch.Generator | None = None) -> list[str]:  # fmt: skip
    """One conditioning mode per sample, drawn with the mix's weights; images and no mix: t2v."""
    if not weights or latent_frames == 1:
        return ["t2v"] * batch
    usable = usable_cond_types(weights, latent_frames, causal)
    names = list(usable)
    probs = torch.tensor([float(usable[name]) for name in names])
    picks = torch.multinomial(probs, batch, replacement=True, generator=generator)
    return [names[i] for i in picks.tolist()]


def feature_references(cond_type: str, latent: torch.Tensor, head: torch.Tensor | None,
                       tail: torch.Tensor | None) -> list[torch.Tensor] | None:  # fmt: skip
    """A sample's reference latents [C, T_ref, H, W] from stored features, as :func:`inference_condition` takes them.

    ``head`` / ``tail``: the first / last video frame encoded alone. The v2v modes take their
    frames from the clip's own latent (exact for the first frames of a causal VAE; for the last
    ones the release does the same with a non-causal VAE).
    """
    if cond_type == "t2v":
        return None
    if cond_type.startswith("v2v"):
        return [latent]
    wanted = {"i2v_head": [head], "i2v_tail": [tail], "i2v_loop": [head, tail]}[cond_type]
    if any(ref is None for ref in wanted):
        raise ValueError(f"{cond_type} needs the separately encoded first/last frame latents (ref_head, "
                         "ref_tail): extract the features with a condition_config")  # fmt: skip
    return wanted


def training_condition(
    x0: torch.Tensor, cond_types: Sequence[str], references: Sequence[Sequence[torch.Tensor] | None], causal: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask [B, 1, T, H, W], masked latent [B, C, T, H, W]) of a batch whose samples have their own modes.

    Each sample gets :func:`inference_condition` of its mode and references, so training sees the
    layout sampling builds.
    """
    parts = [inference_condition(x0[i : i + 1], cond_types[i], [references[i]], causal) for i in range(len(x0))]
    return torch.cat([mask for mask, _ in parts]), torch.cat([masked for _, masked in parts])
