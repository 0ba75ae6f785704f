"""Tiny model configs shared by the tests (seconds on a CPU, same code paths as the full models)."""

TINY_TEXT_ENCODER = dict(type="hash", output_dim=32, model_max_length=8)
TINY_STDIT3 = dict(type="STDiT3", depth=2, hidden_size=64, num_heads=4, caption_channels=32, model_max_length=8)
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
