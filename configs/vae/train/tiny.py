# Stage 3 shrunk to run on a CPU in seconds: the tiny pipeline of the tests, a 2-level discriminator,
# a randomly initialised LPIPS (AlexNet), 9 frames of 32 x 32; nothing downloaded. It checks the
# training machinery, not reconstruction quality.
#   python scripts/train_vae.py configs/vae/train/tiny.py --data-path meta.csv --outputs outputs/vae_tiny
_base_ = ["stage3.py", "../../_base_/tiny.py"]

dataset = dict(num_frames=9, image_size=(32, 32))
batch_size = 2
num_workers = 0

model = dict(_base_._tiny.vae, _delete_=True, freeze_vae_2d=False)
discriminator = dict(_delete_=True, type="NLayerDiscriminator3D", input_nc=3, ndf=8, n_layers=2)
discriminator_start = 20
lpips_net = "alex"
lpips_pretrained = False

plugin = "ddp"  # one process without torchrun: the plain model
dtype = "fp32"
grad_checkpoint = False
lr = 1e-3
ema_decay = 0.99
epochs = 1000
outputs = "outputs/vae_tiny"
log_every = 5
ckpt_every = 0
keep_last = 2
