# A tiny randomly initialised STDiT3 with an offline hashing text encoder: runs in seconds on a
# CPU with nothing downloaded. It produces latents of the right shape, not a meaningful video.
model = dict(
    type="STDiT3",
    depth=2,
    hidden_size=64,
    num_heads=4,
    caption_channels=32,
    model_max_length=8,
    from_pretrained=None,
)
text_encoder = dict(type="hash", output_dim=32, model_max_length=8)
scheduler = dict(type="rflow", use_timestep_transform=True, num_sampling_steps=10, cfg_scale=7.0)
num_frames = 17
image_size = (128, 128)
fps = 24
dtype = "fp32"
outputs = "samples"
