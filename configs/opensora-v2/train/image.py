# Open-Sora 2.0 text-to-image pretraining of the 11B MMDiT, the release's configs/diffusion/train/image.py:
# images at 256px, 768px and 1024px, Hunyuan VAE latents, T5-XXL states and CLIP-L vectors. Every
# other 2.0 stage inherits it.
#   torchrun --nproc_per_node 8 scripts/train.py configs/opensora-v2/train/image.py --data-path data/meta.csv
# Not carried over: the release's fps_max=24 frame subsampling (here frame_interval picks the rate),
# its partial activation checkpointing (grad_ckpt_settings: here every block is checkpointed), its
# pinned-memory cache and bucket-build workers.
dataset = dict(
    type="VariableVideoTextDataset",
    transform_name="resize_crop",
    caption_fps=True,  # "... 24 FPS, 4 motion score." as the release's captions end
    caption_motion_score=True,  # the release's vmaf=True: the score_vmafmotion column
)
bucket_config = {  # {resolution: {num_frames: (keep probability, batch size)}}
    "256px": {1: (1.0, 50)},
    "768px": {1: (0.5, 11)},
    "1024px": {1: (0.5, 7)},
}

model = dict(
    type="flux",
    from_pretrained=None,
    guidance_embed=False,
    fused_qkv=False,
    use_liger_rope=True,
    cond_embed=False,  # the release's default: text-to-image/video only; the _i2v stages switch it on
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
)
dropout_ratio = {"t5": 0.31622777, "clip": 0.31622777}  # drawn apart: both dropped with probability 0.1
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
is_causal_vae = True
text_encoder = dict(
    type="text_encoders",
    encoders=dict(
        t5=dict(type="t5", from_pretrained="google/t5-v1_1-xxl", model_max_length=512, use_attention_mask=False,
                clean_caption=False, dtype="bf16"),
        clip=dict(type="clip", from_pretrained="openai/clip-vit-large-patch14", model_max_length=77, dtype="bf16"),
    ),
)  # fmt: skip

# optimisation: the release's HybridAdam in AdamW mode
lr = 1e-5
adam_eps = 1e-15
weight_decay = 0.0
warmup_steps = 0
grad_clip = 1.0
accumulation_steps = 1
# the release keeps no EMA (ema_decay=None); decay 0 makes the average a copy of the trained
# weights, so what tools/export_ema.py exports is the model itself
ema_decay = 0.0

# acceleration
prefetch_factor = 2
num_workers = 12
dtype = "bf16"
plugin = "zero2"
grad_checkpoint = True

seed = 42
outputs = "outputs"
epochs = 1000
log_every = 10
ckpt_every = 100
keep_last = 20
wandb_project = "mmdit"
