# Open-Sora 2.0 stage 1, the release's configs/diffusion/train/stage1.py: text-to-video at 256px
# (1 to 129 frames) with 768px and 1024px images mixed in, from the image model.
#   torchrun --nproc_per_node 8 scripts/train.py configs/opensora-v2/train/stage1.py --data-path data/meta.csv \
#       --ckpt-path outputs/image/.../ema
_base_ = ["image.py"]

bucket_config = {
    "_delete_": True,
    "256px": {
        1: (1.0, 45),
        **{frames: (1.0, 12) for frames in range(5, 34, 4)},  # 5, 9, ..., 33
        **{frames: (1.0, 6) for frames in range(37, 66, 4)},
        **{frames: (1.0, 4) for frames in range(69, 98, 4)},
        **{frames: (1.0, 3) for frames in range(101, 130, 4)},
    },
    "768px": {1: (0.5, 13)},
    "1024px": {1: (0.5, 7)},
}

lr = 5e-5
ckpt_every = 2000
keep_last = 20
