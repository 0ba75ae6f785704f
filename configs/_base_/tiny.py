# The tiny models of the CPU configs and the tests, in one place: randomly initialised, seconds on a
# CPU, nothing downloaded, the same code paths as the released sizes. A config takes them from here:
#   _base_ = ["stage1.py", "../../_base_/tiny.py"]
#   model = dict(_base_._tiny.stdit3, _delete_=True, from_pretrained=None)
# tests/tiny.py reads the same dicts. They sit under one key starting with "_", which the config
# schemas ignore, so inheriting this file adds no config key.
__dit = dict(depth=2, num_heads=4, caption_channels=32, model_max_length=8)
__vae_2d = dict(
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
)
__vae_temporal = dict(
    type="VAE_Temporal",
    filters=8,
    num_res_blocks=2,
    channel_multipliers=[1, 2, 2, 4],
    temporal_downsample=[False, True, True],
    num_groups=4,
)

_tiny = dict(
    stdit=dict(type="STDiT", hidden_size=64, **__dit),  # input_size is the caller's
    stdit2=dict(type="STDiT2", hidden_size=48, **__dit),
    stdit3=dict(type="STDiT3", hidden_size=64, **__dit),
    vae_2d=__vae_2d,  # the per-frame VAE of 1.0 and 1.1 (8x spatial)
    vae_temporal=__vae_temporal,
    vae=dict(type="VideoAutoencoderPipeline", vae_2d=__vae_2d, vae_temporal=__vae_temporal),  # 1.2's kind
    text_encoder=dict(type="hash", output_dim=32, model_max_length=8),
)
