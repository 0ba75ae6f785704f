"""Tiny model configs shared by the tests (seconds on a CPU, same code paths as the full models)."""

TINY_TEXT_ENCODER = dict(type="hash", output_dim=32, model_max_length=8)
TINY_STDIT3 = dict(type="STDiT3", depth=2, hidden_size=64, num_heads=4, caption_channels=32, model_max_length=8)
TINY_STDIT = dict(
    type="STDiT", input_size=(3, 8, 8), depth=2, hidden_size=64, num_heads=4, caption_channels=32, model_max_length=8
)
TINY_STDIT2 = dict(type="STDiT2", depth=2, hidden_size=48, num_heads=4, caption_channels=32, model_max_length=8)
TINY_VAE_2D = dict(
    type="VideoAutoencoderKL",
    micro_batch_size=4,
    AutoencoderKL_config=dict(
        block_out_channels=[8, 16, 16, 32],
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        layers_per_block=1,
        norm_num_groups=4,
        latent_channels=4,
    ),
)
TINY_VAE_TEMPORAL = dict(
    type="VAE_Temporal", filters=8, num_res_blocks=2, channel_multipliers=[1, 2, 2, 4],
    temporal_downsample=[False, True, True], num_groups=4,
)  # fmt: skip
TINY_VAE = dict(type="VideoAutoencoderPipeline", vae_2d=TINY_VAE_2D, vae_temporal=TINY_VAE_TEMPORAL)


def randomise_weights(model, seed: int = 0):
    """Redraw every parameter as the golden fixtures did (matrices N(0, 1/fan_in), norm scales
    1 + N(0, 0.1), biases N(0, 0.1)): the release initialisations zero several output layers,
    which would make outputs constant and tests of them vacuous. Returns the model."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not param.requires_grad and name.endswith("freqs"):
                continue  # rotary frequencies are constants, not weights
            noise = torch.randn(param.shape, generator=generator)
            if param.ndim >= 2:
                param.copy_(noise / (param[0].numel() ** 0.5))
            elif "norm" in name:
                param.copy_(1 + 0.1 * noise)
            else:
                param.copy_(0.1 * noise)
    return model
