# Open-Sora 1.2 VAE, training stage 2: longer clips of mixed length -- each step cuts its 33-frame clips
# to a random 1..33 frames (mixed_video_random) -- and the per-frame VAE trains too. The loss moves to
# pixels: L1 plus LPIPS (VGG; its weights must be on disk, see lpips_weights) and the KL term.
# Initialise from stage 1 with --ckpt-path CHECKPOINT_DIR (an epoch*-global_step* folder of stage 1).
#   torchrun --standalone --nproc_per_node 8 scripts/train_vae.py configs/vae/train/stage2.py \
#       --data-path data/meta.csv --ckpt-path outputs/vae_stage1/epoch0-global_step380000
_base_ = ["stage1.py"]

dataset = dict(num_frames=33)
mixed_strategy = "mixed_video_random"
mixed_image_ratio = 0.0

model = dict(freeze_vae_2d=False)
spatial_vae_weights = None  # both VAEs' weights come with the stage-1 checkpoint

use_real_rec_loss = True
use_z_rec_loss = False
use_image_identity_loss = False
lpips_net = "vgg"
lpips_weights = None  # a folder with vgg16-397923af.pth and vgg.pth; default $OPENSORA_EVAL_WEIGHTS

outputs = "outputs/vae_stage2"
