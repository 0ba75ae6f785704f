# Reconstruct 32-frame 256x256 clips with Open-Sora 2.0's Video DC-AE (a trained one: --ckpt-path),
# then score them: eval/vae/eval_common_metric.py --real_video_dir samples/dc_ae_ori \
#     --generated_video_dir samples/dc_ae_rec --metric ssim psnr lpips
#   python scripts/inference_vae.py configs/vae/inference/dc_ae.py \
#       --ckpt-path outputs/video_dc_ae/epoch0-global_step100000 --data-path data/meta.csv --save-dir samples/dc_ae
_base_ = ["video.py"]

dataset = dict(num_frames=32)
model = dict(_delete_=True, type="dc_ae", model_name="dc-ae-f32t4c128", from_scratch=True, from_pretrained=None)
save_dir = "samples/dc_ae"
