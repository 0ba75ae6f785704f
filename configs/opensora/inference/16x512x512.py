# Open-Sora 1.0 sampling: STDiT-XL/2 on 16 frames at 512x512, the SD VAE per frame, T5-XXL, IDDPM.
#   python scripts/inference.py configs/opensora/inference/16x512x512.py --ckpt-path OpenSora-v1-HQ-16x512x512.pth \
#       --prompt "a beautiful waterfall"
# The weights file is in the hub repository hpcai-tech/Open-Sora ('hf download hpcai-tech/Open-Sora
# OpenSora-v1-HQ-16x512x512.pth --local-dir .'); 1.0 models sample exactly the size they were trained on.
num_frames = 16
fps = 24
frame_interval = 3  # trained on every 3rd frame: saved at 24 // 3 = 8 fps
image_size = (512, 512)

model = dict(
    type="STDiT-XL/2",
    input_size=(16, 64, 64),
    space_scale=1.0,
    time_scale=1.0,
    enable_flash_attn=True,
    enable_layernorm_kernel=True,
    from_pretrained="OpenSora-v1-HQ-16x512x512.pth",
)
vae = dict(type="VideoAutoencoderKL", from_pretrained="stabilityai/sd-vae-ft-ema", micro_batch_size=4)
text_encoder = dict(type="t5", from_pretrained="DeepFloyd/t5-v1_1-xxl", model_max_length=120)
# the 1.0 release guided the first 3 latent channels and derived the respaced schedule in float64
scheduler = dict(type="iddpm", num_sampling_steps=100, cfg_scale=7.0, cfg_channel=3, float32_schedule=False)
dtype = "bf16"

batch_size = 1
seed = 42
save_dir = "./samples/samples/"
