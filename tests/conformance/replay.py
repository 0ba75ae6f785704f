"""Per-method replays of recorded reference calls against this package's implementation."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest
import torch

from opensora.inference.sampling import iddpm_sample, rflow_sample
from opensora.registry import MODELS, build_module
from opensora.schedulers.iddpm import IDDPM
from opensora.schedulers.rectified_flow import RectifiedFlow
from opensora.training.losses import iddpm_loss_terms, rflow_loss
from tests.conformance.golden import Fixture, assert_matches, method_name, output_names
from tests.conformance.replay_v2 import REPLAYS_V2
from tests.conformance.replay_vae_v2 import BUILDERS_VAE_V2, REPLAYS_VAE_V2

SIZE_KEYS = ("height", "width", "num_frames", "fps", "ar")
# the 2.0 fixtures name the official class "MMDiTModel" (model fixtures) or "MMDiT" (sampling)
MMDIT_FAMILIES = ("MMDiTModel", "MMDiT")


def _vae_config(config: dict) -> dict:
    """The VAE fixtures nest the pipeline's fields under "pipeline" beside the spatial VAE's."""
    pipeline = {k: v for k, v in config["pipeline"].items() if k != "cal_loss"}
    return {"type": "VideoAutoencoderPipeline", "vae_2d": config["vae_2d"], **pipeline}


def _model_config(family: str, fixture: Fixture, call: dict | None) -> dict:
    if family == "VideoAutoencoderPipeline":
        return _vae_config(fixture.config)
    if family in MMDIT_FAMILIES:
        # the release-only keys (from_pretrained, cache_dir, ...) are accepted by name and dropped;
        # a call may rebuild the same weights with other switches (config_override)
        return {**fixture.config, **(call or {}).get("config_override", {}), "type": "MMDiT"}
    return {"type": family, **fixture.config}


def build_model(family: str, fixture: Fixture, call: dict | None = None) -> torch.nn.Module:
    if family in BUILDERS_VAE_V2:
        return BUILDERS_VAE_V2[family](fixture)
    model = build_module(_model_config(family, fixture, call), MODELS)
    model.load_state_dict(fixture.model_state(), strict=True)
    if hasattr(model, "set_tiling"):
        model.set_tiling(False)  # the reference decodes whole frames
    return model.eval()


class Recorder:
    """Wraps a model to keep what each sampling step handed it (conditional half only)."""

    def __init__(self, model: Callable) -> None:
        self.model = model
        self.timesteps: list[torch.Tensor] = []
        self.x_masks: list[torch.Tensor] = []

    def __call__(self, x, t, **kwargs):
        half = t.shape[0] // 2
        self.timesteps.append(t[:half])
        if kwargs.get("x_mask") is not None:
            self.x_masks.append(kwargs["x_mask"][:half])
        return self.model(x, t, **kwargs)


def replay_forward(model, fixture: Fixture, call: dict) -> dict[str, torch.Tensor]:
    kwargs = fixture.resolve(call["kwargs"])
    return {output_names(call)[0]: model(**kwargs)}


def _replay_sampling(
    sample: Callable, model, scheduler, fixture: Fixture, call: dict, kwargs: dict, z: torch.Tensor, **noise_fns
) -> dict[str, torch.Tensor]:
    """Run ``sample`` (rflow_sample, iddpm_sample) as the recorded call did; returns the sample and,
    where the call recorded them ("also"), the timesteps and conditioning masks the model was given."""
    tensors = fixture.tensors
    recorder = Recorder(model)
    model_kwargs = {"mask": tensors["input.mask"], **kwargs.get("additional_args", {})}
    out = sample(
        recorder, scheduler, z, tensors["input.y"], tensors["input.y_null"], model_kwargs,
        cond_mask=kwargs.get("mask"), progress=False, **noise_fns,
    )  # fmt: skip
    results = {output_names(call)[0]: out}
    also = call.get("also", "")
    if "output.timesteps" in also:
        results["output.timesteps"] = torch.stack(recorder.timesteps)
    if "output.cond_x_mask" in also:
        results["output.cond_x_mask"] = torch.stack(recorder.x_masks)
    return results


def replay_rflow_sample(model, fixture: Fixture, call: dict) -> dict[str, torch.Tensor]:
    scheduler = RectifiedFlow(**fixture.meta["sampler"]["kwargs"])
    kwargs = fixture.resolve(call["kwargs"])
    tensors = fixture.tensors
    noise_fn = None
    if kwargs.get("mask") is not None and "input.cond_noise" in tensors:
        noise_fn = lambda step, _x0: tensors["input.cond_noise"][step]  # noqa: E731
    return _replay_sampling(rflow_sample, model, scheduler, fixture, call, kwargs, kwargs["z"], noise_fn=noise_fn)


def replay_rflow_loss(model, fixture: Fixture, call: dict) -> dict[str, torch.Tensor]:
    kwargs = fixture.resolve(call["kwargs"])
    scheduler = RectifiedFlow(num_timesteps=1000)
    loss = rflow_loss(
        model, scheduler, kwargs["x_start"], kwargs["model_kwargs"],
        noise=kwargs.get("noise"), frame_mask=kwargs.get("mask"), t=kwargs.get("t"),
    )  # fmt: skip
    return {output_names(call)[0]: loss}


# the IDDPM switches each release's sampler behaved as (see IDDPM's docstring)
IDDPM_V1_0 = dict(cfg_channel=3, float32_schedule=False)
IDDPM_V1_1 = dict(float32_schedule=True)
IDDPM_SAMPLE_RTOL = 1e-4  # samples of random-weight models reach ~1e3; round-off grows over the steps


def _iddpm(fixture: Fixture, release: dict, **overrides) -> IDDPM:
    return IDDPM(**{**fixture.meta["sampler"]["kwargs"], **release, **overrides})


def replay_iddpm_sample(model, fixture: Fixture, call: dict, release: dict) -> dict[str, torch.Tensor]:
    """Recorded noise: the doubled-batch draws of each step, of which the prompt half is used."""
    scheduler = _iddpm(fixture, release)
    kwargs = fixture.resolve(call["kwargs"])
    tensors = fixture.tensors
    z = tensors["input.z"]
    B = z.shape[0]
    cond_mask = kwargs.get("mask")
    if cond_mask is None:
        noise_fn, renoise_fn = (lambda step, _x: tensors["input.sample_noise"][step][:B]), None
    else:
        noise_fn = lambda step, _x: tensors["input.cond_noise"][step, 1][:B]  # noqa: E731
        renoise_fn = lambda step, _x: tensors["input.cond_noise"][step, 0][:B]  # noqa: E731
    noise_fns = dict(noise_fn=noise_fn, renoise_fn=renoise_fn)
    results = _replay_sampling(iddpm_sample, model, scheduler, fixture, call, kwargs, z, **noise_fns)
    if "output.timestep_map" in tensors:
        results["output.timestep_map"] = scheduler.timestep_map
    return results


def replay_iddpm_loss(model, fixture: Fixture, call: dict, release: dict) -> dict[str, torch.Tensor]:
    scheduler = _iddpm(fixture, release, num_sampling_steps=None, timestep_respacing="")
    x_start, t = [fixture.resolve(arg) for arg in call["args"][1:]]
    kwargs = fixture.resolve(call["kwargs"])
    terms = iddpm_loss_terms(
        model, scheduler, x_start, kwargs["model_kwargs"], noise=kwargs["noise"], frame_mask=kwargs.get("mask"), t=t
    )
    return dict(zip(output_names(call), (terms["loss"], terms["mse"], terms["vb"])))


def replay_vae_spatial_encode(model, fixture: Fixture, call: dict) -> dict[str, torch.Tensor]:
    (x,) = [fixture.resolve(a) for a in call["args"]]
    return {output_names(call)[0]: model.spatial_vae.encode(x, sample=False)}


def replay_vae_encode(model, fixture: Fixture, call: dict) -> dict[str, torch.Tensor]:
    (x,) = [fixture.resolve(a) for a in call["args"]]
    return {output_names(call)[0]: model.encode(x, sample=False)}


def replay_vae_posterior(model, fixture: Fixture, call: dict) -> dict[str, torch.Tensor]:
    """A note-only record: the temporal posterior of the input video's spatial latents, micro-clips
    joined in time (the training pass keeps one posterior per micro-clip)."""
    posteriors = model(fixture.tensors["input.x"], sample=False, decode_pixels=False).posteriors
    mean, logvar = (torch.cat([getattr(p, name) for p in posteriors], dim=2) for name in ("mean", "logvar"))
    names = output_names(call)
    return {names[0]: mean, names[1]: logvar}


def replay_vae_decode(model, fixture: Fixture, call: dict) -> dict[str, torch.Tensor]:
    (z,) = [fixture.resolve(a) for a in call["args"]]
    return {output_names(call)[0]: model.decode(z, **call.get("kwargs", {}))}


# (model family, recorded method) -> replay; "" is a record described only by its note
REPLAYS: dict[tuple[str, str], Callable] = {
    ("STDiT3", "forward"): replay_forward,
    ("STDiT3", "RFLOW.sample"): replay_rflow_sample,
    ("STDiT3", "RFlowScheduler.training_losses"): replay_rflow_loss,
    ("STDiT2", "forward"): replay_forward,
    ("STDiT2", "IDDPM.sample"): partial(replay_iddpm_sample, release=IDDPM_V1_1),
    ("STDiT2", "IDDPM.training_losses"): partial(replay_iddpm_loss, release=IDDPM_V1_1),
    ("STDiT", "forward"): replay_forward,
    ("STDiT", "IDDPM.sample"): partial(replay_iddpm_sample, release=IDDPM_V1_0),
    ("STDiT", "IDDPM.training_losses"): partial(replay_iddpm_loss, release=IDDPM_V1_0),
    ("VideoAutoencoderPipeline", "spatial_vae.encode"): replay_vae_spatial_encode,
    ("VideoAutoencoderPipeline", "encode"): replay_vae_encode,
    ("VideoAutoencoderPipeline", "decode"): replay_vae_decode,
    ("VideoAutoencoderPipeline", ""): replay_vae_posterior,
    ("MMDiTModel", "forward"): replay_forward,
    **REPLAYS_V2,
    **REPLAYS_VAE_V2,
}


def replay(family: str, fixture: Fixture, call: dict) -> None:
    method = method_name(call)
    if (family, method) not in REPLAYS:
        pytest.fail(f"{fixture.path.name}: no replay of {family} '{method}' (add one to REPLAYS)")
    model = build_model(family, fixture, call)
    with torch.no_grad():
        results = REPLAYS[family, method](model, fixture, call)
    rtol = IDDPM_SAMPLE_RTOL if method == "IDDPM.sample" else 1e-5
    for name, actual in results.items():
        assert_matches(actual, fixture.tensors[name], f"{fixture.path.name}:{name}", rtol=rtol)
