# video_dc_ae_disc.py at the size of tiny_dc_ae.py: a 2-level discriminator, the GAN losses from step 10.
#   python scripts/train_vae.py configs/vae/train/tiny_dc_ae_disc.py --data-path meta.csv
_base_ = ["tiny_dc_ae.py"]

discriminator = dict(type="NLayerDiscriminator3D", input_nc=3, ndf=8, n_layers=2)
discriminator_start = 10
discriminator_lr = 1e-3
adaptive_generator_weight = False
generator_factor = 0.05
grad_checkpoint = True
outputs = "outputs/dc_ae_tiny_disc"
