# The demo VAE, step 3 of 4: the pipeline of step 2 fine-tuned end to end on pixels. As run, the
# per-frame VAE stayed frozen (the saved pipeline carries freeze_vae_2d=True), so this step trained
# the temporal VAE only; step 4 (vae_decoder.py) fine-tunes both decoders. Trained on latents
# alone (step 2), a temporal VAE's small latent errors come back through the per-frame decoder as
# large pixel errors (4-channel trial: 15 levels mean error, colour read back from 44% of clips);
# 800 steps of this fine-tune brought that to 3.3 levels. (A joint run from scratch stalls
# instead, see vae_spatial.py.)
#   python tools/export_ema.py outputs/demo_vae outputs/demo_vae_step2
#   python scripts/train_vae.py configs/demo/vae_finetune.py --data-path data/demo/meta.csv \
#       --outputs outputs/demo_vae_ft --cfg-options model.from_pretrained=outputs/demo_vae_step2
#   python tools/demo_world/finalize.py vae outputs/demo_vae_ft --data data/demo/meta.csv --out outputs/demo_vae_step3
_base_ = ["vae.py"]

model = dict(_delete_=True, type="VideoAutoencoderPipeline", from_pretrained=None)
use_real_rec_loss = True
use_z_rec_loss = False
perceptual_loss_weight = 0.0
lr = 2e-4
warmup_steps = 20
max_steps = 2000  # as run (12 minutes on 2 CPU cores)
ckpt_every = 200
outputs = "outputs/demo_vae_ft"
