# The 1.2 VAE's clips, for training and reconstruction alike: 17 consecutive frames, resized and
# centre-cropped to 256 x 256 (images are repeated to 17 frames), one clip a step per process.
dataset = dict(
    type="VideoTextDataset",
    data_path=None,
    num_frames=17,
    frame_interval=1,
    image_size=(256, 256),
    transform_name="resize_crop",
)
batch_size = 1
