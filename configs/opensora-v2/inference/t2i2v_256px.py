# Open-Sora 2.0 text-to-image-to-video at 256px: the guidance-distilled Flux text-to-image model draws
# the first frame at 768px (the release's img_resolution), which is resized to the video and conditions
# it as i2v_head. Needs flux1-dev.safetensors and its autoencoder besides the 256px checkpoints.
_base_ = ["256px.py"]
cond_type = "i2v_head"
t2i = dict(
    # the video model's sizes with the t2i Flux switches
    model=dict(_base_.model, from_pretrained="./ckpts/flux1-dev.safetensors", guidance_embed=True, fused_qkv=True,
               use_liger_rope=False, cond_embed=False),
    # Flux's image autoencoder (16 latent channels, scale 0.3611, shift 0.1159): see issue 20
    vae=dict(type="flux_ae", from_pretrained="./ckpts/flux1-dev-ae.safetensors"),
    scheduler=dict(type="rflow_v2", num_sampling_steps=50, shift=True, guidance=4.0),
    resolution="768px",
)
