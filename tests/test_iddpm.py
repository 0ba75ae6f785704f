"""IDDPM (Open-Sora 1.0/1.1) and DPM-Solver: respacing, diffusion maths, guidance, sampling, training."""

from __future__ import annotations

import pytest
import torch

from opensora.errors import ConfigError
from opensora.inference.sampling import doubled_batch_noise, dpm_solver_sample, guided_prediction, iddpm_sample
from opensora.models.stdit.stdit import STDiT
from opensora.models.stdit.stdit2 import STDiT2
from opensora.registry import SCHEDULERS, build_module
from opensora.schedulers.dpm_solver import DPMSolver
from opensora.schedulers.iddpm import IDDPM, space_timesteps
from opensora.training.losses import iddpm_loss, iddpm_loss_terms
from tests.tiny import TINY_STDIT, TINY_STDIT2, fit_fixed_batch, randomise_weights

SIZES = dict(
    height=torch.full((2,), 64.0), width=torch.full((2,), 64.0), num_frames=torch.full((2,), 16.0),
    ar=torch.ones(2), fps=torch.full((2,), 8.0),
)  # fmt: skip


def _tiny(spec: dict):
    cls = STDiT if spec["type"] == "STDiT" else STDiT2
    return cls(**{k: v for k, v in spec.items() if k != "type"})


# ---- respacing and schedule -------------------------------------------------------------------


def test_space_timesteps_keeps_the_release_steps():
    assert space_timesteps(1000, "5") == {0, 250, 500, 749, 999}  # 499.5 rounds to even
    assert space_timesteps(1000, 5) == space_timesteps(1000, [5])
    assert space_timesteps(1000, "ddim4") == {0, 250, 500, 750}
    assert space_timesteps(10, "2,3") == {0, 4, 5, 7, 9}
    assert space_timesteps(10, "") == set(range(10)) == space_timesteps(10, None)
    with pytest.raises(ConfigError, match="cannot take 20"):
        space_timesteps(10, "20")


def test_respacing_keeps_the_noise_levels_of_the_kept_steps():
    full = IDDPM(timestep_respacing="", float32_schedule=False)
    short = IDDPM(num_sampling_steps=10, float32_schedule=False)
    assert short.num_timesteps == 10 and short.alphas_cumprod.dtype == torch.float64
    torch.testing.assert_close(short.alphas_cumprod, full.alphas_cumprod[short.timestep_map], rtol=1e-12, atol=0)
    released_v1_1 = IDDPM(num_sampling_steps=10)  # 1.1 kept the respaced schedule in float32
    assert released_v1_1.alphas_cumprod.dtype == torch.float32
    torch.testing.assert_close(released_v1_1.alphas_cumprod.double(), short.alphas_cumprod, rtol=1e-5, atol=0)
    assert full.betas[0].item() == pytest.approx(1e-4) and full.betas[-1].item() == pytest.approx(0.02)


def test_scheduler_config_is_validated_and_registered():
    with pytest.raises(ConfigError, match="not both"):
        IDDPM(num_sampling_steps=10, timestep_respacing="10")
    with pytest.raises(ConfigError, match="noise_schedule"):
        IDDPM(noise_schedule="quadratic")
    assert isinstance(build_module({"type": "iddpm", "num_sampling_steps": 7}, SCHEDULERS), IDDPM)
    assert isinstance(build_module({"type": "dpm-solver", "num_sampling_steps": 7}, SCHEDULERS), DPMSolver)
    cosine = IDDPM(noise_schedule="squaredcos_cap_v2", timestep_respacing="")
    assert cosine.alphas_cumprod[-1] < 1e-3 and cosine.betas.max() <= 0.999


# ---- diffusion maths --------------------------------------------------------------------------


def test_true_noise_recovers_x0_and_the_posterior():
    diffusion = IDDPM(timestep_respacing="", float32_schedule=False)
    x0 = torch.randn(2, 4, 2, 4, 4)
    noise = torch.randn_like(x0)
    t = torch.tensor([10, 700])
    x_t = diffusion.q_sample(x0, t, noise)
    out = diffusion.p_mean_variance(torch.cat([noise, torch.zeros_like(noise)], dim=1), x_t, t)
    torch.testing.assert_close(out["pred_xstart"], x0, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out["mean"], diffusion.q_posterior(x0, x_t, t)[0], atol=1e-4, rtol=1e-4)


def test_learned_range_spans_posterior_variance_to_beta():
    diffusion = IDDPM(timestep_respacing="", float32_schedule=False)
    x = torch.zeros(1, 4, 1, 2, 2)
    t = torch.tensor([500])
    low = diffusion.p_mean_variance(torch.cat([x, -torch.ones_like(x)], dim=1), x, t)["log_variance"]
    high = diffusion.p_mean_variance(torch.cat([x, torch.ones_like(x)], dim=1), x, t)["log_variance"]
    assert torch.allclose(low, diffusion.posterior_log_variance_clipped[500].float().expand_as(x))
    assert torch.allclose(high, diffusion.betas[500].log().float().expand_as(x))


def test_loss_terms_vanish_for_the_true_noise_and_posterior_variance():
    diffusion = IDDPM(timestep_respacing="")
    x0 = torch.randn(2, 4, 3, 4, 4).clamp(-1, 1)
    noise = torch.randn_like(x0)

    def perfect(x, t, **_):
        return torch.cat([noise, -torch.ones_like(noise)], dim=1)  # -1: the posterior variance

    terms = iddpm_loss_terms(perfect, diffusion, x0, {}, noise=noise, t=torch.tensor([300, 0]))
    assert set(terms) == {"loss", "mse", "vb"} and terms["loss"].shape == (2,)
    assert torch.allclose(terms["mse"], torch.zeros(2), atol=1e-10)
    assert terms["vb"][0].abs() < 1e-3  # KL(q || p) = 0 when p is the true posterior
    assert terms["vb"][1] > 0.1  # at t = 0 the term is the decoder's NLL, in bits


def test_vb_trains_only_the_variance_channels():
    diffusion = IDDPM(timestep_respacing="")
    x0 = torch.randn(1, 4, 2, 2, 2)
    output = torch.randn(1, 8, 2, 2, 2, requires_grad=True)
    terms = iddpm_loss_terms(lambda x, t, **_: output, diffusion, x0, {}, t=torch.tensor([400]))
    (grad,) = torch.autograd.grad(terms["vb"].sum(), output)
    assert grad[:, :4].abs().max() == 0 and grad[:, 4:].abs().max() > 0


# ---- guidance, conditioning and sampling -----------------------------------------------------


def test_guidance_on_the_first_channels_only():
    cond, uncond = torch.randn(2, 8, 1, 2, 2), torch.randn(2, 8, 1, 2, 2)

    def model(x, t, y=None, **_):
        return torch.cat([cond, uncond])

    z = torch.zeros(2, 4, 1, 2, 2)
    out = guided_prediction(model, z, torch.zeros(2), torch.zeros(4, 1, 2, 3), 7.0, guided_channels=3)
    torch.testing.assert_close(out[:, :3], uncond[:, :3] + 7.0 * (cond[:, :3] - uncond[:, :3]))
    assert torch.equal(out[:, 3:], cond[:, 3:])  # channel 3 unguided, variance from the prompt half


def test_frame_masks_scale_by_the_number_of_steps():
    scheduler = IDDPM(num_sampling_steps=5)
    cond_mask = torch.tensor([[0.0, 1.0, 0.6]])  # 0.6 * 5 steps -> step 3
    renoise, x_mask, keep = scheduler.frame_masks(cond_mask, torch.tensor([3]))
    assert renoise.tolist() == [[False, False, True]]
    assert x_mask.tolist() == [[False, True, False]]
    assert keep.tolist() == [[True, False, False]]


def test_conditioned_sampling_keeps_reference_frames():
    scheduler = IDDPM(num_sampling_steps=4, cfg_scale=1.0, float32_schedule=False)
    z = torch.randn(1, 4, 3, 2, 2)
    seen, steps = [], []

    def model(x, t, x_mask=None, **_):
        seen.append(x_mask[:1].tolist()[0])
        steps.append(t[0].item())
        return torch.cat([torch.zeros_like(x), torch.zeros_like(x)], dim=1)

    cond_mask = torch.tensor([[0.0, 1.0, 0.5]])  # frame 2: re-noised at step 0.5 * 4 = 2, generated below it
    y = torch.zeros(1, 1, 2, 3)
    renoise_steps = []

    def renoise_fn(step, like):
        renoise_steps.append(step)
        return torch.zeros_like(like)  # so the kept frame's values can be followed exactly

    out = iddpm_sample(model, scheduler, z, y, y, {}, cond_mask=cond_mask, renoise_fn=renoise_fn, progress=False)
    assert steps == [999, 666, 333, 0] and renoise_steps == [0, 1, 2, 3]
    assert seen == [[False, True, False], [False, True, False], [False, True, True], [False, True, True]]
    # as released, the kept frame (mask 0) is re-noised at step 0 (x -> sqrt(abar_0) x with zero
    # noise) and goes through the last, noise-free step, which predicts x0 = x / sqrt(abar_0) back
    torch.testing.assert_close(out[:, :, 0], z[:, :, 0])
    assert not torch.allclose(out[:, :, 1], z[:, :, 1], atol=1e-2)


def test_default_noise_is_the_prompt_half_of_a_doubled_draw():
    like = torch.zeros(2, 3, 4)
    torch.manual_seed(5)
    ours = doubled_batch_noise(0, like)
    torch.manual_seed(5)
    assert torch.equal(ours, torch.randn(4, 3, 4)[:2])


@pytest.mark.parametrize("spec", [TINY_STDIT, TINY_STDIT2], ids=["STDiT", "STDiT2"])
def test_both_samplers_follow_the_prompt_on_the_tiny_models(spec):
    model = randomise_weights(_tiny(spec)).eval()
    z = torch.randn(2, 4, 3, 8, 8)
    y, other_y, y_null = torch.randn(3, 2, 1, 8, 32)
    kwargs = dict(SIZES, mask=torch.ones(2, 8, dtype=torch.long))
    samplers = {
        "iddpm": lambda prompt, null, scale: iddpm_sample(
            model, IDDPM(num_sampling_steps=3), z, prompt, null, kwargs, guidance_scale=scale, progress=False
        ),
        "dpm-solver": lambda prompt, null, scale: dpm_solver_sample(
            model, DPMSolver(num_sampling_steps=3), z, prompt, null, kwargs, guidance_scale=scale, progress=False
        ),
    }

    def run(sampler, *args):
        torch.manual_seed(1)  # the same sampling noise for every run
        with torch.no_grad():
            return sampler(*args)

    for name, sampler in samplers.items():
        out = run(sampler, y, y_null, 4.0)
        assert out.shape == z.shape and torch.isfinite(out).all() and not torch.allclose(out, z)
        assert not torch.allclose(run(sampler, other_y, y_null, 4.0), out, atol=1e-3), name  # the prompt steers it
        # prompt = null prompt: nothing for guidance to amplify, so its scale cannot matter
        torch.testing.assert_close(run(sampler, y_null, y_null, 7.0), run(sampler, y_null, y_null, 1.0), msg=name)


def test_tiny_model_trained_with_iddpm_loss_improves():
    torch.manual_seed(0)
    model = _tiny(dict(TINY_STDIT2, class_dropout_prob=0.0, depth=1))
    scheduler = IDDPM(timestep_respacing="")
    x0 = torch.randn(2, 4, 2, 4, 4)
    noise = torch.randn_like(x0)
    kwargs = dict(SIZES, y=torch.randn(2, 1, 8, 32), mask=torch.ones(2, 8, dtype=torch.long))

    def loss_at(step: int) -> torch.Tensor:
        t = torch.tensor([250, 750]) if step % 2 else torch.tensor([500, 100])
        return iddpm_loss(model, scheduler, x0, kwargs, noise=noise, t=t).mean()

    first, last = fit_fixed_batch(model, loss_at, steps=20, lr=3e-3)
    assert last < 0.4 * first, f"loss did not fall enough: {first:.3f} -> {last:.3f}"


# ---- DPM-Solver -------------------------------------------------------------------------------


def _gaussian_data_error(steps: int, skip_type: str, order: int = 2, data_std: float = 0.5) -> float:
    """Relative error of DPM-Solver against the exact ODE solution for Gaussian data.

    For x_0 ~ N(0, s^2) the ideal noise prediction is sigma x / (alpha^2 s^2 + sigma^2), and the
    probability-flow ODE just rescales: x(t) = x(1) * sqrt(Var_t / Var_1), Var_t = alpha^2 s^2 + sigma^2.
    """
    solver = DPMSolver(num_sampling_steps=steps, cfg_scale=1.0, order=order, skip_type=skip_type)

    def ideal(x, t, **_):
        time = (t[:1].double() + 1) / solver.total_steps  # the model's step number back to continuous time
        alpha, sigma = (v.float() for v in solver.marginal(time))
        eps = sigma * x / (alpha**2 * data_std**2 + sigma**2)
        return torch.cat([eps, torch.zeros_like(eps)], dim=1)

    z = torch.randn(2, 4, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    y = torch.zeros(2, 1, 3, 8)
    out = dpm_solver_sample(ideal, solver, z, y, y, {}, progress=False)
    times = solver.timesteps()
    (a1, s1), (a0, s0) = solver.marginal(times[:1]), solver.marginal(times[-1:])
    exact = z * ((a0**2 * data_std**2 + s0**2) / (a1**2 * data_std**2 + s1**2)).sqrt().float()
    return ((out - exact).abs().max() / exact.abs().max()).item()


def test_dpm_solver_converges_to_the_exact_ode_solution():
    errors = [_gaussian_data_error(n, "logSNR") for n in (5, 10, 20, 80)]
    assert errors == sorted(errors, reverse=True), errors
    assert errors[-1] < 1e-3, errors
    assert errors[2] / errors[3] > 8, errors  # second order: 4x the steps -> ~16x smaller error
    first_order = _gaussian_data_error(80, "logSNR", order=1)
    assert first_order > 3 * errors[-1]
    uniform = [_gaussian_data_error(n, "time_uniform") for n in (5, 20, 80)]  # the release's spacing
    assert uniform == sorted(uniform, reverse=True) and uniform[-1] < 0.05, uniform


def test_dpm_solver_approaches_its_many_step_result_on_a_tiny_model():
    model = randomise_weights(_tiny(dict(TINY_STDIT2, depth=1))).eval()
    z = torch.randn(1, 4, 2, 4, 4)
    y, y_null = torch.randn(1, 1, 8, 32), torch.randn(1, 1, 8, 32)
    kwargs = {k: v[:1] for k, v in SIZES.items()}

    def run(steps: int) -> torch.Tensor:
        solver = DPMSolver(num_sampling_steps=steps, cfg_scale=4.0, skip_type="logSNR")
        with torch.no_grad():
            return dpm_solver_sample(model, solver, z, y, y_null, kwargs, progress=False)

    reference = run(32)
    errors = [(run(n) - reference).abs().max().item() for n in (4, 8, 16)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 0.5 * errors[0], errors
