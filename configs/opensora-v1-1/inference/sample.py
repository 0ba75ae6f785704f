# Open-Sora 1.1 sampling: STDiT2-XL/2 (any size, frame count and aspect ratio), the SD VAE per frame,
# T5-XXL with 200 tokens, IDDPM with guidance on 3 channels.
#   python scripts/inference.py configs/opensora-v1-1/inference/sample.py --num-frames 16 \
#       --image-size 240 426 --prompt "a beautiful waterfall"
_base_ = ["../../_base_/v1_1_models.py"]

num_frames = 16
frame_interval = 3  # saved at 24 // 3 = 8 fps
fps = 24
image_size = (240, 426)
multi_resolution = "STDiT2"

model = dict(from_pretrained="hpcai-tech/OpenSora-STDiT-v2-stage3")
scheduler = dict(type="iddpm", num_sampling_steps=100, cfg_scale=7.0, cfg_channel=3)
dtype = "bf16"

batch_size = 1
seed = 42
save_dir = "./samples/samples/"
