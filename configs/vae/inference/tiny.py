# The tiny pipeline of configs/vae/train/tiny.py on 9 frames of 32 x 32, on a CPU in seconds.
#   python scripts/inference_vae.py configs/vae/inference/tiny.py --ckpt-path outputs/vae_tiny \
#       --data-path meta.csv --save-dir samples/vae_tiny
_base_ = ["video.py", "../../_base_/tiny.py"]

dataset = dict(num_frames=9, image_size=(32, 32))
num_workers = 0
model = dict(_base_._tiny.vae, _delete_=True, from_pretrained=None)
dtype = "fp32"
save_dir = "samples/vae_tiny"
