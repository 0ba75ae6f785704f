from opensora.models.vae.pipeline import VideoAutoencoderPipeline, opensora_vae_v1_2
from opensora.models.vae.spatial import SpatialVAE
from opensora.models.vae.temporal import TemporalVAE

__all__ = ["SpatialVAE", "TemporalVAE", "VideoAutoencoderPipeline", "opensora_vae_v1_2"]
