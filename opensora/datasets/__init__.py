"""Data: metadata, PyAV video reading, aspect/resolution tables, buckets, samplers, datasets.

Importing this package registers the datasets in ``opensora.registry.DATASETS``.
"""

from opensora.datasets.aspect import (
    ASPECT_RATIO_MAP,
    ASPECT_RATIOS,
    NUM_FRAMES_MAP,
    get_closest_ratio,
    get_image_size,
    get_num_frames,
)
from opensora.datasets.bucket import Assignment, Bucket, BucketId, bucket_table, check_nonempty, format_bucket_table
from opensora.datasets.dataloader import ResumableDataLoader, build_dataloader, build_sampler, collate
from opensora.datasets.dataset import VariableVideoTextDataset, VideoTextDataset
from opensora.datasets.features import FeatureDataset, write_feature_shards
from opensora.datasets.metadata import IMAGE_EXTENSIONS, fill_missing_info, read_metadata, write_metadata
from opensora.datasets.sampler import BucketBatchSampler, StatefulDistributedSampler, dataset_fingerprint
from opensora.datasets.transforms import video_transform
from opensora.datasets.video_io import VideoClip, VideoInfo, VideoReadError, probe, read_clip

__all__ = [
    "ASPECT_RATIOS", "ASPECT_RATIO_MAP", "IMAGE_EXTENSIONS", "NUM_FRAMES_MAP", "Assignment", "Bucket",
    "BucketBatchSampler", "BucketId", "FeatureDataset", "ResumableDataLoader", "StatefulDistributedSampler",
    "VariableVideoTextDataset", "VideoClip", "VideoInfo", "VideoReadError", "VideoTextDataset", "bucket_table",
    "build_dataloader", "build_sampler", "check_nonempty", "collate", "dataset_fingerprint", "fill_missing_info",
    "format_bucket_table", "get_closest_ratio", "get_image_size", "get_num_frames", "probe", "read_clip",
    "read_metadata", "video_transform", "write_feature_shards", "write_metadata",
]  # fmt: skip
