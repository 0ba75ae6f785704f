"""Open-Sora 2.0 sampling with fake MMDiTs: packing, positions, reference conditions, the guided
and distilled loops (batch layout, guidance combination, oscillation, temporal ramp)."""

from __future__ import annotations

import pytest
import torch

from opensora.errors import ConfigError
from opensora.inference.mmdit_sampling import (
    COND_TYPES,
    FrameRange,
    check_cond_type,
    distilled_denoise,
    guided_denoise,
    image_ids,
    inference_condition,
    oscillated,
    pack,
    reference_frame_ranges,
    replace_reference_frames,
    sample_mmdit,
    temporal_image_scale,
    text_ids,
    unpack,
)
from opensora.schedulers.shifted_flow import ShiftedFlow, shifted_timesteps

C, T, H, W = 4, 3, 4, 6  # latent; packed grid 3 x 2 x 3 = 18 tokens of width 16
D = C * 4


class ThirdsModel:
    """Velocity ``values[k]`` everywhere in third k of the triple batch; records every call."""

    def __init__(self, values=(5.0, 3.0, 2.0)) -> None:
        self.values = values
        self.calls: list[dict] = []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        img = kwargs["img"]
        B = img.shape[0] // 3
        return torch.cat([torch.full((B, *img.shape[1:]), v, dtype=img.dtype) for v in self.values])


class LinearModel:
    """A velocity that depends on the latent, the time, the text and (in every token, as attention
    would have it) the reference condition."""

    def __call__(self, *, img, img_ids, txt, txt_ids, timesteps, y_vec, cond=None, guidance=None):
        text = txt.mean(dim=(1, 2))[:, None, None] + y_vec[:, :1, None]
        reference = cond[..., 4:].mean(dim=1, keepdim=True)  # cond: the mask (4 entries), then the latent
        return 0.1 * img + text + 0.5 * reference + timesteps[:, None, None]


def _texts(B: int, L: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    prompts, negative = torch.randn(B, L, 8, generator=g), torch.randn(1, L, 8, generator=g)
    vec, vec_neg = torch.randn(B, 6, generator=g), torch.randn(1, 6, generator=g)
    txt = torch.cat([prompts, negative.expand(2 * B, -1, -1)])  # (3B, L, 8): prompts; neg; neg
    return txt, torch.cat([vec, vec_neg.expand(2 * B, -1)])


def _denoise(model, img, schedule, cond_type="i2v_head", cond=None, **overrides):
    B, N, _ = img.shape
    txt, y_vec = _texts(B)
    settings = dict(guidance=7.5, guidance_img=3.0, text_osci=True, image_osci=True, scale_temporal_osci=True)
    settings.update(overrides)
    steps = []
    out = guided_denoise(
        model, img, image_ids(3 * B, T, 2, 3), txt, text_ids(3 * B, 5), y_vec, cond, schedule,
        cond_type=cond_type, latent_frames=T, on_step=lambda i, t, x: steps.append((i, t, x)), **settings,
    )  # fmt: skip
    return out, steps


# ---- packing and positions ------------------------------------------------------------------
def test_pack_makes_channel_major_2x2_tokens_and_unpack_inverts_it():
    z = torch.randn(2, C, T, H, W)
    x = pack(z)
    assert x.shape == (2, T * 2 * 3, D)
    # token (t=1, h=1, w=2): channels of the patch rows 2..3, columns 4..5, channel-major
    token = 1 * 6 + 1 * 3 + 2
    assert torch.equal(x[0, token], z[0, :, 1, 2:4, 4:6].reshape(-1))
    assert torch.equal(unpack(x, (T, 2, 3)), z)
    assert torch.equal(pack(z, patch=1), z.flatten(2).transpose(1, 2))
    with pytest.raises(ValueError, match="multiples of the patch size"):
        pack(torch.zeros(1, C, 1, 3, 4))
    with pytest.raises(ValueError, match="grid"):
        unpack(x, (T, 3, 3))


def test_image_ids_hold_the_packed_grid_positions_and_text_ids_are_zero():
    ids = image_ids(2, T, 2, 3, dtype=torch.bfloat16)
    assert ids.shape == (2, 18, 3) and ids.dtype == torch.bfloat16
    assert ids[1, 1 * 6 + 1 * 3 + 2].tolist() == [1.0, 1.0, 2.0]
    assert torch.equal(ids[:, :, 0], torch.arange(T).repeat_interleave(6).float().expand(2, -1).bfloat16())
    assert torch.equal(text_ids(3, 7), torch.zeros(3, 7, 3))


def test_unknown_cond_type_is_a_config_error_listing_the_modes():
    for name in COND_TYPES:
        check_cond_type(name)
    with pytest.raises(ConfigError, match="unknown cond_type 'i2v' .*t2v, i2v_head, .*v2v_tail_easy"):
        check_cond_type("i2v")
    with pytest.raises(ConfigError, match="cond_type"):
        inference_condition(torch.zeros(1, C, T, 2, 2), "v2v", None)


# ---- reference conditions -------------------------------------------------------------------
def _refs(frames: int, value: float = 1.0) -> list[torch.Tensor]:
    ref = value + torch.arange(frames, dtype=torch.float32)[None, :, None, None].expand(C, -1, 2, 2)
    return [ref, -ref]  # two references: frame f of the first holds value + f, the second its negative


def test_condition_sets_the_frames_of_each_mode():
    z = torch.zeros(2, C, 12, 2, 2)
    references = [_refs(12), None]  # sample 1 has no reference
    expected = {  # cond type -> (frames set, their values in sample 0's masked latent)
        "i2v_head": ([0], [1.0]),
        "i2v_tail": ([11], [-12.0]),  # last frame of the last reference
        "i2v_loop": ([0, 11], [1.0, -12.0]),
        "v2v_head": (list(range(9)), [1.0 + f for f in range(9)]),  # 8 + causal frames of the first reference
        "v2v_tail": (list(range(3, 12)), [1.0 + f for f in range(3, 12)]),
        "t2v": ([], []),
    }
    for cond_type, (frames, values) in expected.items():
        mask, masked = inference_condition(z, cond_type, references, causal=True)
        assert mask.shape == (2, 1, 12, 2, 2) and masked.shape == z.shape
        assert mask[0, 0, :, 0, 0].nonzero().flatten().tolist() == frames, cond_type
        assert masked[0, 0, frames, 0, 0].tolist() == values, cond_type
        assert not mask[1].any() and not masked[1].any()
        assert not masked[0][:, [f for f in range(12) if f not in frames]].any()


def test_non_causal_and_easy_modes_change_the_frame_count():
    z = torch.zeros(1, C, 20, 2, 2)
    counts = {("v2v_head", False): 8, ("v2v_head_easy", True): 17, ("v2v_tail_easy", False): 16}
    for (cond_type, causal), k in counts.items():
        mask, _ = inference_condition(z, cond_type, [_refs(20)], causal=causal)
        assert mask[0, 0, :, 0, 0].sum().item() == k


def test_one_latent_frame_gets_no_condition_and_dtype_follows_the_latent():
    mask, masked = inference_condition(torch.zeros(1, C, 1, 2, 2), "i2v_head", [_refs(1)])
    assert not mask.any() and not masked.any()
    mask, masked = inference_condition(torch.zeros(1, C, 3, 2, 2, dtype=torch.bfloat16), "i2v_head", [_refs(1)])
    assert mask.dtype == masked.dtype == torch.bfloat16


def test_a_reference_that_does_not_fit_is_a_config_error():
    with pytest.raises(ConfigError, match="v2v_head: reference latent of sample 0"):
        inference_condition(torch.zeros(1, C, 12, 2, 2), "v2v_head", [_refs(5)])  # 9 frames needed
    with pytest.raises(ConfigError, match="i2v_head"):
        inference_condition(torch.zeros(1, C, 3, 4, 4), "i2v_head", [_refs(1)])  # other spatial size


def test_reference_frame_ranges_per_mode():
    assert reference_frame_ranges("t2v", 10) == []
    assert reference_frame_ranges("i2v_head", 10) == [FrameRange(0, 0, 1)]
    assert reference_frame_ranges("i2v_tail", [10, 7]) == [FrameRange(1, 6, 7)]
    assert reference_frame_ranges("i2v_loop", [10, 7]) == [FrameRange(0, 0, 1), FrameRange(1, 6, 7)]
    assert reference_frame_ranges("i2v_head", 1) == [FrameRange(0, 0, 1)]  # an image
    assert reference_frame_ranges("v2v_head", 100) == [FrameRange(0, 0, 33)]
    assert reference_frame_ranges("v2v_tail", 100, causal=False) == [FrameRange(0, 68, 100)]
    assert reference_frame_ranges("v2v_head_easy", 100) == [FrameRange(0, 0, 65)]
    assert reference_frame_ranges("v2v_tail_easy", 64, causal=False) == [FrameRange(0, 0, 64)]
    assert reference_frame_ranges("v2v_head_easy", 40) == [FrameRange(0, 0, 33)]  # short file: 32 + 1


def test_too_short_reference_video_is_a_config_error():
    with pytest.raises(ConfigError, match="v2v_head: the reference video has 32 frames, at least 33"):
        reference_frame_ranges("v2v_head", 32)
    with pytest.raises(ConfigError, match="at least 65"):
        reference_frame_ranges("v2v_tail_easy", 64)  # the release rule: 64 frames choose 64 + 1
    with pytest.raises(ConfigError, match="at least one frame"):
        reference_frame_ranges("i2v_head", [])


def test_reference_frames_are_put_back_for_the_first_sample_by_default():
    z = torch.zeros(2, C, 3, 2, 2)
    refs = [[torch.full((C, 1, 2, 2), 1.0), torch.full((C, 1, 2, 2), 2.0)]] * 2
    out = replace_reference_frames(z, refs, "i2v_loop")
    assert out[0, :, 0].eq(1).all() and out[0, :, 2].eq(2).all() and not out[0, :, 1].any()
    assert not out[1].any() and not z.any()  # a new tensor; sample 1 untouched (release)
    every = replace_reference_frames(z, [None, refs[0]], "i2v_head", first_only=False)
    assert not every[0].any() and every[1, :, 0].eq(1).all() and not every[1, :, 1:].any()
    assert replace_reference_frames(z, refs, "v2v_head") is z
    assert replace_reference_frames(z, None, "i2v_tail") is z


# ---- guided denoising -----------------------------------------------------------------------
def test_model_gets_the_triple_batch_in_the_release_layout():
    model = ThirdsModel()
    img = torch.randn(2, 18, D, dtype=torch.bfloat16)
    cond = torch.randn(2, 18, D + 4, dtype=torch.bfloat16)
    schedule = shifted_timesteps(3, 6, T)
    _denoise(model, img, schedule, cond=cond)
    assert len(model.calls) == 3
    for step, call in enumerate(model.calls):
        x = call["img"]
        assert x.shape == (6, 18, D) and torch.equal(x[:2], x[2:4]) and torch.equal(x[:2], x[4:])
        assert torch.equal(call["cond"], torch.cat([cond, cond, torch.zeros_like(cond)]))
        assert call["timesteps"].dtype == call["guidance"].dtype == torch.bfloat16
        assert torch.equal(call["timesteps"], torch.full((6,), schedule[step].item(), dtype=torch.bfloat16))
        assert torch.equal(call["guidance"], torch.full((6,), 7.5, dtype=torch.bfloat16))
        assert call["txt"].shape == (6, 5, 8) and call["img_ids"].shape == (6, 18, 3)
    assert torch.equal(model.calls[0]["img"][:2], img)


def _velocities(steps, out):
    """The velocity of each Euler step, read off the recorded latents: (x_next - x) / (t_next - t)."""
    xs = [x for _, _, x in steps] + [out]
    ts = [t for _, t, _ in steps]
    return [(xs[i + 1] - xs[i]) / (ts[i + 1] - ts[i]) if i + 1 < len(ts) else None for i in range(len(ts))]


def test_guidance_combination_and_oscillation():
    u_c, u_t, u_0 = 5.0, 3.0, 2.0
    model = ThirdsModel((u_c, u_t, u_0))
    img = torch.zeros(1, 18, D, dtype=torch.float64)
    out, steps = _denoise(model, img, torch.linspace(1, 0, 15), cond_type="v2v_head")  # no ramp in v2v
    assert [i for i, _, _ in steps] == list(range(14))
    for i, v in enumerate(_velocities(steps, out)[:-1]):
        g_txt, g_img = (7.5, 3.0) if i < 10 or i % 2 == 0 else (1.0, 1.0)
        assert torch.allclose(v, torch.full_like(v, u_0 + g_img * (u_t - u_0) + g_txt * (u_c - u_t))), i
    assert oscillated(4.0, 11, enabled=False) == 4.0 and oscillated(4.0, 11, True) == 1.0
    assert oscillated(4.0, 9, True) == oscillated(4.0, 12, True) == 4.0


def test_temporal_ramp_of_the_image_scale_in_i2v():
    u_c, u_t, u_0 = 2.0, 2.0, 1.0  # text guidance contributes nothing: v = 1 + scale
    model = ThirdsModel((u_c, u_t, u_0))
    img = torch.zeros(1, 18, D, dtype=torch.float64)
    schedule = torch.linspace(1, 0, 13)
    out, steps = _denoise(model, img, schedule, cond_type="i2v_head")
    for i, v in enumerate(_velocities(steps, out)[:-1]):
        frames = v.reshape(T, 6, D)  # 6 tokens per latent frame
        if i >= 10 and i % 2:  # oscillated down to 1: no ramp
            assert torch.allclose(frames, torch.full_like(frames, 2.0)), i
            continue
        ceiling = torch.linspace(3.0, 1.0, 13)[i].item()
        ramp = torch.linspace(1.0, ceiling, T).double()
        assert torch.allclose(frames, (1 + ramp)[:, None, None].expand_as(frames)), i
        assert torch.allclose(ramp.float(), temporal_image_scale(3.0, i, 13, T))
    # without the switch the image scale is the same for every frame
    out, steps = _denoise(model, img, schedule, cond_type="i2v_head", scale_temporal_osci=False)
    v = _velocities(steps, out)[0]
    assert torch.allclose(v, torch.full_like(v, 1 + 3.0))


def test_t2v_ignores_the_image_scale_and_i2v_does_not():
    B = 2
    z = torch.randn(B, C, T, H, W)
    txt, y_vec = _texts(B)
    refs = [[torch.randn(C, 1, H, W)], [torch.randn(C, 1, H, W)]]

    def run(guidance_img, cond_type, references=None):
        flow = ShiftedFlow(num_sampling_steps=4, guidance_img=guidance_img)
        return sample_mmdit(LinearModel(), flow, z, txt, y_vec, cond_type=cond_type, references=references)

    assert torch.equal(run(3.0, "t2v"), run(1.5, "t2v"))
    assert not torch.allclose(run(3.0, "i2v_head", refs), run(1.5, "i2v_head", refs))
    # a conditioned mode without references samples as t2v (no condition, no ramp, no replacement)
    assert torch.equal(run(3.0, "i2v_head", [None, None]), run(3.0, "t2v"))


def test_sample_mmdit_conditions_replaces_and_keeps_shapes():
    B = 2
    z = torch.randn(B, C, T, H, W)
    txt, y_vec = _texts(B)
    refs = [[torch.randn(C, 1, H, W)], [torch.randn(C, 1, H, W)]]
    model = ThirdsModel((1.0, 1.0, 1.0))
    steps = []
    flow = ShiftedFlow(num_sampling_steps=3)
    out = sample_mmdit(model, flow, z, txt, y_vec, "i2v_head", refs, on_step=lambda i, t, x: steps.append(t))
    assert out.shape == z.shape
    assert torch.equal(out[0, :, :1], refs[0][0])  # frame 0 of sample 0 is the reference's
    assert torch.allclose(out[1], z[1] - 1.0) and torch.allclose(out[0, :, 1:], z[0, :, 1:] - 1.0)
    assert steps == flow.timesteps(tokens_per_frame=6, latent_frames=T)[:-1].tolist()
    cond = model.calls[0]["cond"]
    assert cond.shape == (3 * B, 18, D + 4)
    mask_tokens = cond[:B, :, :4]  # the mask channel: 1 on the 6 tokens of latent frame 0
    assert mask_tokens[:, :6].eq(1).all() and not mask_tokens[:, 6:].any() and not cond[2 * B :].any()
    assert torch.equal(model.calls[0]["img_ids"], image_ids(3 * B, T, 2, 3))
    with pytest.raises(ValueError, match="3 x 2 rows"):
        sample_mmdit(model, flow, z, txt[:B], y_vec[:B])


def test_distilled_denoise_runs_the_batch_as_it_is():
    x0, noise = torch.randn(2, 6, D), torch.randn(2, 6, D)
    calls = []

    def oracle(**kwargs):  # the true velocity of the straight path noise -> x0
        calls.append(kwargs)
        return noise - x0

    schedule = shifted_timesteps(4, 6, 1)
    txt, y_vec = torch.randn(2, 5, 8), torch.randn(2, 6)
    seen = []
    out = distilled_denoise(oracle, noise, image_ids(2, 1, 2, 3), txt, text_ids(2, 5), y_vec, schedule, 4.0,
                            on_step=lambda i, t, x: seen.append(t))  # fmt: skip
    assert torch.allclose(out, x0, atol=1e-6)
    assert len(calls) == 4 and "cond" not in calls[0] and calls[0]["img"].shape == (2, 6, D)
    assert torch.equal(calls[1]["guidance"], torch.full((2,), 4.0))
    assert seen == schedule[:-1].tolist()
