# stage1_i2v.py shrunk to run on a CPU in seconds: the tiny MMDiT (2 double + 2 single blocks) on
# demo-world features, text-to-video and image-to-video mixed. It checks the training machinery,
# not video quality. Features are extracted once with the same config (the tiny 16-channel causal
# VAE, hashing stand-ins for T5 and CLIP; nothing downloaded):
#   python tools/demo_world/generate.py --out data/demo_v2 --num-clips 64 --sizes 32x32 --frames 9 17
#   python tools/datasets/extract_features.py configs/opensora-v2/train/tiny.py \
#       --data-path data/demo_v2/meta.csv --output data/demo_v2_features
#   python scripts/train.py configs/opensora-v2/train/tiny.py --data-path data/demo_v2_features \
#       --outputs outputs/v2_tiny
_base_ = ["stage1_i2v.py", "../../_base_/tiny.py"]

# every clip at 9 frames of 32 x 32 (latents 16 x 3 x 4 x 4: 12 tokens), captions with fps and motion score
dataset = dict(_delete_=True, type="VideoTextDataset", data_path=None, num_frames=9, image_size=(32, 32),
               caption_fps=True, caption_motion_score=True)  # fmt: skip
bucket_config = None
batch_size = 4
num_workers = 0
prefetch_factor = None
use_features = True

model = dict(_base_._tiny.mmdit, _delete_=True, from_pretrained=None)
vae = dict(_base_._tiny.hunyuan_vae, _delete_=True)
# the tiny config's hashing T5 and CLIP stand-ins, with room for the fps and motion-score suffix
text_encoder = dict(
    _delete_=True,
    type="text_encoders",
    encoders=dict(
        t5=dict(type="hash", output_dim=32, model_max_length=16),
        clip=dict(type="hash", output_dim=32, model_max_length=16, seed=1, pooled=True),
    ),
)

plugin = "none"  # one process without torchrun; "ddp" or "zero2" under torchrun
dtype = "fp32"
grad_checkpoint = False
lr = 1e-3
adam_eps = 1e-8
ema_decay = 0.99
epochs = 1000
max_steps = 40
outputs = "outputs/v2_tiny"
log_every = 10
ckpt_every = 20
keep_last = 2
