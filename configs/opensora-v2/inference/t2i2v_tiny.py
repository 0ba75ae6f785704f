# tiny.py with text-to-image-to-video: a tiny guidance-distilled MMDiT draws the first frame.
_base_ = ["tiny.py"]
cond_type = "i2v_head"
t2i = dict(
    model=dict(_base_._tiny.mmdit_t2i, from_pretrained=None),
    vae=_base_._tiny.image_vae,
    scheduler=dict(type="rflow_v2", num_sampling_steps=3, guidance=4.0),
)
