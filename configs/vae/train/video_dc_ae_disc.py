# Open-Sora 2.0 Video DC-AE, the release's adversarial stage: video_dc_ae.py plus a 5-level 3-D
# PatchGAN discriminator (hinge losses, from the first step). The generator's GAN term has the fixed
# weight 0.05 (the release's gen_loss_config disc_weight), not 1.2's gradient-balanced weight; the
# discriminator has its own AdamW at lr 1e-4. Initialise from the first stage with --ckpt-path.
#   torchrun --standalone --nproc_per_node 8 scripts/train_vae.py configs/vae/train/video_dc_ae_disc.py \
#       --data-path data/meta.csv --ckpt-path outputs/video_dc_ae/epoch0-global_step100000
_base_ = ["video_dc_ae.py"]

discriminator = dict(type="NLayerDiscriminator3D", input_nc=3, ndf=64, n_layers=5)
discriminator_start = 0
discriminator_lr = 1e-4
discriminator_factor = 1.0
adaptive_generator_weight = False
generator_factor = 0.05
generator_loss_type = "hinge"
discriminator_loss_type = "hinge"

plugin = "ddp"  # the generator's GAN term differentiates through the discriminator unsharded
grad_checkpoint = True

outputs = "outputs/video_dc_ae_disc"
