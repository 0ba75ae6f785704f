# Open-Sora 2.0 with the Video DC-AE, the release's configs/diffusion/train/high_compression.py:
# 768px videos of 16 to 128 frames (4k: the DC-AE is not causal) as 128-channel latents, 32x
# smaller in space, fed to the MMDiT unpatched; text-to-video and first-frame conditioning. The
# release sizes these buckets in multiples of 32 (ae_spatial_compression); here they are the 768px
# buckets of the Hunyuan stages (multiples of 16), which the DC-AE pads to its 32-pixel grid.
_base_ = ["image.py"]

bucket_config = {
    "_delete_": True,
    "768px": {
        1: (1.0, 20),
        **{frames: (1.0, 8) for frames in range(16, 33, 4)},  # 16, 20, ..., 32
        **{frames: (1.0, 4) for frames in range(36, 65, 4)},
        **{frames: (1.0, 3) for frames in range(68, 97, 4)},
        **{frames: (1.0, 2) for frames in range(100, 129, 4)},
    },
}

condition_config = dict(t2v=1, i2v_head=7)
model = dict(in_channels=128, cond_embed=True, patch_size=1)
vae = dict(
    _delete_=True,
    type="dc_ae",
    model_name="dc-ae-f32t4c128",
    from_pretrained="./ckpts/F32T4C128_AE.safetensors",
    from_scratch=True,
    scaling_factor=0.493,
    use_spatial_tiling=True,
    use_temporal_tiling=True,
    spatial_tile_size=256,
    temporal_tile_size=32,
    tile_overlap_factor=0.25,
)
is_causal_vae = False

ckpt_every = 250
lr = 3e-5
