# Open-Sora 1.2 VAE, training stage 1: the temporal VAE learns on 17-frame 256x256 clips while the
# per-frame (SDXL) VAE stays frozen. A fifth of the steps see only the first frame (mixed_video_image),
# on which the temporal latent must equal the spatial one (image identity loss); the loss compares
# latents only (spatial latents against their temporal reconstruction), so no LPIPS weights are needed.
#   torchrun --standalone --nproc_per_node 8 scripts/train_vae.py configs/vae/train/stage1.py --data-path data/meta.csv
# Memory: the release's setting -- batch 1 per GPU, 17 x 256 x 256, bf16, gradient checkpointing -- is
# what this file sets; it is meant for one 80 GB GPU per process.
# No absolute paths: data comes from --data-path, weights from hub ids or --ckpt-path, outputs go to --outputs.

# ---- data: every clip 17 frames of 256 x 256 (images are repeated to 17 frames), batch 1 per process
_base_ = ["../../_base_/vae_clips.py"]
num_workers = 16
mixed_strategy = "mixed_video_image"
mixed_image_ratio = 0.2

# ---- model: the 1.2 pipeline; the spatial VAE starts from the SDXL VAE and stays frozen,
# the temporal VAE (VAE_Temporal_SD) starts from scratch
model = dict(
    type="VideoAutoencoderPipeline",
    from_pretrained=None,
    freeze_vae_2d=True,
    micro_frame_size=17,
    vae_2d=dict(type="VideoAutoencoderKL", micro_batch_size=4),
    vae_temporal=dict(type="VAE_Temporal_SD"),
)
spatial_vae_weights = "PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers"
spatial_vae_subfolder = "vae"

# ---- losses
use_real_rec_loss = False
use_z_rec_loss = True
use_image_identity_loss = True
perceptual_loss_weight = 0.1  # used with use_real_rec_loss (stage 2 on)
kl_loss_weight = 1e-6

# ---- parallelism and precision
plugin = "zero2"
dtype = "bf16"
grad_checkpoint = True

# ---- optimisation: AdamW at a constant lr
lr = 1e-5
weight_decay = 0.0
adam_eps = 1e-8
warmup_steps = 0
grad_clip = 1.0
epochs = 100  # adjust to the dataset's size

# ---- logging and checkpoints
seed = 42
outputs = "outputs/vae_stage1"
wandb = False
log_every = 1
ckpt_every = 1000
