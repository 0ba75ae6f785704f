# Open-Sora 1.2 VAE, training stage 3: stage 2 plus an adversarial loss. A 3-D PatchGAN discriminator
# judges space-time patches (hinge loss); the VAE's GAN term is weighted by the ratio of the
# reconstruction and GAN gradients at the decoder's last layer, times generator_factor.
# Initialise from stage 2 with --ckpt-path CHECKPOINT_DIR.
#   torchrun --standalone --nproc_per_node 8 scripts/train_vae.py configs/vae/train/stage3.py \
#       --data-path data/meta.csv --ckpt-path outputs/vae_stage2/epoch0-global_step260000
_base_ = ["stage2.py"]

discriminator = dict(type="NLayerDiscriminator3D", input_nc=3, ndf=64, n_layers=3)
discriminator_start = 0  # the VAE arrives trained from stage 2; raise it to let reconstruction settle first
discriminator_factor = 1.0
generator_factor = 0.5
generator_loss_type = "hinge"
discriminator_loss_type = "hinge"

plugin = "ddp"  # the adaptive weight differentiates the decoder's last weight directly: no sharding

outputs = "outputs/vae_stage3"
