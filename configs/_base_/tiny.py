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

# Open-Sora 2.0: the MMDiT of the golden files (2 double + 2 single blocks), its text-to-image (Flux)
# variant, a 16-channel causal VAE of the Hunyuan kind, and a 16-channel image autoencoder for t2i2v
__mmdit = dict(
    hidden_size=64, num_heads=4, depth=2, depth_single_blocks=2, mlp_ratio=4.0, in_channels=64,
    vec_in_dim=32, context_in_dim=32, axes_dim=[4, 6, 6], theta=10000, qkv_bias=True, patch_size=2,
)  # fmt: skip
__image_vae = dict(__vae_2d, AutoencoderKL_config=dict(__vae_2d["AutoencoderKL_config"], latent_channels=16))

_tiny = dict(
    stdit=dict(type="STDiT", hidden_size=64, **__dit),  # input_size is the caller's
    stdit2=dict(type="STDiT2", hidden_size=48, **__dit),
    stdit3=dict(type="STDiT3", hidden_size=64, **__dit),
    vae_2d=__vae_2d,  # the per-frame VAE of 1.0 and 1.1 (8x spatial)
    vae_temporal=__vae_temporal,
    vae=dict(type="VideoAutoencoderPipeline", vae_2d=__vae_2d, vae_temporal=__vae_temporal),  # 1.2's kind
    text_encoder=dict(type="hash", output_dim=32, model_max_length=8),
    mmdit=dict(type="MMDiT", **__mmdit, cond_embed=True, guidance_embed=False, fused_qkv=False, use_liger_rope=True),
    mmdit_t2i=dict(type="MMDiT", **__mmdit, cond_embed=False, guidance_embed=True, fused_qkv=True,
                   use_liger_rope=False),
    hunyuan_vae=dict(type="hunyuan_vae", latent_channels=16, block_out_channels=[8, 16, 16, 16], layers_per_block=1,
                     norm_num_groups=4),
    # golden_dcae_v2_tiny's sizes: 4 stages, 8x space, 4x time, 16 latent channels
    dc_ae=dict(type="dc_ae", model_name="dc-ae-f32t4c128", latent_channels=16, width_list=[8, 16, 32, 32],
               encoder_depth_list=[1, 1, 1, 1], decoder_depth_list=[1, 1, 1, 1],
               encoder_block_types=["ResBlock", "ResBlock", "EViTS5_GLU", "EViTS5_GLU"],
               decoder_block_types=["ResBlock", "ResBlock", "EViTS5_GLU", "EViTS5_GLU"],
               temporal_downsample=[False, True, True, False], temporal_upsample=[False, True, True, False],
               spatial_compression_ratio=8),
    image_vae=__image_vae,
    # T5 states (y, mask) then a pooled vector standing in for CLIP's (y_vec)
    text_encoders_v2=dict(type="text_encoders", encoders=dict(
        t5=dict(type="hash", output_dim=32, model_max_length=8),
        clip=dict(type="hash", output_dim=32, model_max_length=8, seed=1, pooled=True),
    )),
)  # fmt: skip
