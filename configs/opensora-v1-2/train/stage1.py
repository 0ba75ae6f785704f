# Open-Sora 1.2, training stage 1: STDiT3-XL/2 on mixed images and videos from 144p to 1080p,
# initialised from PixArt-Sigma weights, with rectified flow and the release's conditioning masks.
#   torchrun --standalone --nproc_per_node 8 scripts/train.py configs/opensora-v1-2/train/stage1.py \
#       --data-path data/meta.csv --ckpt-path PIXART_INIT
# PIXART_INIT is PixArt-Sigma XL/2 in STDiT3's layout (a from_pretrained folder or weights file). Loading is
# strict, so it must also hold the temporal blocks PixArt lacks (zero-initialised ones make them the identity).
# No absolute paths: data comes from --data-path, models from hub ids or --ckpt-path, outputs go to --outputs.
_base_ = ["../../_base_/mask_ratios.py"]

# ---- data: each bucket is {num_frames: (keep_prob, batch_size)}; a sample lands in the largest
# resolution it has 80% of the pixels for, then in the longest clip it is long enough for
dataset = dict(type="VariableVideoTextDataset", data_path=None, frame_interval=1, transform_name="resize_crop")
bucket_config = {
    "144p": {1: (1.0, 96), 51: (1.0, 28), 102: ((1.0, 0.33), 14), 204: ((1.0, 0.1), 6), 408: ((1.0, 0.1), 3)},
    "256": {1: (0.4, 96), 51: (0.5, 22), 102: ((0.5, 0.33), 10), 204: ((0.5, 0.1), 4), 408: ((0.5, 0.1), 2)},
    "240p": {1: (0.3, 96), 51: (0.4, 22), 102: ((0.4, 0.33), 10), 204: ((0.4, 0.1), 4), 408: ((0.4, 0.1), 2)},
    "360p": {1: (0.2, 56), 51: (0.15, 10), 102: ((0.15, 0.33), 5), 204: ((0.15, 0.1), 2), 408: ((0.15, 0.1), 1)},
    "512": {1: (0.1, 56), 51: (0.15, 10), 102: ((0.15, 0.33), 5), 204: ((0.15, 0.1), 2), 408: ((0.15, 0.1), 1)},
    "480p": {1: (0.1, 36), 51: (0.15, 6), 102: ((0.15, 0.33), 3), 204: ((0.15, 0.1), 1)},
    "720p": {1: (0.05, 18), 51: (0.1, 2), 102: ((0.1, 0.33), 1)},
    "1024": {1: (0.05, 18), 51: (0.1, 2), 102: ((0.1, 0.33), 1)},
    "1080p": {1: (0.1, 8)},
}
num_workers = 8

# ---- models
model = dict(
    type="STDiT3-XL/2",
    from_pretrained=None,  # the PixArt-Sigma initialisation: --ckpt-path PIXART_INIT (see the top)
    qk_norm=True,
    enable_flash_attn=True,
    enable_layernorm_kernel=True,
    freeze_y_embedder=True,
)
vae = dict(
    type="OpenSoraVAE_V1_2", from_pretrained="hpcai-tech/OpenSora-VAE-v1.2", micro_frame_size=17, micro_batch_size=4
)
text_encoder = dict(type="t5", from_pretrained="DeepFloyd/t5-v1_1-xxl", model_max_length=300)
scheduler = dict(type="rflow", use_timestep_transform=True, sample_method="logit-normal")

# ---- parallelism and precision
plugin = "zero2"
sp_size = 1
dtype = "bf16"
grad_checkpoint = True

# ---- optimisation: AdamW, linear warmup then a constant lr
lr = 1e-4
adam_eps = 1e-15
weight_decay = 0.0
warmup_steps = 1000
grad_clip = 1.0
ema_decay = 0.99
epochs = 1000

# ---- logging and checkpoints
seed = 42
outputs = "outputs/stage1"
wandb = False
log_every = 10
ckpt_every = 500
keep_last = 5
