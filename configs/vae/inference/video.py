# Reconstruct 17-frame 256x256 clips with the Open-Sora 1.2 VAE (or a trained one: --ckpt-path).
#   python scripts/inference_vae.py configs/vae/inference/video.py --data-path data/meta.csv --save-dir samples/vae
_base_ = ["../../_base_/vae_clips.py"]

num_workers = 4

model = dict(type="OpenSoraVAE_V1_2", from_pretrained="hpcai-tech/OpenSora-VAE-v1.2", micro_frame_size=17)
dtype = "bf16"
seed = 42
save_dir = "samples/vae_video"
