# Open-Sora 1.1 sampling: STDiT2-XL/2 (any size, frame count and aspect ratio), the SD VAE per frame,
# T5-XXL with 200 tokens, IDDPM with guidance on 3 channels.
#   python scripts/inference.py configs/opensora-v1-1/inference/sample.py --num-frames 16 \
#       --image-size 240 426 --prompt "a beautiful waterfall"
num_frames = 16
frame_interval = 3  # saved at 24 // 3 = 8 fps
fps = 24
image_size = (240, 426)
multi_resolution = "STDiT2"

model = dict(
    type="STDiT2-XL/2",
    from_pretrained="hpcai-tech/OpenSora-STDiT-v2-stage3",
    input_sq_size=512,
    qk_norm=True,
    qk_norm_legacy=True,
    enable_flash_attn=True,
    enable_layernorm_kernel=True,
)
vae = dict(type="VideoAutoencoderKL", from_pretrained="stabilityai/sd-vae-ft-ema", micro_batch_size=4)
text_encoder = dict(type="t5", from_pretrained="DeepFloyd/t5-v1_1-xxl", model_max_length=200)
scheduler = dict(type="iddpm", num_sampling_steps=100, cfg_scale=7.0, cfg_channel=3)
dtype = "bf16"

batch_size = 1
seed = 42
save_dir = "./samples/samples/"
