# The tiny DC-AE of configs/vae/train/tiny_dc_ae.py on 8 frames of 32 x 32, on a CPU in seconds.
#   python scripts/inference_vae.py configs/vae/inference/tiny_dc_ae.py --ckpt-path outputs/dc_ae_tiny \
#       --data-path meta.csv --save-dir samples/dc_ae_tiny
_base_ = ["dc_ae.py", "../../_base_/tiny.py"]

dataset = dict(num_frames=8, image_size=(32, 32))
num_workers = 0
model = dict(_base_._tiny.dc_ae, _delete_=True, from_pretrained=None)
dtype = "fp32"
save_dir = "samples/dc_ae_tiny"
