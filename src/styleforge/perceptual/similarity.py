"""Image similarity measures: PSNR and SSIM (on [0, 255] images), as the projector reports them."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

def psnr(a, b, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB of two equally shaped images (numpy arrays or tensors); inf if equal."""
    ta = torch.tensor(a, dtype=torch.float64) if not torch.is_tensor(a) else a.double()
    tb = torch.tensor(b, dtype=torch.float64) if not torch.is_tensor(b) else b.double()
    mse = (ta - tb).square().mean().item()
    if mse == 0:
        return float("inf")
    return 10 * math.log10(data_range**2 / mse)


def _gaussian_window(size: int, sigma: float, dtype, device) -> torch.Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 255.0, win_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean structural similarity per image, [N], of [N, C, H, W] tensors (Wang et al. 2004: Gaussian
    window 11 / sigma 1.5, K1 0.01, K2 0.03, averaged over channels and the positions where the window fits).

    Matches ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=...)``. Images smaller than the window use a smaller odd window.
    Differentiable.
    """
    a = torch.as_tensor(a)
    b = torch.as_tensor(b)
    dtype = a.dtype if a.is_floating_point() else torch.float64
    a = a.to(dtype)
    b = b.to(dtype)
    if a.ndim == 3:
        a, b = a[None], b[None]
    n, c, h, w = a.shape
    size = min(win_size, h, w)
    if size % 2 == 0:
        size -= 1
    size = max(size, 1)
    g = _gaussian_window(size, sigma, dtype, a.device)
    k2 = torch.outer(g, g)[None, None].repeat(c, 1, 1, 1)

    def blur(x):
        return F.conv2d(x, k2, groups=c)

    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    saa = blur(a * a) - mu_a * mu_a
    sbb = blur(b * b) - mu_b * mu_b
    sab = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2))
    return s.flatten(1).mean(dim=1)
