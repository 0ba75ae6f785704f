from opensora.models.vae.dc_ae import VideoDCAE
from opensora.models.vae.discriminator import NLayerDiscriminator3D
from opensora.models.vae.flux_ae import FluxAutoencoder
from opensora.models.vae.hunyuan import AutoencoderKLCausal3D
from opensora.models.vae.pipeline import VAEOutput, VideoAutoencoderPipeline, opensora_vae_v1_2
from opensora.models.vae.spatial import SpatialVAE
from opensora.models.vae.temporal import TemporalVAE

__all__ = [
    "AutoencoderKLCausal3D",
    "FluxAutoencoder",
    "NLayerDiscriminator3D",
    "SpatialVAE",
    "TemporalVAE",
    "VAEOutput",
    "VideoAutoencoderPipeline",
    "VideoDCAE",
    "opensora_vae_v1_2",
]
