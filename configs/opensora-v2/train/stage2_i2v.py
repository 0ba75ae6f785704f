# Open-Sora 2.0 stage 2 with image conditioning, the release's configs/diffusion/train/stage2_i2v.py:
# stage 2's sequence parallelism with stage1_i2v's mix of conditioning modes and larger batches.
_base_ = ["stage2.py"]

model = dict(cond_embed=True)
condition_config = dict(t2v=1, i2v_head=5, i2v_loop=1, i2v_tail=1)
is_causal_vae = True

bucket_config = {
    "_delete_": True,
    "256px": {
        1: (1.0, 195),
        **{frames: (1.0, 80) for frames in range(5, 34, 4)},
        **{frames: (1.0, 40) for frames in range(37, 66, 4)},
        **{frames: (1.0, 28) for frames in range(69, 98, 4)},
        **{frames: (1.0, 23) for frames in range(101, 130, 4)},
    },
    "768px": {
        1: (0.5, 38),
        **{frames: (0.5, 10) for frames in range(5, 34, 4)},
        **{frames: (0.5, 5) for frames in range(37, 66, 4)},
        **{frames: (0.5, 3) for frames in range(69, 98, 4)},
        **{frames: (0.5, 2) for frames in range(101, 130, 4)},
    },
}
