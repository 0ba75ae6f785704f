# A tiny random Open-Sora 1.0 stack (STDiT, per-frame VAE, hashing text encoder, IDDPM): runs in
# seconds on a CPU, nothing downloaded; the output is noise of the right shape (8 frames, 64x64).
_base_ = ["16x512x512.py", "../../_base_/tiny.py"]

num_frames = 8
image_size = (64, 64)
model = dict(_base_._tiny.stdit, _delete_=True, input_size=(8, 8, 8))
vae = dict(_base_._tiny.vae_2d, _delete_=True)
text_encoder = dict(_base_._tiny.text_encoder, _delete_=True)
scheduler = dict(num_sampling_steps=5)
dtype = "fp32"
save_dir = "samples"
