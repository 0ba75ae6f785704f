# A tiny randomly initialised STDiT3 + 1.2-style VAE with an offline hashing text encoder: runs in
# seconds on a CPU with nothing downloaded. It writes a real MP4 of the requested size, but the
# weights are random, so the video is coloured noise, not the prompt.
model = dict(
    type="STDiT3",
    depth=2,
    hidden_size=64,
    num_heads=4,
    caption_channels=32,
    model_max_length=8,
    from_pretrained=None,
)
vae = dict(
    type="VideoAutoencoderPipeline",
    vae_2d=dict(
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
    ),
    vae_temporal=dict(
        type="VAE_Temporal",
        filters=8,
        num_res_blocks=2,
        channel_multipliers=[1, 2, 2, 4],
        temporal_downsample=[False, True, True],
        num_groups=4,
    ),
)
text_encoder = dict(type="hash", output_dim=32, model_max_length=8)
scheduler = dict(type="rflow", use_timestep_transform=True, num_sampling_steps=10, cfg_scale=7.0)
num_frames = 17
image_size = (128, 128)
fps = 24
dtype = "fp32"
save_dir = "samples"
