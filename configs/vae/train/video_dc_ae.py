# Open-Sora 2.0 Video DC-AE (dc-ae-f32t4c128: 32x space, 4x time, 128 channels), the release's first
# training stage: reconstruction and perceptual losses -- pixel L1 plus 0.5 x LPIPS (VGG) -- on
# 32-frame 256 x 256 clips, a fifth of the steps on the first frame alone (mixed_video_image). The
# latent is deterministic: no KL term. Trained from scratch.
#   torchrun --standalone --nproc_per_node 8 scripts/train_vae.py configs/vae/train/video_dc_ae.py \
#       --data-path data/meta.csv
# Then the adversarial stage, configs/vae/train/video_dc_ae_disc.py, from this stage's checkpoint.
# No absolute paths: data comes from --data-path, LPIPS weights from $OPENSORA_EVAL_WEIGHTS (or
# lpips_weights=DIR), outputs go to --outputs.

# ---- data: 32 consecutive frames of 256 x 256 (the release's bucket "256px_ar1:1": {32: (1.0, 1)}),
# batch 1 per process
_base_ = ["../../_base_/vae_clips.py"]
dataset = dict(num_frames=32)
num_workers = 12
prefetch_factor = 2
mixed_strategy = "mixed_video_image"
mixed_image_ratio = 0.2  # 1 image step in 5

# ---- model
model = dict(type="dc_ae", model_name="dc-ae-f32t4c128", from_scratch=True, from_pretrained=None)

# ---- losses
use_real_rec_loss = True
perceptual_loss_weight = 0.5
kl_loss_weight = 0.0
sample_posterior = False  # nothing to sample: the latent is deterministic
lpips_net = "vgg"

# ---- parallelism and precision
plugin = "zero2"
dtype = "bf16"
grad_checkpoint = False

# ---- optimisation: AdamW, constant lr, no warm-up
lr = 5e-5
weight_decay = 0.0
adam_eps = 1e-8
adam_betas = (0.9, 0.98)
warmup_steps = 0
grad_clip = 1.0
ema_decay = 0.99
epochs = 100  # adjust to the dataset's size

# ---- logging and checkpoints
seed = 42
outputs = "outputs/video_dc_ae"
wandb_project = "dcae"
log_every = 10
ckpt_every = 3000
keep_last = 50
