# The demo VAE, step 1 of 4: the per-frame AutoencoderKL alone (3 levels: 4x spatial), trained on
# frames of the demo world with pixel L1 and KL. A temporal VAE trained jointly from scratch slows
# this down a lot (its random bottleneck hides the frames), so, like the release, the temporal VAE
# learns afterwards on top of a frozen per-frame VAE (configs/demo/vae.py), then both are fine-tuned
# together (configs/demo/vae_finetune.py). The shipped VAE's per-frame part is this run as it stands
# (2,400 steps, 13 minutes on 2 CPU cores, L1 still falling slowly):
#   python scripts/train_vae.py configs/demo/vae_spatial.py --data-path data/demo/meta.csv --outputs outputs/demo_vae_2d
#   python tools/demo_world/finalize.py spatial outputs/demo_vae_2d --out outputs/demo_vae_2d/diffusers
_base_ = ["vae.py"]

dataset = dict(num_frames=4, frame_interval=4)  # 4 frames spread over each clip
batch_size = 16
mixed_strategy = None
mixed_image_ratio = 0.0
# the per-frame VAE of step 2's pipeline, alone
model = dict(_delete_=True, type="VideoAutoencoderKL", AutoencoderKL_config=_base_.model.vae_2d.AutoencoderKL_config)
use_real_rec_loss = True
use_z_rec_loss = False
perceptual_loss_weight = 0.0
spatial_vae_weights = None
lr = 3e-4  # 1e-3 diverged after ~700 steps
warmup_steps = 20
max_steps = 2400
ckpt_every = 200
outputs = "outputs/demo_vae_2d"
