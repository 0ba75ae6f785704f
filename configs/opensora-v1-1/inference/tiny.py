# A tiny random Open-Sora 1.1 stack (STDiT2, per-frame VAE, hashing text encoder, IDDPM): runs in
# seconds on a CPU, nothing downloaded; the output is noise of the requested shape.
_base_ = ["sample.py", "../../_base_/tiny.py"]

num_frames = 8
image_size = (64, 96)
model = dict(_base_._tiny.stdit2, _delete_=True, input_sq_size=512, qk_norm=True)
vae = dict(_base_._tiny.vae_2d, _delete_=True)
text_encoder = dict(_base_._tiny.text_encoder, _delete_=True)
scheduler = dict(num_sampling_steps=5)
dtype = "fp32"
save_dir = "samples"
