"""Per-method replays of recorded reference calls against this package's implementation."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from opensora.inference.sampling import rflow_sample
from opensora.registry import MODELS, build_module
from opensora.schedulers.rectified_flow import RectifiedFlow
from opensora.training.losses import rflow_loss
from tests.conformance.golden import Fixture, assert_matches, method_name, output_names

SIZE_KEYS = ("height", "width", "num_frames", "fps", "ar")


def build_model(family: str, fixture: Fixture) -> torch.nn.Module:
    model = build_module({"type": family, **fixture.config}, MODELS)
    model.load_state_dict(fixture.model_state(), strict=True)
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


def replay_rflow_sample(model, fixture: Fixture, call: dict) -> dict[str, torch.Tensor]:
    scheduler = RectifiedFlow(**fixture.meta["sampler"]["kwargs"])
    kwargs = fixture.resolve(call["kwargs"])
    tensors = fixture.tensors
    cond_mask = kwargs.get("mask")
    noise_fn = None
    if cond_mask is not None and "input.cond_noise" in tensors:
        noise_fn = lambda step, _x0: tensors["input.cond_noise"][step]  # noqa: E731
    recorder = Recorder(model)
    model_kwargs = {"mask": tensors["input.mask"], **kwargs.get("additional_args", {})}
    out = rflow_sample(
        recorder, scheduler, kwargs["z"], tensors["input.y"], tensors["input.y_null"], model_kwargs,
        cond_mask=cond_mask, noise_fn=noise_fn, progress=False,
    )  # fmt: skip
    results = {output_names(call)[0]: out}
    also = call.get("also", "")
    if "output.timesteps" in also:
        results["output.timesteps"] = torch.stack(recorder.timesteps)
    if "output.cond_x_mask" in also:
        results["output.cond_x_mask"] = torch.stack(recorder.x_masks)
    return results


def replay_rflow_loss(model, fixture: Fixture, call: dict) -> dict[str, torch.Tensor]:
    kwargs = fixture.resolve(call["kwargs"])
    scheduler = RectifiedFlow(num_timesteps=1000)
    loss = rflow_loss(
        model, scheduler, kwargs["x_start"], kwargs["model_kwargs"],
        noise=kwargs.get("noise"), frame_mask=kwargs.get("mask"), t=kwargs.get("t"),
    )  # fmt: skip
    return {output_names(call)[0]: loss}


REPLAYS: dict[str, Callable] = {
    "forward": replay_forward,
    "RFLOW.sample": replay_rflow_sample,
    "RFlowScheduler.training_losses": replay_rflow_loss,
}


def replay(family: str, fixture: Fixture, call: dict) -> None:
    method = method_name(call)
    if method not in REPLAYS:
        pytest.skip(f"{fixture.path.name}: replay of '{method}' is not implemented yet")
    model = build_model(family, fixture)
    with torch.no_grad():
        results = REPLAYS[method](model, fixture, call)
    for name, actual in results.items():
        assert_matches(actual, fixture.tensors[name], f"{fixture.path.name}:{name}")
