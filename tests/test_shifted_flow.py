"""Open-Sora 2.0 shifted flow schedule: the warp, its alpha, the scheduler's settings and checks."""

from __future__ import annotations

import math

import pytest
import torch

from opensora.errors import ConfigError
from opensora.registry import SCHEDULERS, build_module
from opensora.schedulers.shifted_flow import ShiftedFlow, euler_step, shift_alpha, shifted_timesteps


def test_alpha_is_a_line_through_the_release_points_times_sqrt_frames():
    assert shift_alpha(256, 1) == pytest.approx(1.0)
    assert shift_alpha(4096, 1) == pytest.approx(3.0)
    assert shift_alpha(2176, 9) == pytest.approx(2.0 * 3)  # halfway along the line, 3 = sqrt(9)


def test_schedule_runs_from_one_to_zero_and_is_warped_towards_noise():
    uniform = shifted_timesteps(10, 4096, 4, shift=False)
    assert uniform.dtype == torch.float32 and uniform.shape == (11,)
    assert torch.equal(uniform, torch.linspace(1, 0, 11))
    shifted = shifted_timesteps(10, 4096, 4)  # alpha = 3 * 2
    assert shifted[0] == 1 and shifted[-1] == 0
    assert (shifted[1:-1] > uniform[1:-1]).all()  # every inner step is noisier
    assert (shifted[1:] < shifted[:-1]).all()
    a = 6.0
    assert torch.allclose(shifted, a * uniform / (1 + (a - 1) * uniform))


def test_alpha_one_and_a_fixed_flow_shift():
    assert torch.allclose(shifted_timesteps(8, 256, 1), torch.linspace(1, 0, 9))  # a = 1: no warp
    fixed = shifted_timesteps(8, 99999, 77, alpha=3.0)  # the size no longer matters
    assert torch.equal(fixed, shifted_timesteps(8, 1, 1, alpha=3.0))
    assert fixed[4].item() == pytest.approx(3 * 0.5 / (1 + 2 * 0.5))


def test_scheduler_defaults_are_the_release_settings():
    flow = build_module({"type": "rflow_v2"}, SCHEDULERS)
    assert isinstance(flow, ShiftedFlow)
    assert (flow.num_sampling_steps, flow.shift, flow.flow_shift) == (50, True, None)
    assert (flow.guidance, flow.guidance_img) == (7.5, 3.0)
    assert flow.text_osci and flow.image_osci and flow.scale_temporal_osci
    assert torch.equal(flow.timesteps(252, 33), shifted_timesteps(50, 252, 33))
    fixed = ShiftedFlow(num_sampling_steps=4, flow_shift=2.0)
    assert torch.equal(fixed.timesteps(8, 3), shifted_timesteps(4, 0, 0, alpha=2))
    assert torch.equal(ShiftedFlow(num_sampling_steps=4, shift=False).timesteps(4096, 30), torch.linspace(1, 0, 5))


def test_euler_step_lands_on_the_data_for_a_straight_path():
    x0, noise = torch.randn(2, 5), torch.randn(2, 5)
    x = noise
    steps = shifted_timesteps(7, 500, 3).tolist()
    for t, t_next in zip(steps[:-1], steps[1:]):
        x = ShiftedFlow.step(x, noise - x0, t, t_next)  # x_t = (1 - t) x0 + t noise
    assert torch.allclose(x, x0, atol=1e-6)
    assert torch.equal(euler_step(torch.ones(3), torch.ones(3), 0.75, 0.5), torch.full((3,), 0.75))


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        (dict(num_sampling_steps=0), "num_sampling_steps"),
        (dict(num_sampling_steps=2.5), "num_sampling_steps"),
        (dict(guidance=-1.0), "guidance"),
        (dict(guidance=math.inf), "guidance"),
        (dict(guidance_img=math.nan), "guidance_img"),
        (dict(guidance_img=None), "guidance_img"),
        (dict(flow_shift=0.0), "flow_shift"),
        (dict(flow_shift=-2.0), "flow_shift"),
        (dict(flow_shift=math.inf), "flow_shift"),
    ],
)
def test_bad_settings_are_one_line_config_errors_naming_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=rf"^rflow_v2: {key} ") as info:
        ShiftedFlow(**kwargs)
    assert "\n" not in str(info.value)


def test_unknown_setting_is_refused_by_the_registry():
    with pytest.raises(ConfigError, match="use_timestep_transform"):
        build_module({"type": "rflow_v2", "use_timestep_transform": True}, SCHEDULERS)


def test_cfg_scale_is_the_1_x_name_of_the_text_guidance():
    scheduler = build_module({"type": "rflow_v2", "cfg_scale": 5.0}, SCHEDULERS)
    assert scheduler.guidance == scheduler.cfg_scale == 5.0
