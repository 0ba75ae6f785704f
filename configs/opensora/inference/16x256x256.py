# Open-Sora 1.0 at 16x256x256 (OpenSora-v1-16x256x256.pth from hpcai-tech/Open-Sora).
_base_ = ["16x512x512.py"]

image_size = (256, 256)
model = dict(input_size=(16, 32, 32), space_scale=0.5, from_pretrained="OpenSora-v1-16x256x256.pth")
