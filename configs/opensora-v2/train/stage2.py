# Open-Sora 2.0 stage 2, the release's configs/diffusion/train/stage2.py: text-to-video at 256px and
# 768px (1 to 129 frames), each video split over 4 sequence-parallel ranks (the release's hybrid
# plugin with ring attention and ZeRO-2; here FSDP2 with the MMDiT's Ulysses attention).
_base_ = ["image.py"]

plugin = "zero2"
sp_size = 4

bucket_config = {
    "_delete_": True,
    "256px": {
        1: (1.0, 130),
        **{frames: (1.0, 14) for frames in range(5, 34, 4)},
        **{frames: (1.0, 10) for frames in range(37, 66, 4)},
        **{frames: (1.0, 7) for frames in range(73, 98, 4)},  # the release has no 69-frame bucket here
        **{frames: (1.0, 6) for frames in range(101, 130, 4)},
    },
    "768px": {
        1: (1.0, 38),
        **{frames: (1.0, 6) for frames in range(5, 34, 4)},
        **{frames: (1.0, 4) for frames in range(37, 66, 4)},
        **{frames: (1.0, 3) for frames in range(69, 98, 4)},
        **{frames: (1.0, 2) for frames in range(101, 130, 4)},
    },
}

lr = 5e-5
ckpt_every = 200
keep_last = 20
