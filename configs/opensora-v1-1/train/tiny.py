# Stage 1 of 1.1 shrunk to run on a CPU in minutes: a 2-layer STDiT2, a tiny random per-frame VAE and
# the offline hashing text encoder, images and 8-frame clips in buckets, IDDPM. Checks the machinery.
#   python scripts/train.py configs/opensora-v1-1/train/tiny.py --data-path meta.csv --outputs outputs/tiny11
_base_ = ["stage1.py"]

dataset = dict(frame_interval=1)
bucket_config = {"_delete_": True, "144p": {1: (1.0, 4), 8: (1.0, 2)}}
mask_ratios = None
num_workers = 0

model = dict(
    _delete_=True,
    type="STDiT2",
    depth=2,
    hidden_size=48,
    num_heads=4,
    caption_channels=32,
    model_max_length=8,
    input_sq_size=512,
    qk_norm=True,
)
vae = dict(
    _delete_=True,
    type="VideoAutoencoderKL",
    micro_batch_size=8,
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

plugin = "none"
dtype = "fp32"
grad_checkpoint = False
lr = 1e-3
warmup_steps = 0
outputs = "outputs/tiny11"
log_every = 5
ckpt_every = 0
