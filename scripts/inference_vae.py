"""Reconstruct the clips of a metadata CSV with a video VAE; write originals, reconstructions, spatial-only ones.

python scripts/inference_vae.py configs/vae/inference/video.py --ckpt-path outputs/vae_stage3/epoch0-global_step1000 \\
    --data-path data/meta.csv --save-dir samples/vae

writes samples/vae_ori/ (the clips as the VAE sees them), samples/vae_rec/ (through the whole pipeline)
and, for the 1.2 pipeline, samples/vae_spatial/ (through the per-frame VAE only), one file per clip
under the same name, with the clip's frame count and fps; then prints the mean PSNR of the
reconstructions. The 2.0 VAEs (configs/vae/inference/dc_ae.py) write no spatial folder. --ckpt-path takes a
training checkpoint folder, a weights file or a hub id. Compare the folders with
eval/vae/eval_common_metric.py.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from opensora.config import Flag, load_config, make_parser, parse_bool, parse_cli, parse_value, run_cli, standard_flags
from opensora.inference.reconstruct import ReconstructionReport, VAEInferenceConfig, run_reconstruction

FLAGS = standard_flags("--ckpt-path", "--data-path", "--seed", "--dtype", "--batch-size") + [
    Flag("--save-dir", "save_dir", help="output prefix: DIR_ori, DIR_rec and DIR_spatial are written"),
    Flag("--num-frames", "dataset.num_frames", parse_value, "frames per clip (int) or a duration such as 2s"),
    Flag("--image-size", "dataset.image_size", int, "height and width in pixels", nargs=2),
    Flag("--sample", "sample", parse_bool, "encode posterior samples instead of means"),
    Flag("--device", "device", help="cpu, cuda or cuda:N"),
]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> ReconstructionReport:
    parser = make_parser(__doc__.strip().splitlines()[0], FLAGS)
    path, overrides, cfg_options = parse_cli(parser, argv)
    cfg = load_config(path, VAEInferenceConfig, overrides, cfg_options)
    report = run_reconstruction(cfg)
    where = ", ".join(str(folder) for folder in report.folders.values())
    print(f"wrote {report.written} clips to each of {where} ({report.skipped} unreadable or too short)")
    scores = ", ".join(f"{kind} {value:.2f} dB" for kind, value in report.psnr.items())
    print(f"mean PSNR: {scores}")
    return report


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
