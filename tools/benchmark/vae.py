"""Benchmark a video VAE: encode and decode time and peak memory per video size.

The VAEs are the released architectures: the 1.2 VAE, and 2.0's Hunyuan causal 3-D VAE and Video
DC-AE. Each case runs in a fresh process so its peak memory is its own (CPU: peak RSS; CUDA: max
allocated). Weights are random: speed and memory do not depend on their values. ``auto`` tiling
is each VAE's default (the 2.0 VAEs tile beyond 256 px and 64 / 32 frames); ``--set`` overrides a
constructor argument, e.g. smaller tiles to show memory flat in the frame count on a small CPU.

    python tools/benchmark/vae.py --cases 17x256x256 51x720x1280
    python tools/benchmark/vae.py --cases 17x256x256 34x256x256 51x256x256 --tiling off
    python tools/benchmark/vae.py --cases 51x720x1280 --dtype bf16   # AMX CPUs: ~3x faster
    python tools/benchmark/vae.py --vae hunyuan --cases 33x256x256 129x768x768 --device cuda --dtype bf16
    python tools/benchmark/vae.py --vae dc_ae --cases 9x64x64 33x64x64 --set temporal_tile_size=8
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import json, resource, sys, time
import torch
from opensora.registry import MODELS, build_module
T, H, W = (int(v) for v in sys.argv[1].split("x"))
tiling, device, mode, dtype_name = sys.argv[2], torch.device(sys.argv[3]), sys.argv[4], sys.argv[5]
model_cfg = json.loads(sys.argv[6])
dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
torch.manual_seed(0)
vae = build_module(model_cfg, MODELS).to(device, dtype).eval()
vae.set_tiling({"on": True, "off": False, "auto": None}[tiling])
x = torch.rand(1, 3, T, H, W, device=device, dtype=dtype) * 2 - 1
def peak():
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
base = peak()
result = {"vae": model_cfg["type"], "size": sys.argv[1], "tiling": tiling, "device": str(device),
          "dtype": dtype_name, "mode": mode, "threads": torch.get_num_threads(), "base_mib": round(base, 1)}
with torch.no_grad():
    start = time.perf_counter()
    if mode == "encode":
        z = vae.encode(x, sample=False)
    else:
        z = torch.randn(1, vae.out_channels, *vae.get_latent_size((T, H, W)), device=device, dtype=dtype)
        out = vae.decode(z, num_frames=T)
    if device.type == "cuda":
        torch.cuda.synchronize()
    result["seconds"] = round(time.perf_counter() - start, 2)
result["peak_mib"] = round(peak(), 1)
print(json.dumps(result))
"""


# the released architectures, as the release configs build them
VAES = {
    "v1_2": {"type": "OpenSoraVAE_V1_2"},
    "hunyuan": {"type": "hunyuan_vae", "in_channels": 3, "out_channels": 3, "layers_per_block": 2,
                "latent_channels": 16},
    "dc_ae": {"type": "dc_ae", "model_name": "dc-ae-f32t4c128"},
}  # fmt: skip


def parse_setting(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--set takes KEY=VALUE, got {text!r}")
    return key, json.loads(value)


def run_case(size: str, tiling: str, device: str, mode: str, dtype: str, model_cfg: dict) -> dict:
    command = [sys.executable, "-c", CHILD, size, tiling, device, mode, dtype, json.dumps(model_cfg)]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"size": size, "mode": mode, "error": proc.stderr.strip().splitlines()[-1]}
    return json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vae", default="v1_2", choices=sorted(VAES))
    parser.add_argument("--set", nargs="*", type=parse_setting, default=[], help="constructor KEY=VALUE (JSON)")
    parser.add_argument("--cases", nargs="+", default=["17x256x256", "51x720x1280"], help="TxHxW video sizes")
    parser.add_argument("--tiling", default="auto", choices=["auto", "on", "off"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--modes", nargs="+", default=["encode", "decode"], choices=["encode", "decode"])
    args = parser.parse_args()
    model_cfg = {**VAES[args.vae], **dict(args.set)}
    for size in args.cases:
        for mode in args.modes:
            print(json.dumps(run_case(size, args.tiling, args.device, mode, args.dtype, model_cfg)), flush=True)


if __name__ == "__main__":
    main()
