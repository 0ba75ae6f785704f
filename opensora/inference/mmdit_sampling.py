"""Open-Sora 2.0 sampling: packing, reference conditions and the guided MMDiT denoising loop.

The MMDiT sees a latent [B, C, T, H, W] as a sequence of 2x2 patches [B, T*h*w, C*4] with
(t, h, w) positions. Every step runs one triple batch: (prompt, condition), (negative prompt,
condition) and (negative prompt, no condition), and combines the three velocities as

    v = u_0 + g_img * (u_t - u_0) + g_txt * (u_c - u_t)

(u_c, u_t, u_0 in that order), then takes an Euler step. The reference condition is a mask
channel plus the masked reference latent, packed like the latent. Text encoding, noise and the
VAE are the pipeline's; the schedule is :mod:`opensora.schedulers.shifted_flow`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from opensora.errors import ConfigError
from opensora.schedulers.shifted_flow import ShiftedFlow, euler_step

COND_TYPES = (
    "t2v",
    "i2v_head",
    "i2v_tail",
    "i2v_loop",
    "v2v_head",
    "v2v_tail",
    "v2v_head_easy",
    "v2v_tail_easy",
)
OSCILLATION_FREE_STEPS = 10  # the guidance scales apply at every one of the first steps
StepHook = Callable[[int, float, torch.Tensor], None]  # on_step(i, t, x): x [B, N, D] the model gets


def check_cond_type(name: str) -> None:
    if name not in COND_TYPES:
        raise ConfigError(f"unknown cond_type {name!r} (known: {', '.join(COND_TYPES)})")


# ---- packing --------------------------------------------------------------------------------
def pack(z: torch.Tensor, patch: int = 2) -> torch.Tensor:
    """[B, C, T, H, W] -> [B, T*h*w, C*patch*patch] with h = H/patch, w = W/patch (channel-major tokens)."""
    B, C, T, H, W = z.shape
    if H % patch or W % patch:
        raise ValueError(f"pack: latent height and width {H}x{W} must be multiples of the patch size {patch}")
    h, w = H // patch, W // patch
    x = z.reshape(B, C, T, h, patch, w, patch)
    x = x.permute(0, 2, 3, 5, 1, 4, 6)  # (B, T, h, w, C, p, p)
    return x.reshape(B, T * h * w, C * patch * patch)


def unpack(x: torch.Tensor, grid: tuple[int, int, int], patch: int = 2) -> torch.Tensor:
    """The inverse of :func:`pack`: [B, T*h*w, C*patch*patch] -> [B, C, T, h*patch, w*patch]."""
    T, h, w = grid
    B, N, D = x.shape
    if N != T * h * w or D % (patch * patch):
        raise ValueError(f"unpack: {N} tokens of width {D} do not fill a {T}x{h}x{w} grid of {patch}x{patch} patches")
    C = D // (patch * patch)
    z = x.reshape(B, T, h, w, C, patch, patch)
    z = z.permute(0, 4, 1, 2, 5, 3, 6)  # (B, C, T, h, p, w, p)
    return z.reshape(B, C, T, h * patch, w * patch)


def image_ids(batch: int, T: int, h: int, w: int, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[batch, T*h*w, 3]: the (t, h, w) index of each packed token, as floats."""
    axes = [torch.arange(n, dtype=torch.float32, device=device) for n in (T, h, w)]
    ids = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)  # (T, h, w, 3)
    return ids.reshape(1, T * h * w, 3).expand(batch, -1, -1).to(dtype).contiguous()


def text_ids(batch: int, length: int, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[batch, length, 3] zeros: text tokens all sit at position 0 (T5 encodes their order)."""
    return torch.zeros(batch, length, 3, device=device, dtype=dtype)


# ---- reference conditions -------------------------------------------------------------------
class FrameRange(NamedTuple):
    """Frames ``start:stop`` of reference file ``file`` (its index among a sample's files)."""

    file: int
    start: int
    stop: int


def reference_frame_ranges(cond_type: str, file_frames: int | Sequence[int], causal: bool = True) -> list[FrameRange]:
    """Which frames of a sample's reference files to VAE-encode, one range per reference latent.

    ``file_frames``: the frame count of each of the sample's reference files (an int: one file).
    i2v_head: the first frame of the first file; i2v_tail: the last frame of the last file;
    i2v_loop: both (in that order); v2v_head / v2v_tail: the first / last 32 frames of the first
    file, 64 for the "_easy" modes when that file holds at least 64, plus one for a causal VAE
    (the release rule, so a 64-frame file is too short for causal "_easy"). t2v: none.
    """
    check_cond_type(cond_type)
    frames = [file_frames] if isinstance(file_frames, int) else list(file_frames)
    if cond_type == "t2v":
        return []
    if not frames or min(frames) < 1:
        raise ConfigError(f"{cond_type}: needs a reference file with at least one frame, got frame counts {frames}")
    first, last = FrameRange(0, 0, 1), FrameRange(len(frames) - 1, frames[-1] - 1, frames[-1])
    if cond_type == "i2v_head":
        return [first]
    if cond_type == "i2v_tail":
        return [last]
    if cond_type == "i2v_loop":
        return [first, last]
    available = frames[0]
    wanted = (64 if "easy" in cond_type and available >= 64 else 32) + int(causal)
    if available < wanted:
        raise ConfigError(f"{cond_type}: the reference video has {available} frames, at least {wanted} are needed")
    return [FrameRange(0, 0, wanted) if "head" in cond_type else FrameRange(0, available - wanted, available)]


def _placements(cond_type: str, causal: bool) -> list[tuple[slice, int, slice]]:
    """(latent frames set, reference index, frames of that reference) for each part of a condition."""
    head, tail = slice(0, 1), slice(-1, None)
    if cond_type == "i2v_head":
        return [(head, 0, head)]
    if cond_type == "i2v_tail":
        return [(tail, -1, tail)]
    if cond_type == "i2v_loop":
        return [(head, 0, head), (tail, -1, tail)]
    if cond_type.startswith("v2v"):
        k = (16 if cond_type.endswith("easy") else 8) + int(causal)
        frames = slice(0, k) if "head" in cond_type else slice(-k, None)
        return [(frames, 0, frames)]
    return []  # t2v


def inference_condition(
    z: torch.Tensor,
    cond_type: str,
    references: Sequence[Sequence[torch.Tensor] | None] | None,
    causal: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference condition of a batch: (mask [B, 1, T, H, W], masked_z [B, C, T, H, W]).

    ``references[i]`` is None or the list of reference latents [C, T_ref, H, W] of sample i.
    i2v_head sets latent frame 0 from frame 0 of the first reference, i2v_tail the last frame
    from the last frame of the last reference, i2v_loop both; v2v_head / v2v_tail set the first /
    last k = 8 + causal frames (16 + causal for "_easy") from the same frames of the first
    reference. The mask is 1 on the frames set. A single latent frame (an image) and samples
    without a reference get no condition; t2v gives zeros.
    """
    check_cond_type(cond_type)
    B, C, T, H, W = z.shape
    mask = torch.zeros(B, 1, T, H, W, device=z.device)
    masked_z = torch.zeros(B, C, T, H, W, device=z.device)
    if references is not None and len(references) != B:
        raise ValueError(f"inference_condition: {len(references)} reference lists for a batch of {B}")
    for i, refs in enumerate(references or [None] * B):
        if refs is None or T == 1:
            continue
        for frames, which, ref_frames in _placements(cond_type, causal):
            source = refs[which][:, ref_frames]  # (C, k, H, W)
            target = masked_z[i, :, frames]
            if source.shape != target.shape:
                raise ConfigError(
                    f"{cond_type}: reference latent of sample {i} gives frames of shape {list(source.shape)} "
                    f"where the latent needs {list(target.shape)} (C, frames, H, W)"
                )
            mask[i, :, frames] = 1
            masked_z[i, :, frames] = source.to(masked_z)
    return mask.to(z.dtype), masked_z.to(z.dtype)


def replace_reference_frames(
    z: torch.Tensor,
    references: Sequence[Sequence[torch.Tensor] | None] | None,
    cond_type: str,
    first_only: bool = True,
) -> torch.Tensor:
    """After sampling, put the i2v reference frames back: frame 0 (i2v_head), the last frame
    (i2v_tail) or both (i2v_loop) of the latent [B, C, T, H, W] become the reference's.

    The release does this for batch element 0 only (``first_only=True``, the default); False
    overwrites every sample that has a reference. Other modes return ``z`` unchanged. Returns a
    new tensor.
    """
    check_cond_type(cond_type)
    if not cond_type.startswith("i2v") or references is None:
        return z
    z = z.clone()
    for i, refs in enumerate(references[:1] if first_only else references):
        if refs is None:
            continue
        for frames, which, ref_frames in _placements(cond_type, causal=True):
            z[i, :, frames] = refs[which][:, ref_frames].to(z)
    return z


# ---- denoising loops ------------------------------------------------------------------------
def oscillated(scale: float, step: int, enabled: bool) -> float:
    """Oscillation guidance: after the first steps, ``scale`` at even steps and 1.0 at odd ones."""
    if not enabled or step < OSCILLATION_FREE_STEPS or step % 2 == 0:
        return scale
    return 1.0


def temporal_image_scale(scale: float, step: int, num_timesteps: int, latent_frames: int) -> torch.Tensor:
    """[T] float32 image-guidance ramp of step ``step``: from 1 at the first latent frame to a
    ceiling that falls from ``scale`` (step 0) to 1 over the ``num_timesteps`` schedule entries."""
    ceiling = torch.linspace(scale, 1.0, num_timesteps)[step]
    return torch.linspace(1.0, ceiling.item(), latent_frames)


def _schedule(timesteps: torch.Tensor | Sequence[float]) -> list[float]:
    return timesteps.tolist() if isinstance(timesteps, torch.Tensor) else [float(t) for t in timesteps]


def guided_denoise(
    model: Callable,
    img: torch.Tensor,
    img_ids: torch.Tensor,
    txt: torch.Tensor,
    txt_ids: torch.Tensor,
    y_vec: torch.Tensor,
    cond: torch.Tensor | None,
    timesteps: torch.Tensor | Sequence[float],
    guidance: float,
    guidance_img: float,
    text_osci: bool,
    image_osci: bool,
    scale_temporal_osci: bool,
    cond_type: str,
    latent_frames: int,
    patch_size: int = 2,
    on_step: StepHook | None = None,
) -> torch.Tensor:
    """Integrate the packed latent ``img`` [B, N, D] from ``timesteps[0]`` to ``timesteps[-1]``.

    The model runs on the triple batch: ``img_ids`` [3B, N, 3], ``txt`` [3B, L, C_txt],
    ``txt_ids`` [3B, L, 3] and ``y_vec`` [3B, C_vec] in the order (prompts; negatives;
    negatives); ``cond`` [B, N, D + patch^2] (None: zeros, as in t2v) goes to the first two
    thirds, zeros to the last. ``timesteps``: the schedule, model calls at all but the last.
    Scales per step: :func:`oscillated` when ``text_osci`` / ``image_osci``; with
    ``scale_temporal_osci`` in an i2v mode and an image scale above 1, the image scale becomes
    :func:`temporal_image_scale` over the ``latent_frames`` frames (N / latent_frames tokens
    each). Timestep and guidance vectors are built in ``img``'s dtype. ``on_step(i, t, x)`` sees
    the latent handed to the model at step i. Returns [B, N, D].
    """
    check_cond_type(cond_type)
    B, N, D = img.shape
    if cond is None:
        cond = img.new_zeros(B, N, D + patch_size * patch_size)
    cond3 = torch.cat([cond, cond, torch.zeros_like(cond)])  # (3B, N, D + p*p)
    guidance_vec = torch.full((3 * B,), guidance, dtype=img.dtype, device=img.device)
    schedule = _schedule(timesteps)
    ramp = scale_temporal_osci and "i2v" in cond_type
    x = img
    for i, (t, t_next) in enumerate(zip(schedule[:-1], schedule[1:])):
        if on_step is not None:
            on_step(i, t, x)
        t_vec = torch.full((3 * B,), t, dtype=img.dtype, device=img.device)
        out = model(img=torch.cat([x, x, x]), img_ids=img_ids, txt=txt, txt_ids=txt_ids, y_vec=y_vec,
                    cond=cond3, timesteps=t_vec, guidance=guidance_vec)  # fmt: skip
        u_c, u_t, u_0 = out.chunk(3, dim=0)  # (B, N, D) each
        text_scale = oscillated(guidance, i, text_osci)
        image_scale = oscillated(guidance_img, i, image_osci)
        if ramp and image_scale > 1.0:
            per_frame = temporal_image_scale(image_scale, i, len(schedule), latent_frames)
            image_scale = per_frame.repeat_interleave(N // latent_frames)[None, :, None].to(out)  # (1, N, 1)
        v = u_0 + image_scale * (u_t - u_0) + text_scale * (u_c - u_t)
        x = euler_step(x, v, t, t_next)
    return x


def distilled_denoise(
    model: Callable,
    img: torch.Tensor,
    img_ids: torch.Tensor,
    txt: torch.Tensor,
    txt_ids: torch.Tensor,
    y_vec: torch.Tensor,
    timesteps: torch.Tensor | Sequence[float],
    guidance: float,
    on_step: StepHook | None = None,
) -> torch.Tensor:
    """Guidance-distilled sampling (the t2i Flux): one model call per step on the batch as it is,
    the guidance scale given to the model instead of a negative prompt. Shapes as the model's:
    ``img`` [B, N, D], ``img_ids`` [B, N, 3], ``txt`` [B, L, C], ``txt_ids`` [B, L, 3], ``y_vec`` [B, C]."""
    guidance_vec = torch.full((img.shape[0],), guidance, dtype=img.dtype, device=img.device)
    schedule = _schedule(timesteps)
    x = img
    for i, (t, t_next) in enumerate(zip(schedule[:-1], schedule[1:])):
        if on_step is not None:
            on_step(i, t, x)
        t_vec = torch.full((img.shape[0],), t, dtype=img.dtype, device=img.device)
        v = model(img=x, img_ids=img_ids, txt=txt, txt_ids=txt_ids, y_vec=y_vec, timesteps=t_vec, guidance=guidance_vec)
        x = euler_step(x, v, t, t_next)
    return x


def sample_mmdit(
    model: Callable,
    scheduler: ShiftedFlow,
    z: torch.Tensor,
    txt: torch.Tensor,
    y_vec: torch.Tensor,
    cond_type: str = "t2v",
    references: Sequence[Sequence[torch.Tensor] | None] | None = None,
    causal: bool = True,
    patch_size: int = 2,
    replace_first_only: bool = True,
    on_step: StepHook | None = None,
) -> torch.Tensor:
    """Sample a latent from noise ``z`` [B, C, T, H, W] (in the model's dtype; H, W multiples of
    ``patch_size``) with the settings of ``scheduler``.

    ``txt`` [3B, L, C_txt] (T5 states) and ``y_vec`` [3B, C_vec] (pooled CLIP) hold the prompts,
    then the negative prompts twice. ``references``: per sample None or its reference latents
    [C, T_ref, H, W] (:func:`inference_condition`); without any, every mode samples as t2v.
    ``causal``: the VAE is causal (one more conditioned latent frame in v2v). After sampling the
    i2v reference frames are put back (:func:`replace_reference_frames`, ``replace_first_only``).
    Returns the latent [B, C, T, H, W].
    """
    check_cond_type(cond_type)
    B, _, T, H, W = z.shape
    if txt.shape[0] != 3 * B or y_vec.shape[0] != 3 * B:
        raise ValueError(f"sample_mmdit: txt and y_vec need 3 x {B} rows (prompts; negatives; negatives), "
                         f"got {txt.shape[0]} and {y_vec.shape[0]}")  # fmt: skip
    if references is None or all(refs is None for refs in references):
        cond_type, references = "t2v", None
    txt, y_vec = txt.to(z.dtype), y_vec.to(z.dtype)
    grid = (T, H // patch_size, W // patch_size)
    img = pack(z, patch_size)  # (B, N, C*p*p)
    mask, masked_z = inference_condition(z, cond_type, references, causal=causal)
    cond = pack(torch.cat([mask, masked_z], dim=1), patch_size)  # (B, N, (1+C)*p*p)
    timesteps = scheduler.timesteps(tokens_per_frame=grid[1] * grid[2], latent_frames=T)
    x = guided_denoise(
        model, img,
        img_ids=image_ids(3 * B, *grid, device=z.device, dtype=z.dtype),
        txt=txt, txt_ids=text_ids(3 * B, txt.shape[1], device=z.device, dtype=z.dtype), y_vec=y_vec,
        cond=cond, timesteps=timesteps, guidance=scheduler.guidance, guidance_img=scheduler.guidance_img,
        text_osci=scheduler.text_osci, image_osci=scheduler.image_osci,
        scale_temporal_osci=scheduler.scale_temporal_osci, cond_type=cond_type, latent_frames=T,
        patch_size=patch_size, on_step=on_step,
    )  # fmt: skip
    latent = unpack(x, grid, patch_size)
    return replace_reference_frames(latent, references, cond_type, first_only=replace_first_only)
