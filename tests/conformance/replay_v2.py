"""Replays of the Open-Sora 2.0 golden fixtures (MMDiT forward, sampling, the distilled denoiser)."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable

import torch

from opensora.inference.mmdit_sampling import (
    distilled_denoise,
    image_ids,
    inference_condition,
    pack,
    sample_mmdit,
    text_ids,
    unpack,
)
from opensora.schedulers.shifted_flow import ShiftedFlow, shifted_timesteps
from tests.conformance.golden import Fixture, output_names


def replay_schedule(_model, fixture: Fixture, call: dict) -> dict[str, torch.Tensor]:
    """``get_schedule(num_steps, image_seq_len, num_frames, shift_alpha, shift)`` for each record."""
    results = {}
    for record in call["records"]:
        args = record["call"]
        results[record["output"]] = shifted_timesteps(
            args["num_steps"], args["image_seq_len"], args["num_frames"],
            shift=args.get("shift", True), alpha=args.get("shift_alpha"),
        )  # fmt: skip
    return results


def replay_inference_condition(_model, fixture: Fixture, call: dict) -> dict[str, torch.Tensor]:
    """Every cond type on ``input.cond_z``, sample 0 with both references and sample 1 with none."""
    tensors = fixture.tensors
    z = tensors["input.cond_z"]
    references = [[tensors["input.cond_ref_a"], tensors["input.cond_ref_b"]]] + [None] * (z.shape[0] - 1)
    results = {}
    for record in call["records"]:
        # the one-frame record runs on the first latent frame only
        record_z = z[:, :, :1] if "cond_z[:, :, :1]" in record.get("z", "") else z
        mask_name, masked_name = record["outputs"]
        mask, masked_z = inference_condition(record_z, record["cond_type"], references, causal=record["causal"])
        results[mask_name], results[masked_name] = mask, masked_z
        if record["cond_type"] == "i2v_loop" and record["causal"]:  # call["also"]: the packed cond
            results["output.cond_i2v_loop_packed"] = pack(torch.cat([mask, masked_z], dim=1), patch=2)
    return results


def replay_prepare(_model, fixture: Fixture, call: dict) -> dict[str, torch.Tensor]:
    """Packing and positions of one latent repeated for the prompts; unpacking restores the latent."""
    tensors = fixture.tensors
    z = fixture.resolve(call["args"]["img"])
    patch = call["args"]["patch_size"]
    batch = len(call["args"]["prompt"])
    _, _, T, H, W = z.shape
    grid = (T, H // patch, W // patch)
    img = pack(z, patch).repeat(batch // z.shape[0], 1, 1)
    outputs = call["outputs"]
    return {
        outputs["img"]: img,
        outputs["img_ids"]: image_ids(batch, *grid),
        outputs["txt_ids"]: text_ids(batch, tensors["input.t5_table"].shape[1]),
        call["args"]["img"]: unpack(img[:1], grid, patch),
    }


class CondRecorder:
    """Wraps the model to keep the condition of the first third of each triple batch."""

    def __init__(self, model: Callable) -> None:
        self.model = model
        self.conds: list[torch.Tensor] = []

    def __call__(self, *, img, cond, **kwargs):
        self.conds.append(cond[: img.shape[0] // 3])
        return self.model(img=img, cond=cond, **kwargs)


def _api_arguments(method: str) -> dict:
    """cond_type, patch_size, text and neg of the recorded ``api_fn(opt, ...)`` call."""
    call_args = method.rsplit("(", 1)[-1]
    found = dict(re.findall(r"(\w+)=('[^']*'|\[[^\]]*\]|None|\d+)", call_args))
    parsed = {}
    for key in ("cond_type", "patch_size", "text", "neg"):
        parsed[key] = ast.literal_eval(found[key]) if key in found else None
    return parsed


def replay_api(model, fixture: Fixture, call: dict) -> dict[str, torch.Tensor]:
    """A full ``api_fn`` run from its recorded noise, text stand-ins and reference latents."""
    tensors = fixture.tensors
    opt = call["sampling_option"]
    args = _api_arguments(call["method"])
    name = output_names(call)[0].removeprefix("output.").removesuffix("_sample")
    z = tensors[f"input.{name}_z"]
    B = z.shape[0]
    assert z.shape[2] == (opt["num_frames"] - 1) // opt["temporal_reduction"] + 1  # causal VAE latent frames
    prompts = args["text"]
    negatives = args["neg"] or [""] * len(prompts)
    rows = [fixture.meta["text_table_rows"].index(text) for text in prompts + negatives + negatives]
    txt, y_vec = tensors["input.t5_table"][rows], tensors["input.clip_table"][rows]
    references = None
    if f"input.{name}_ref" in tensors:
        references = [[tensors[f"input.{name}_ref"][i]] for i in range(B)]
    scheduler = ShiftedFlow(
        num_sampling_steps=opt["num_steps"], shift=opt["shift"], flow_shift=opt["flow_shift"],
        guidance=opt["guidance"], guidance_img=opt["guidance_img"], text_osci=opt["text_osci"],
        image_osci=opt["image_osci"], scale_temporal_osci=opt["scale_temporal_osci"],
    )  # fmt: skip
    recorder = CondRecorder(model)
    steps: list[tuple[float, torch.Tensor]] = []
    sample = sample_mmdit(
        recorder, scheduler, z, txt, y_vec, cond_type=args["cond_type"], references=references,
        causal=opt["is_causal_vae"], patch_size=args["patch_size"], on_step=lambda _i, t, x: steps.append((t, x)),
    )  # fmt: skip
    return {
        f"output.{name}_sample": sample,
        f"output.{name}_traj": torch.stack([x for _, x in steps]),
        f"output.{name}_timesteps": torch.tensor([t for t, _ in steps], dtype=torch.float32),
        f"output.{name}_cond": recorder.conds[0],
    }


def replay_distilled(model, fixture: Fixture, call: dict) -> dict[str, torch.Tensor]:
    """``DistilledDenoiser().denoise`` over the recorded schedule, which is itself checked against
    :func:`shifted_timesteps` for the packed one-frame latent it was made for."""
    kwargs = fixture.resolve(call["kwargs"])
    schedule_name = call["kwargs"]["timesteps"].split()[0]  # "input.schedule_t2i (python list)"
    schedule = fixture.tensors[schedule_name]
    ids = kwargs["img_ids"]
    latent_frames = int(ids[0, :, 0].max().item()) + 1
    sample = distilled_denoise(
        model, kwargs["img"], ids, kwargs["txt"], kwargs["txt_ids"], kwargs["y_vec"], schedule, kwargs["guidance"]
    )
    tokens_per_frame = ids.shape[1] // latent_frames
    return {
        output_names(call)[0]: sample,
        schedule_name: shifted_timesteps(len(schedule) - 1, tokens_per_frame, latent_frames),
    }


# (model family, recorded method) -> replay, merged into replay.REPLAYS
REPLAYS_V2: dict[tuple[str, str], Callable] = {
    ("MMDiT", "opensora.utils.sampling.get_schedule"): replay_schedule,
    ("MMDiT", "opensora.utils.inference.prepare_inference_condition"): replay_inference_condition,
    ("MMDiT", "opensora.utils.sampling.prepare"): replay_prepare,
    ("MMDiT", "opensora.utils.sampling.prepare_api"): replay_api,
    ("MMDiTModel", "opensora.utils.sampling.DistilledDenoiser.denoise"): replay_distilled,
}
