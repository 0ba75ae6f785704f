"""LPIPS (Zhang et al., 2018): a learned perceptual distance between images.

Both images pass through a frozen classification trunk (AlexNet or VGG16, laid out as torchvision
lays them out, so torchvision's weight files load by key). At five ReLU outputs the features are
divided by their L2 norm over channels, the squared difference of the two images' features goes
through a learned 1x1 convolution to one channel (the "linear head", weights v0.1), and the result
is averaged over space; the five averages add up to the distance. Inputs are RGB in [0, 1].
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from opensora.errors import OpenSoraError
from opensora.eval.weights import find_lpips_head, find_weights, load_state_dict

# LPIPS's fixed input scaling, applied to images in [-1, 1] (ImageNet statistics in that range)
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10

# torchvision's weight file for each trunk
TRUNK_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
TRUNK_NAMES = {"alex": "AlexNet", "vgg": "VGG16"}
# torchvision's ``features`` stacks up to the last tapped ReLU: convs as (out_channels, kernel, stride,
# padding), each followed by a ReLU; "M" is a max pool with stride 2 (3x3 in AlexNet, 2x2 in VGG)
ALEX_LAYERS = ((64, 11, 4, 2), "M", (192, 5, 1, 2), "M", (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1))
VGG_LAYERS = (
    (64, 3, 1, 1), (64, 3, 1, 1), "M",
    (128, 3, 1, 1), (128, 3, 1, 1), "M",
    (256, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1), "M",
    (512, 3, 1, 1), (512, 3, 1, 1), (512, 3, 1, 1), "M",
    (512, 3, 1, 1), (512, 3, 1, 1), (512, 3, 1, 1),
)  # fmt: skip
# indices in those stacks of the ReLUs LPIPS reads (AlexNet relu1-5; VGG relu1_2 ... relu5_3)
TAPS = {"alex": (1, 4, 7, 9, 11), "vgg": (3, 8, 15, 22, 29)}


class LPIPS(nn.Module):
    """LPIPS with an ``alex`` or ``vgg`` trunk: random trunk, channel-mean heads until :meth:`load_weights`."""

    def __init__(self, net: str = "alex") -> None:
        super().__init__()
        if net not in TAPS:
            raise OpenSoraError(f"unknown LPIPS network '{net}' (known: {', '.join(TAPS)})")
        self.net = net
        self.features = _trunk(ALEX_LAYERS if net == "alex" else VGG_LAYERS, pool=3 if net == "alex" else 2)
        self.taps = TAPS[net]
        widths = [self.features[index - 1].out_channels for index in self.taps]  # the conv before each ReLU
        self.heads = nn.ModuleList(nn.Conv2d(width, 1, kernel_size=1, bias=False) for width in widths)
        for head in self.heads:
            # untrained heads average the channels: non-negative like trained ones, so the distance is too
            nn.init.constant_(head.weight, 1.0 / head.in_channels)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def forward(self, real: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
        """Distance of each image pair: (N, 3, H, W) in [0, 1] twice -> (N,)."""
        return sum(layer.mean(dim=(1, 2, 3)) for layer in self.layer_maps(real, generated))

    def layer_maps(self, real: torch.Tensor, generated: torch.Tensor) -> list[torch.Tensor]:
        """The per-layer distance maps before spatial averaging, each (N, 1, h_l, w_l)."""
        if real.shape != generated.shape or real.ndim != 4 or real.shape[1] != 3:
            raise ValueError(f"expected two (N, 3, H, W) batches of one shape, got {real.shape} and {generated.shape}")
        both = torch.cat([real, generated]) * 2 - 1  # (2N, 3, H, W) in [-1, 1]
        taps = self._tapped((both - self.shift) / self.scale)
        maps = []
        for head, feature in zip(self.heads, taps):
            feature = feature / (feature.pow(2).sum(dim=1, keepdim=True).sqrt() + NORM_EPS)
            first, second = feature.chunk(2)
            maps.append(head((first - second).pow(2)))  # (N, 1, h, w)
        return maps

    def load_weights(self, trunk: dict[str, torch.Tensor], heads: dict[str, torch.Tensor]) -> LPIPS:
        """Load a torchvision trunk state dict (``features.*``) and an lpips head file (``lin{k}.model.1.weight``)."""
        prefix = "features."
        wanted = {key for key in self.features.state_dict()}
        found = {key[len(prefix) :]: value for key, value in trunk.items() if key.startswith(prefix)}
        found = {key: value for key, value in found.items() if key in wanted}
        head_state = {f"{k}.weight": heads.get(f"lin{k}.model.1.weight") for k in range(len(self.heads))}
        missing = sorted(wanted - found.keys()) + [key for key, value in head_state.items() if value is None]
        if missing:
            raise OpenSoraError(f"LPIPS '{self.net}' weights lack {', '.join(missing[:4])}")
        try:
            self.features.load_state_dict(found)
            self.heads.load_state_dict(head_state)
        except RuntimeError as exc:  # shapes of another network's file
            raise OpenSoraError(f"LPIPS '{self.net}' weights do not fit: {' '.join(str(exc).split())[:300]}") from exc
        return self

    def _tapped(self, images: torch.Tensor) -> list[torch.Tensor]:
        outputs, taps = [], set(self.taps)
        for index, layer in enumerate(self.features):
            images = layer(images)
            if index in taps:
                outputs.append(images)
        return outputs


def load_lpips(net: str, weights: Path | None, device: torch.device | str = "cpu") -> LPIPS:
    """LPIPS with weights from the folder ``weights`` (see opensora.eval.weights); one-line error when absent."""
    if net not in TRUNK_FILES:
        raise OpenSoraError(f"unknown LPIPS network '{net}' (known: {', '.join(TRUNK_FILES)})")
    trunk_file = find_weights(weights, TRUNK_FILES[net], f"torchvision {TRUNK_NAMES[net]} weights, the LPIPS trunk")
    head_file = find_lpips_head(weights, net)
    model = LPIPS(net).load_weights(load_state_dict(trunk_file), load_state_dict(head_file))
    return model.to(device)


def _trunk(layers: tuple, pool: int) -> nn.Sequential:
    """torchvision's ``features`` stack (conv, ReLU, pool), cut after the last tapped ReLU."""
    modules: list[nn.Module] = []
    channels = 3
    for spec in layers:
        if spec == "M":
            modules.append(nn.MaxPool2d(kernel_size=pool, stride=2))
            continue
        width, kernel, stride, padding = spec
        modules += [nn.Conv2d(channels, width, kernel, stride, padding), nn.ReLU()]
        channels = width
    return nn.Sequential(*modules)
