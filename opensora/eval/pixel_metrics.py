"""PSNR and SSIM of image batches, in torch, matching scikit-image's definitions.

Both take float (N, C, H, W) images in ``[0, data_range]`` and return one value per image (N,).

SSIM uses the settings of Wang et al. (2004) as scikit-image spells them:
``structural_similarity(x, y, data_range=1, channel_axis=-1, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False)``: an 11x11 Gaussian window (sigma 1.5, truncated at 3.5 sigma),
K1 = 0.01, K2 = 0.03, population (not sample) variances, the SSIM map averaged over the pixels whose
window lies wholly inside the image, then over channels. Identical images give exactly 1.

PSNR is ``10 log10(data_range^2 / MSE)`` over all pixels and channels of an image; identical images
have MSE 0 and a PSNR of ``inf`` (no cap), as in scikit-image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # scipy.ndimage.gaussian_filter's default, which scikit-image uses
SSIM_K1, SSIM_K2 = 0.01, 0.03


def psnr(real: torch.Tensor, generated: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of each image pair, (N, C, H, W) -> (N,); ``inf`` where equal."""
    _check_pair(real, generated)
    mse = (real.double() - generated.double()).pow(2).flatten(1).mean(dim=1)
    # float64: a tiny MSE from near-identical frames keeps its digits; 1/0 gives inf, not an error
    return (10.0 * torch.log10(data_range**2 / mse)).to(real.dtype)


def ssim(real: torch.Tensor, generated: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean structural similarity of each image pair, (N, C, H, W) -> (N,), in [-1, 1]."""
    _check_pair(real, generated)
    window = gaussian_window(SSIM_SIGMA, SSIM_TRUNCATE, real.device)
    size = window.numel()
    if min(real.shape[-2:]) < size:
        raise ValueError(f"SSIM needs images of at least {size}x{size} pixels, got {tuple(real.shape[-2:])}")
    x, y = real.double(), generated.double()
    channels = x.shape[1]
    # local moments of every channel at once: a batch of 5 maps per channel, filtered separably
    maps = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # (N, 5C, H, W)
    mu_x, mu_y, mu_xx, mu_yy, mu_xy = _filter_valid(maps, window).split(channels, dim=1)
    var_x, var_y, cov = mu_xx - mu_x * mu_x, mu_yy - mu_y * mu_y, mu_xy - mu_x * mu_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    denominator = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return (numerator / denominator).flatten(1).mean(dim=1).to(real.dtype)


def gaussian_window(sigma: float, truncate: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """The normalised 1-D Gaussian of ``scipy.ndimage.gaussian_filter``: radius ``int(truncate * sigma + 0.5)``."""
    radius = int(truncate * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return weights / weights.sum()


def _filter_valid(maps: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Filter every channel of (N, C, H, W) by ``window`` along H then W, keeping only full windows.

    scikit-image filters with reflected borders and then drops a border as wide as the window's
    radius, which leaves exactly the pixels a 'valid' convolution produces.
    """
    channels, size = maps.shape[1], window.numel()
    rows = window.view(1, 1, size, 1).expand(channels, 1, size, 1)
    cols = window.view(1, 1, 1, size).expand(channels, 1, 1, size)
    return F.conv2d(F.conv2d(maps, rows, groups=channels), cols, groups=channels)


def _check_pair(real: torch.Tensor, generated: torch.Tensor) -> None:
    if real.shape != generated.shape or real.ndim != 4:
        raise ValueError(
            f"expected two (N, C, H, W) batches of one shape, got {tuple(real.shape)} and {tuple(generated.shape)}"
        )
    if not real.is_floating_point() or not generated.is_floating_point():
        raise ValueError(f"expected float images, got {real.dtype} and {generated.dtype}")
