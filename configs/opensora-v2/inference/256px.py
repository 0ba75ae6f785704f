# Open-Sora 2.0 at 256px with the released weights (hpcai-tech/Open-Sora-v2: Open_Sora_v2.safetensors,
# hunyuan_vae.safetensors; google/t5-v1_1-xxl and openai/clip-vit-large-patch14 for the prompts), as
# the release's configs/diffusion/inference/256px.py sets it. Any key can be overridden:
#   python scripts/inference.py configs/opensora-v2/inference/256px.py --prompt "a cat" \
#       --cond_type i2v_head --ref cat.png --num_frames 129 --aspect_ratio 16:9 --motion-score 4 --offload True
resolution = "256px"  # 256 x 256 pixels' worth; 16:9 is 192 x 336
aspect_ratio = "16:9"  # width:height in 2.0 (16:9, 9:16, 1:1, 2.39:1)
num_frames = 129  # 4k+1, at most 129
fps = 24
save_fps = 24
cond_type = "t2v"  # t2v, i2v_head, i2v_tail, i2v_loop, v2v_head, v2v_tail (references: --ref)
motion_score = "4"
seed = 42
batch_size = 1
dtype = "bf16"
save_dir = "samples"

model = dict(
    type="flux",  # the 11B MMDiT with the release's architecture keys
    from_pretrained="./ckpts/Open_Sora_v2.safetensors",
    guidance_embed=False,
    fused_qkv=False,
    use_liger_rope=True,
    in_channels=64,
    vec_in_dim=768,
    context_in_dim=4096,
    hidden_size=3072,
    mlp_ratio=4.0,
    num_heads=24,
    depth=19,
    depth_single_blocks=38,
    axes_dim=[16, 56, 56],
    theta=10_000,
    qkv_bias=True,
    cond_embed=True,
)
vae = dict(
    type="hunyuan_vae",
    from_pretrained="./ckpts/hunyuan_vae.safetensors",
    in_channels=3,
    out_channels=3,
    layers_per_block=2,
    latent_channels=16,
    use_spatial_tiling=True,
    use_temporal_tiling=False,
)
text_encoder = dict(
    type="text_encoders",
    encoders=dict(
        # 512 tokens, no attention mask and no caption cleaning, as 2.0 encoded its prompts
        t5=dict(type="t5", from_pretrained="google/t5-v1_1-xxl", model_max_length=512, use_attention_mask=False,
                clean_caption=False, dtype="bf16"),
        clip=dict(type="clip", from_pretrained="openai/clip-vit-large-patch14", model_max_length=77, dtype="bf16"),
    ),
)  # fmt: skip
scheduler = dict(
    type="rflow_v2",
    num_sampling_steps=50,
    shift=True,
    guidance=7.5,  # text guidance
    guidance_img=3.0,  # reference (image/video) guidance
    text_osci=True,
    image_osci=True,
    scale_temporal_osci=True,
)
