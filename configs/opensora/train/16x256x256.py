# Open-Sora 1.0: STDiT-XL/2 on fixed 16-frame 256x256 clips (every 3rd frame), SD VAE per frame,
# T5-XXL with 120 tokens, IDDPM.
#   torchrun --standalone --nproc_per_node 8 scripts/train.py configs/opensora/train/16x256x256.py \
#       --data-path data/meta.csv --ckpt-path PIXART_INIT
dataset = dict(type="VideoTextDataset", data_path=None, num_frames=16, frame_interval=3, image_size=(256, 256))
bucket_config = None
batch_size = 8
num_workers = 4

model = dict(
    type="STDiT-XL/2",
    input_size=(16, 32, 32),
    space_scale=0.5,
    time_scale=1.0,
    from_pretrained=None,  # PixArt-alpha 256 in STDiT's layout: --ckpt-path PIXART_INIT
    enable_flash_attn=True,
    enable_layernorm_kernel=True,
)
vae = dict(type="VideoAutoencoderKL", from_pretrained="stabilityai/sd-vae-ft-ema", micro_batch_size=4)
text_encoder = dict(type="t5", from_pretrained="DeepFloyd/t5-v1_1-xxl", model_max_length=120)
scheduler = dict(type="iddpm", timestep_respacing="")

plugin = "zero2"
dtype = "bf16"
grad_checkpoint = True
lr = 2e-5
grad_clip = 1.0
ema_decay = 0.9999
epochs = 1000
seed = 42
outputs = "outputs/v1-0-16x256x256"
log_every = 10
ckpt_every = 1000
