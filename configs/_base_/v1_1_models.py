# Open-Sora 1.1's models, for sampling and training alike: STDiT2-XL/2 (weights set by the config
# that inherits this), the SD VAE per frame and T5-XXL with 200 tokens.
model = dict(
    type="STDiT2-XL/2",
    input_sq_size=512,
    qk_norm=True,
    qk_norm_legacy=True,
    enable_flash_attn=True,
    enable_layernorm_kernel=True,
)
vae = dict(type="VideoAutoencoderKL", from_pretrained="stabilityai/sd-vae-ft-ema", micro_batch_size=4)
text_encoder = dict(type="t5", from_pretrained="DeepFloyd/t5-v1_1-xxl", model_max_length=200)
