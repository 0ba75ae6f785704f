# The conditioning masks of the 1.1 and 1.2 releases: the share of training samples given each kind of
# mask (the rest are unmasked). Masked frames are kept clean, so the model learns image-to-video,
# extension and interpolation alongside plain text-to-video.
mask_ratios = {
    "random": 0.05,
    "intepolate": 0.005,
    "quarter_random": 0.005,
    "quarter_head": 0.005,
    "quarter_tail": 0.005,
    "quarter_head_tail": 0.005,
    "image_random": 0.025,
    "image_head": 0.05,
    "image_tail": 0.025,
    "image_head_tail": 0.025,
}
