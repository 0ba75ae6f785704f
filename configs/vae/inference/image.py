# Reconstruct images (one-frame clips) with the Open-Sora 1.2 VAE; written as PNG files.
#   python scripts/inference_vae.py configs/vae/inference/image.py --data-path data/meta.csv --save-dir samples/vae
_base_ = ["video.py"]

dataset = dict(num_frames=1, image_size=(512, 512))
save_dir = "samples/vae_image"
