# A tiny random Open-Sora 1.0 stack (STDiT, per-frame VAE, hashing text encoder, IDDPM): runs in
# seconds on a CPU, nothing downloaded; the output is noise of the right shape (8 frames, 64x64).
_base_ = ["16x512x512.py"]

num_frames = 8
image_size = (64, 64)
model = dict(
    _delete_=True,
    type="STDiT",
    input_size=(8, 8, 8),
    depth=2,
    hidden_size=64,
    num_heads=4,
    caption_channels=32,
    model_max_length=8,
)
vae = dict(
    _delete_=True,
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
text_encoder = dict(_delete_=True, type="hash", output_dim=32, model_max_length=8)
scheduler = dict(num_sampling_steps=5)
dtype = "fp32"
save_dir = "samples"
