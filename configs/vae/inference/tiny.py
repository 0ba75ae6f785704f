# The tiny pipeline of configs/vae/train/tiny.py on 9 frames of 32 x 32, on a CPU in seconds.
#   python scripts/inference_vae.py configs/vae/inference/tiny.py --ckpt-path outputs/vae_tiny \
#       --data-path meta.csv --save-dir samples/vae_tiny
_base_ = ["video.py"]

dataset = dict(num_frames=9, image_size=(32, 32))
num_workers = 0
model = dict(
    _delete_=True,
    type="VideoAutoencoderPipeline",
    from_pretrained=None,
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
dtype = "fp32"
save_dir = "samples/vae_tiny"
