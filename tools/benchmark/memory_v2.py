"""Estimated GPU memory per stage of Open-Sora 2.0 sampling at the release sizes, with and without offload.

The 11B MMDiT and the Hunyuan VAE are built on the meta device from the release configs (exact weight
bytes, nothing allocated); T5-XXL's encoder and CLIP-L's text model enter by their parameter counts.
Activations use the pipeline's own estimate (opensora.inference.memory.estimate_peak).

    python tools/benchmark/memory_v2.py            # 256px and 768px, 16:9, 129 frames, bf16
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from opensora.config import load_config
from opensora.inference.adapters import adapter_for
from opensora.inference.config import InferenceConfig
from opensora.inference.memory import estimate_peak, module_bytes
from opensora.inference.pipeline import VideoPipeline
from opensora.inference.runner import resolve_size
from opensora.registry import MODELS, build_module

T5_XXL_ENCODER_PARAMS = 4_762_310_656  # google/t5-v1_1-xxl, encoder only
CLIP_L_TEXT_PARAMS = 123_060_480  # openai/clip-vit-large-patch14, text model
GIB = 2**30


class _Weights(nn.Module):
    """A stand-in holding ``count`` meta parameters (only their bytes matter here)."""

    def __init__(self, count: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(count, device="meta", dtype=dtype))
        self.model_max_length = 512


def meta_build(module_cfg: dict, dtype: torch.dtype) -> nn.Module:
    kwargs = {key: value for key, value in module_cfg.items() if key != "from_pretrained"}
    with torch.device("meta"):
        return build_module(kwargs, MODELS).to(dtype)


def estimate(config: str, offload: bool) -> dict[str, float]:
    cfg = load_config(config, InferenceConfig)
    dtype = torch.bfloat16
    model, vae = meta_build(cfg.model, dtype), meta_build(cfg.vae, dtype)
    text = _Weights(T5_XXL_ENCODER_PARAMS + CLIP_L_TEXT_PARAMS, dtype)
    pipeline = VideoPipeline(model, None, text, vae, adapter_for(model, vae=vae), torch.device("cuda"), dtype,
                             offload=offload)  # fmt: skip
    size = resolve_size(cfg)
    latent = pipeline.latent_size(size)
    peaks = estimate_peak(pipeline, 1, latent, size, 2)
    return {"size": f"{size.num_frames}x{size.height}x{size.width}", "latent": latent,
            "weights_gib": {"mmdit": module_bytes(model) / GIB, "vae": module_bytes(vae) / GIB,
                            "text": module_bytes(text) / GIB},
            "peak_gib": {stage: mib / 1024 for stage, mib in peaks.items() if mib}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("configs", nargs="*", default=["configs/opensora-v2/inference/256px.py",
                                                       "configs/opensora-v2/inference/768px.py"])  # fmt: skip
    args = parser.parse_args()
    for config in args.configs:
        for offload in (False, True):
            row = estimate(config, offload)
            peaks = ", ".join(f"{stage} {gib:.1f}" for stage, gib in row["peak_gib"].items())
            weights = ", ".join(f"{name} {gib:.1f}" for name, gib in row["weights_gib"].items())
            print(f"{config}  {row['size']} latent {tuple(row['latent'])}  offload={offload}: "
                  f"peak GiB {peaks}  (weights GiB {weights}; max {max(row['peak_gib'].values()):.1f})")  # fmt: skip


if __name__ == "__main__":
    main()
