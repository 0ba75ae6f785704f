# Stage 1 of 1.1 shrunk to run on a CPU in minutes: a 2-layer STDiT2, a tiny random per-frame VAE and
# the offline hashing text encoder, images and 8-frame clips in buckets, IDDPM. Checks the machinery.
#   python scripts/train.py configs/opensora-v1-1/train/tiny.py --data-path meta.csv --outputs outputs/tiny11
_base_ = ["stage1.py", "../../_base_/tiny.py"]

dataset = dict(frame_interval=1)
bucket_config = {"_delete_": True, "144p": {1: (1.0, 4), 8: (1.0, 2)}}
mask_ratios = None
num_workers = 0

model = dict(_base_._tiny.stdit2, _delete_=True, input_sq_size=512, qk_norm=True)
vae = dict(_base_._tiny.vae_2d, _delete_=True, micro_batch_size=8)
text_encoder = dict(_base_._tiny.text_encoder, _delete_=True)

plugin = "none"
dtype = "fp32"
grad_checkpoint = False
lr = 1e-3
warmup_steps = 0
outputs = "outputs/tiny11"
log_every = 5
ckpt_every = 0
