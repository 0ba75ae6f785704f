# Open-Sora 2.0 at 768px (16:9 is 576 x 1024): the 256px settings at the higher resolution, as the
# release's configs/diffusion/inference/768px.py. The VAE tiles frames spatially (sample_size 256).
_base_ = ["256px.py"]
resolution = "768px"
