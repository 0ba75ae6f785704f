# Open-Sora 2.0 with the Video DC-AE (the release's high_compression config): the 768px
# text-to-image-to-video setup, its MMDiT on 128-channel latents without patching (32x fewer pixels
# per token in space than the Hunyuan VAE's 2x2 patches of 8x latents), the DC-AE tiled in space
# (256 px) and time (32 frames).
#   python scripts/inference.py configs/opensora-v2/inference/high_compression.py --prompt "a cat on a sofa"
_base_ = ["t2i2v_768px.py"]

model = dict(in_channels=128, cond_embed=True, patch_size=1)
vae = dict(
    _delete_=True,
    type="dc_ae",
    model_name="dc-ae-f32t4c128",
    from_scratch=True,
    from_pretrained="./ckpts/F32T4C128_AE.safetensors",
    use_spatial_tiling=True,
    use_temporal_tiling=True,
    spatial_tile_size=256,
    temporal_tile_size=32,
    tile_overlap_factor=0.25,
)
