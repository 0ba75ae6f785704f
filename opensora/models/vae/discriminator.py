"""A 3-D PatchGAN discriminator for VAE training: one real/fake logit per space-time patch of a video.

Strided 3-D convolutions halve height and width at each of the first ``n_layers`` levels (and time
at the first two), so each logit sees a patch of a few frames and some tens of pixels; the GAN
loss averages over all of them. Clips of one frame (images) pass through too.
"""

from __future__ import annotations

import torch
from torch import nn

from opensora.models.modeling import ModelMixin
from opensora.models.presets import preset_factory
from opensora.registry import MODELS

MAX_WIDTH_MULTIPLIER = 8  # channels stop doubling at 8 x ndf
LEAKY_SLOPE = 0.2


def _conv_norm_act(in_channels: int, out_channels: int, kernel: int, stride: tuple[int, int, int]) -> list[nn.Module]:
    # no bias: the batch norm right after would remove it
    conv = nn.Conv3d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False)
    return [conv, nn.BatchNorm3d(out_channels), nn.LeakyReLU(LEAKY_SLOPE)]


class NLayerDiscriminator3D(ModelMixin):
    """Videos [B, input_nc, T, H, W] in [-1, 1] -> logits [B, 1, T', H', W'] (> 0: judged real).

    Arguments keep the release's names: ``ndf`` channels in the first layer, ``n_layers`` strided levels.
    """

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3, kernel_size: int = 3) -> None:
        super().__init__()
        self.register_config(input_nc=input_nc, ndf=ndf, n_layers=n_layers, kernel_size=kernel_size)
        if n_layers < 1 or ndf < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"need n_layers >= 1, ndf >= 1 and an odd kernel_size, got {n_layers}, {ndf} and {kernel_size}"
            )
        pad = kernel_size // 2
        layers: list[nn.Module] = [
            nn.Conv3d(input_nc, ndf, kernel_size, stride=2, padding=pad),
            nn.LeakyReLU(LEAKY_SLOPE),
        ]
        channels = ndf
        for level in range(1, n_layers):
            width = ndf * min(2**level, MAX_WIDTH_MULTIPLIER)
            time_stride = 2 if level == 1 else 1  # time is short: compress it less than space
            layers += _conv_norm_act(channels, width, kernel_size, (time_stride, 2, 2))
            channels = width
        width = ndf * min(2**n_layers, MAX_WIDTH_MULTIPLIER)
        layers += _conv_norm_act(channels, width, kernel_size, (1, 1, 1))
        layers.append(nn.Conv3d(width, 1, kernel_size, stride=1, padding=pad))
        self.main = nn.Sequential(*layers)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """The usual PatchGAN start: convolutions N(0, 0.02), norm scales N(1, 0.02), biases 0."""
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.normal_(module.weight, 0.0, 0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm3d):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


MODELS.register("NLayerDiscriminator3D", preset_factory(NLayerDiscriminator3D))
