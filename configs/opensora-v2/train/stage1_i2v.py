# Open-Sora 2.0 stage 1 with image conditioning, the release's configs/diffusion/train/stage1_i2v.py:
# the model gains its condition input (a mask channel and the masked reference latent), and each
# video sample draws its mode: text only, first frame, first and last, or last frame given.
_base_ = ["stage1.py"]

model = dict(cond_embed=True)
condition_config = dict(
    t2v=1,
    i2v_head=5,  # the image as first frame
    i2v_loop=1,  # first and last frames given
    i2v_tail=1,  # the image as last frame
)
is_causal_vae = True

lr = 1e-5
