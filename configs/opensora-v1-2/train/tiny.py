# Stage 1 shrunk to run on a CPU in minutes: a 2-layer STDiT3, a tiny random VAE and the offline
# hashing text encoder, nothing downloaded. It checks the training machinery, not video quality.
#   python scripts/train.py configs/opensora-v1-2/train/tiny.py --data-path meta.csv --outputs outputs/tiny
#   torchrun --standalone --nproc_per_node 2 scripts/train.py configs/opensora-v1-2/train/tiny.py --data-path meta.csv
# The data needs images of at least 192x192 pixels (144p is the smallest bucket) and videos longer than 17 frames.
_base_ = ["stage1.py"]

bucket_config = {"_delete_": True, "144p": {1: (1.0, 4), 17: (1.0, 2)}}
num_workers = 0

model = dict(
    _delete_=True,
    type="STDiT3",
    depth=2,
    hidden_size=64,
    num_heads=4,
    caption_channels=32,
    model_max_length=8,
    from_pretrained=None,
)
vae = dict(
    _delete_=True,
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
text_encoder = dict(_delete_=True, type="hash", output_dim=32, model_max_length=8)

plugin = "ddp"  # one process without torchrun: the plain model
dtype = "fp32"
grad_checkpoint = False
lr = 1e-3
adam_eps = 1e-8
warmup_steps = 0
ema_decay = 0.99
epochs = 2
outputs = "outputs/tiny"
log_every = 5
ckpt_every = 20
keep_last = 2
