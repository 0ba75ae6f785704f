"""opensora: a config-driven text-to-video diffusion framework."""

__version__ = "0.1.0"
