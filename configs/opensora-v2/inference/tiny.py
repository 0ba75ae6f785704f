# A tiny randomly initialised Open-Sora 2.0 stack (the MMDiT of the golden files, a 16-channel causal
# VAE, hashing text encoders for T5 and CLIP): the whole 2.0 path in seconds on a CPU, nothing
# downloaded. The video is coloured noise, not the prompt. E.g.
#   python scripts/inference.py configs/opensora-v2/inference/tiny.py --prompt "a cat" \
#       --cond_type i2v_head --ref cat.png
_base_ = ["../../_base_/tiny.py"]

model = dict(_base_._tiny.mmdit, from_pretrained=None)
vae = _base_._tiny.hunyuan_vae
text_encoder = _base_._tiny.text_encoders_v2
scheduler = dict(type="rflow_v2", num_sampling_steps=4)
num_frames = 9
image_size = (32, 64)
fps = 24
cond_type = "t2v"
motion_score = "4"
dtype = "fp32"
save_dir = "samples"
