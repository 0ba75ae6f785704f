# A tiny randomly initialised STDiT3 + 1.2-style VAE with an offline hashing text encoder: runs in
# seconds on a CPU with nothing downloaded. It writes a real MP4 of the requested size, but the
# weights are random, so the video is coloured noise, not the prompt.
_base_ = ["../../_base_/tiny.py"]

model = dict(_base_._tiny.stdit3, from_pretrained=None)
vae = _base_._tiny.vae
text_encoder = _base_._tiny.text_encoder
scheduler = dict(type="rflow", use_timestep_transform=True, num_sampling_steps=10, cfg_scale=7.0)
num_frames = 17
image_size = (128, 128)
fps = 24
dtype = "fp32"
save_dir = "samples"
