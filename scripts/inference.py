"""Sample images and videos from text prompts (and reference images or videos).

python scripts/inference.py --prompt "a red circle moving right"   # the demo model

python scripts/inference.py configs/opensora-v1-2/inference/sample.py --num-frames 4s \\
    --resolution 720p --aspect-ratio 9:16 --prompt "a beautiful waterfall"
python scripts/inference.py configs/opensora-v2/inference/256px.py --cond_type i2v_head --ref cat.png \\
    --num_frames 129 --aspect_ratio 16:9 --motion-score 4 --prompt "a cat turns its head"
torchrun --nproc_per_node 2 scripts/inference.py CONFIG ...   # sequence-parallel over 2 processes
"""

from __future__ import annotations

from pathlib import Path

from opensora.config import Flag, load_config, make_parser, parse_bool, parse_cli, run_cli, standard_flags
from opensora.inference.config import InferenceConfig, prefer_command_line
from opensora.inference.runner import run

# without a config the demo model shipped in the repository samples (CPU, about a minute)
DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo" / "inference.py"
FLAGS = standard_flags(
    "--ckpt-path", "--seed", "--dtype", "--flash-attn", "--layernorm-kernel", "--batch-size",
    "--prompt", "--prompt-path", "--num-frames", "--resolution", "--aspect-ratio", "--image-size", "--fps",
    "--save-fps", "--num-sampling-steps", "--cfg-scale", "--num-sample", "--start-index", "--end-index", "--loop",
    "--reference-path", "--mask-strategy", "--aes", "--flow",
) + [
    Flag("--save-dir", "save_dir", help="output directory"),
    Flag("--sample-name", "sample_name", help="file name prefix of the samples"),
    Flag("--prompt-as-path", "prompt_as_path", parse_bool, "name files after prompts; skip those already written"),
    Flag("--camera-motion", "camera_motion", help="camera motion appended to the prompt, e.g. 'pan left'"),
    Flag("--condition-frame-length", "condition_frame_length", int, "latent frames shared by loop segments"),
    Flag("--condition-frame-edit", "condition_frame_edit", float, "edit ratio of the shared frames"),
    Flag("--align", "align", int, "snap mask-strategy starts to multiples of this many latent frames"),
    Flag("--llm-refine", "llm_refine", parse_bool, "refine prompts with the OpenAI API (needs OPENAI_API_KEY)"),
    Flag("--offload", "offload", parse_bool, "keep the model and VAE on the CPU while the other runs"),
    Flag("--device", "device", help="cpu, cuda or cuda:N"),
    Flag("--cond_type", "cond_type", help="2.0: t2v, i2v_head, i2v_tail, i2v_loop, v2v_head or v2v_tail",
         aliases=("--cond-type",)),
    Flag("--motion-score", "motion_score", help="2.0: motion score appended to the prompt (e.g. 4)",
         aliases=("--motion_score",)),
    Flag("--negative-prompt", "negative_prompt", help="2.0: the negative prompt (default empty)"),
    Flag("--verbose", "verbose", int, "0 quiet, 1 a line per sample, 2 progress bars"),
]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = make_parser(__doc__.strip().splitlines()[0], FLAGS, default_config=DEMO_CONFIG)
    path, overrides, cfg_options = parse_cli(parser, argv)
    cfg = load_config(path, InferenceConfig, overrides, cfg_options)
    run(prefer_command_line(cfg, overrides))  # e.g. --image-size replaces the config's resolution


if __name__ == "__main__":
    run_cli(main)
