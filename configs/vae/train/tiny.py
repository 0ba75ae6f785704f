# Stage 3 shrunk to run on a CPU in seconds: the tiny pipeline of the tests, a 2-level discriminator,
# a randomly initialised LPIPS (AlexNet), 9 frames of 32 x 32; nothing downloaded. It checks the
# training machinery, not reconstruction quality.
#   python scripts/train_vae.py configs/vae/train/tiny.py --data-path meta.csv --outputs outputs/vae_tiny
_base_ = ["stage3.py"]

dataset = dict(num_frames=9, image_size=(32, 32))
batch_size = 2
num_workers = 0

model = dict(
    _delete_=True,
    type="VideoAutoencoderPipeline",
    freeze_vae_2d=False,
    vae_2d=dict(
        type="VideoAutoencoderKL",
        micro_batch_size=4,
        AutoencoderKL_config=dict(
            block_out_channels=[8, 16, 16, 32],
            down_block_types=["DownEncoderBlock2D"] * 4,
            up_block_types=["UpDecoderBlock2D"] * 4,
            layers_per_block=1,
            norm_num_groups=4,
            latent_channels=4,
        ),
    ),
    vae_temporal=dict(
        type="VAE_Temporal",
        filters=8,
        num_res_blocks=2,
        channel_multipliers=[1, 2, 2, 4],
        temporal_downsample=[False, True, True],
        num_groups=4,
    ),
)
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
