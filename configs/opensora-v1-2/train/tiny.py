# Stage 1 shrunk to run on a CPU in minutes: a 2-layer STDiT3, a tiny random VAE and the offline
# hashing text encoder, nothing downloaded. It checks the training machinery, not video quality.
#   python scripts/train.py configs/opensora-v1-2/train/tiny.py --data-path meta.csv --outputs outputs/tiny
#   torchrun --standalone --nproc_per_node 2 scripts/train.py configs/opensora-v1-2/train/tiny.py --data-path meta.csv
# The data needs images of at least 192x192 pixels (144p is the smallest bucket) and videos longer than 17 frames.
_base_ = ["stage1.py", "../../_base_/tiny.py"]

bucket_config = {"_delete_": True, "144p": {1: (1.0, 4), 17: (1.0, 2)}}
num_workers = 0

model = dict(_base_._tiny.stdit3, _delete_=True, from_pretrained=None)
vae = dict(_base_._tiny.vae, _delete_=True)
text_encoder = dict(_base_._tiny.text_encoder, _delete_=True)

plugin = "ddp"  # one process without torchrun: the plain model
dtype = "fp32"
grad_checkpoint = False
lr = 1e-3
adam_eps = 1e-8
warmup_steps = 0
ema_decay = 0.99
epochs = 2
outputs = "outputs/tiny"
log_every = 5
ckpt_every = 20
keep_last = 2
