"""Open-Sora in the browser: text-to-video, text-to-image and image-to-video with the inference pipeline.

python gradio/app.py [--config CONFIG] [--port N] [--share]

Without --config it loads the demo model shipped in the repository (configs/demo/inference.py), so it
starts on any laptop; pass an inference config for real weights.
"""

from __future__ import annotations

import argparse
import inspect
import os
import random
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

# This folder is named like the library; it has no __init__.py, so the installed gradio (a
# regular package) always wins over it as a namespace package, wherever Python is started.
try:
    import gradio as gr
    from gradio import Blocks  # noqa: F401  (fails if only this folder was found)
except ImportError:
    sys.exit("the Gradio demo needs gradio: pip install -e '.[gradio]'")

from opensora.config import load_config, run_cli
from opensora.errors import OpenSoraError
from opensora.inference.config import InferenceConfig
from opensora.inference.interactive import IMAGE, GenerationRequest, InteractiveGenerator, Scores, refine_available
from opensora.inference.prompts import CAMERA_MOTIONS

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "configs" / "demo" / "inference.py"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--config", help="inference config (default: the demo model, configs/demo/inference.py)")
    parser.add_argument("--port", type=int, default=7860, help="port to serve on (default 7860)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: the whole network)")
    parser.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: the config's, else cuda if available)")
    parser.add_argument("--output-dir", help="folder for the results (default: a new temporary folder)")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE", help="override config keys")
    return parser.parse_args(argv)


# gradio swaps this marker default for a tracker per call; track_tqdm shows the sampler's progress bar
PROGRESS = gr.Progress(track_tqdm=True)


def _generate(generator: InteractiveGenerator, request: GenerationRequest) -> tuple[str, str]:
    """(file, a line saying what was made); any failure becomes a message in the page."""
    try:
        result = generator.generate(request)
    except OpenSoraError as exc:
        raise gr.Error(" ".join(str(exc).split())) from None
    except Exception as exc:  # a bug or out of memory: report it and keep serving
        traceback.print_exc()
        raise gr.Error(f"generation failed: {type(exc).__name__}: {exc}") from exc
    size = request.size
    mode = "image-to-video" if request.reference_path else "text-to-video" if size.num_frames > 1 else "text-to-image"
    info = f"{mode}, {size.num_frames} frame(s) of {size.height}x{size.width}, seed {request.seed}: {result.prompt}"
    return str(result.path), info


def make_handlers(generator: InteractiveGenerator) -> tuple[Callable[..., tuple[str, str]], ...]:
    """The two endpoints; their parameter names are the API's (gradio_client keyword arguments)."""
    choices = generator.choices

    def generate_video(prompt: str, resolution: str, aspect_ratio: str | None, duration: str, use_aes: bool,
                       aes: float, use_flow: bool, flow: float, use_camera_motion: bool, camera_motion: str,
                       sampling_steps: float, cfg_scale: float, seed: float | None, reference_image: str | None,
                       refine: bool, progress=PROGRESS) -> tuple[str, str]:  # fmt: skip
        """A video (a PNG for the duration "image") from the prompt; with a reference image, starting from it."""
        try:
            size = choices.size(resolution, aspect_ratio, duration)
        except OpenSoraError as exc:
            raise gr.Error(str(exc)) from None
        scores = Scores(aes if use_aes else None, flow if use_flow else None,
                        camera_motion if use_camera_motion else None)  # fmt: skip
        request = GenerationRequest(prompt or "", size, int(seed or 0), int(sampling_steps), float(cfg_scale),
                                    scores, reference_image or None, bool(refine))  # fmt: skip
        return _generate(generator, request)

    def generate_image(prompt: str, resolution: str, aspect_ratio: str | None, use_aes: bool, aes: float,
                       sampling_steps: float, cfg_scale: float, seed: float | None, refine: bool,
                       progress=PROGRESS) -> tuple[str, str]:  # fmt: skip
        """One frame from the prompt, placed as the reference image for "Generate video"."""
        return generate_video(prompt, resolution, aspect_ratio, IMAGE, use_aes, aes, False, 0.0, False, "",
                              sampling_steps, cfg_scale, seed, None, refine)  # fmt: skip

    return generate_video, generate_image


def _settings(generator: InteractiveGenerator) -> dict[str, gr.components.Component]:
    """The input column, by the endpoints' parameter names."""
    choices, refinable = generator.choices, refine_available()
    ui = {"prompt": gr.Textbox(label="Prompt", lines=3, placeholder="a red panda in the snow", elem_id="prompt")}
    ui["refine"] = gr.Checkbox(label="Refine the prompt with GPT-4o-mini", value=False, interactive=refinable,
                               info=None if refinable else "needs the openai package and OPENAI_API_KEY")  # fmt: skip
    ui["resolution"] = gr.Radio(list(choices.resolutions), value=choices.resolution, label="Resolution")
    ui["aspect_ratio"] = gr.Radio(list(choices.aspect_ratios), value=choices.aspect_ratio,
                                  label="Aspect ratio (height:width)", visible=bool(choices.aspect_ratios))  # fmt: skip
    ui["duration"] = gr.Radio(list(choices.durations), value=choices.duration, label="Duration")
    for name, label, default, slider in [
        ("aes", "Aesthetic score", True, lambda: gr.Slider(4.0, 7.0, value=6.5, step=0.1, show_label=False)),
        ("flow", "Motion strength", False, lambda: gr.Slider(0, 100, value=5, step=1, show_label=False)),
        ("camera_motion", "Camera motion", False,
         lambda: gr.Dropdown(list(CAMERA_MOTIONS), value=CAMERA_MOTIONS[0], show_label=False)),
    ]:  # fmt: skip
        with gr.Row():  # each passed to the model only while its switch is on
            ui[f"use_{name}"] = gr.Checkbox(label=label, value=default)
            ui[name] = slider()
    steps, scale = generator.sampling_steps, generator.guidance_scale
    ui["sampling_steps"] = gr.Slider(1, max(100, steps), value=steps, step=1, label="Sampling steps")
    ui["cfg_scale"] = gr.Slider(0.0, max(15.0, scale), value=scale, step=0.5, label="CFG scale")
    with gr.Row():
        ui["seed"] = gr.Number(value=generator.cfg.seed, precision=0, minimum=0, label="Seed")
        ui["random_seed"] = gr.Button("Random seed", size="sm")
    ui["reference_image"] = gr.Image(label="Reference image", type="filepath", format="png",
                                     sources=["upload", "clipboard"], elem_id="reference")  # fmt: skip
    return ui


def build_demo(generator: InteractiveGenerator) -> gr.Blocks:
    generate_video, generate_image = make_handlers(generator)
    with gr.Blocks(title="Open-Sora", analytics_enabled=False) as demo:
        gr.Markdown(
            "# Open-Sora\nText to video, or text to image. With a reference image (uploaded, or made "
            "with *Generate image*), *Generate video* starts the video from it."
        )
        with gr.Row():
            with gr.Column():
                ui = _settings(generator)
            with gr.Column():
                with gr.Row():
                    image_button = gr.Button("Generate image")
                    video_button = gr.Button("Generate video", variant="primary")
                video = gr.Video(label="Video", autoplay=True, loop=True, interactive=False, elem_id="video")
                info = gr.Textbox(label="Made", interactive=False, lines=2, elem_id="info")
        video_inputs = [ui[name] for name in inspect.signature(generate_video).parameters if name != "progress"]
        image_inputs = [ui[name] for name in inspect.signature(generate_image).parameters if name != "progress"]
        # one generation at a time: both buttons share the model
        video_button.click(generate_video, video_inputs, [video, info], concurrency_id="model")
        image_button.click(generate_image, image_inputs, [ui["reference_image"], info], concurrency_id="model")
        ui["random_seed"].click(lambda: random.randrange(2**31), None, ui["seed"], api_visibility="private")
    return demo


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # The demo works offline: no telemetry from the parts of gradio that the Blocks' own
    # analytics_enabled=False does not reach (gradio 6 reads this when it would send, not at import).
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    config = args.config or str(DEMO_CONFIG)
    cfg = load_config(config, InferenceConfig, {"device": args.device}, args.cfg_options)
    out_dir = Path(args.output_dir or tempfile.mkdtemp(prefix="opensora-gradio-")).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"loading {config}; results go to {out_dir}", flush=True)
    demo = build_demo(InteractiveGenerator.from_config(cfg, out_dir))
    demo.queue(default_concurrency_limit=1)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, allowed_paths=[str(out_dir)],
                show_error=True, footer_links=["api", "settings"])  # fmt: skip


if __name__ == "__main__":
    run_cli(main)
