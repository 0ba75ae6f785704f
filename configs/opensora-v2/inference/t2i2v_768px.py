# Open-Sora 2.0 text-to-image-to-video at 768px: t2i2v_256px.py's first frame for the 768px video.
_base_ = ["t2i2v_256px.py"]
resolution = "768px"
