# video_dc_ae.py shrunk to run on a CPU in seconds: the tiny DC-AE of the tests (8x space, 4x time),
# a randomly initialised LPIPS (AlexNet), 8 frames of 32 x 32; nothing downloaded. It checks the
# training machinery and that the losses fall, not reconstruction quality.
#   python scripts/train_vae.py configs/vae/train/tiny_dc_ae.py --data-path meta.csv --outputs outputs/dc_ae_tiny
_base_ = ["video_dc_ae.py", "../../_base_/tiny.py"]

dataset = dict(num_frames=8, image_size=(32, 32))
batch_size = 2
num_workers = 0
prefetch_factor = None

model = dict(_base_._tiny.dc_ae, _delete_=True)
lpips_net = "alex"
lpips_pretrained = False

plugin = "ddp"  # one process without torchrun: the plain model
dtype = "fp32"
lr = 1e-3
epochs = 1000
outputs = "outputs/dc_ae_tiny"
log_every = 5
ckpt_every = 0
keep_last = 2
