# tiny.py with the Video DC-AE: the tiny DC-AE (8x space, 4x time, 16 channels) and the tiny MMDiT on
# unpatched 16-channel latents, as high_compression.py pairs the released ones. Seconds on a CPU.
#   python scripts/inference.py configs/opensora-v2/inference/high_compression_tiny.py --prompt "a cat"
_base_ = ["tiny.py"]

model = dict(in_channels=16, patch_size=1)
vae = dict(_base_._tiny.dc_ae, _delete_=True)
