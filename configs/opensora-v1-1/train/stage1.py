# Open-Sora 1.1, training stage 1: STDiT2-XL/2 on mixed images and videos of many sizes and lengths
# (the bucket sampler), the SD VAE per frame, T5-XXL with 200 tokens, IDDPM, conditioning masks.
#   torchrun --standalone --nproc_per_node 8 scripts/train.py configs/opensora-v1-1/train/stage1.py \
#       --data-path data/meta.csv --ckpt-path PIXART_INIT
_base_ = ["../../_base_/v1_1_models.py", "../../_base_/mask_ratios.py"]

dataset = dict(type="VariableVideoTextDataset", data_path=None, frame_interval=3, transform_name="resize_crop")
# {resolution: {num_frames: (keep_prob, batch_size)}}
bucket_config = {
    "144p": {1: (1.0, 200), 16: (1.0, 36), 32: (1.0, 18), 64: (1.0, 9), 128: (1.0, 4)},
    "256": {1: (0.8, 200), 16: (0.5, 22), 32: (0.5, 11), 64: (0.5, 6), 128: (0.8, 4)},
    "240p": {1: (0.8, 200), 16: (0.5, 22), 32: (0.5, 10), 64: (0.5, 6), 128: (0.5, 3)},
    "360p": {1: (0.5, 120), 16: (0.5, 9), 32: (0.5, 4), 64: (0.5, 2), 128: (0.5, 1)},
    "512": {1: (0.5, 120), 16: (0.5, 9), 32: (0.5, 4), 64: (0.5, 2), 128: (0.8, 1)},
    "480p": {1: (0.4, 80), 16: (0.6, 6), 32: (0.6, 3), 64: (0.6, 1)},
    "720p": {1: (0.4, 40), 16: (0.6, 3), 32: (0.6, 1)},
    "1024": {1: (0.3, 40)},
}
num_workers = 8

model = dict(from_pretrained=None)  # PixArt-alpha 512 in STDiT2's layout: --ckpt-path PIXART_INIT
scheduler = dict(type="iddpm", timestep_respacing="")  # all 1000 steps for training

plugin = "zero2"
dtype = "bf16"
grad_checkpoint = True
lr = 2e-5
adam_eps = 1e-8
grad_clip = 1.0
ema_decay = 0.99
epochs = 1000
seed = 42
outputs = "outputs/v1-1-stage1"
log_every = 10
ckpt_every = 500
