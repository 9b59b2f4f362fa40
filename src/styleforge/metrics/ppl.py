"""Perceptual path length (official ``perceptual_path_length.py``), with a pluggable distance.

Per sample: t ~ U(0, 1) ('full') or t = 0 ('end'); z0, z1 ~ N(0, I) with one label c. Space 'w': w0, w1 = mapping
(z0, c), mapping(z1, c), then lerp at t and t + eps; space 'z': slerp z at t and t + eps, then map. The two w's are
synthesised with noise_mode 'const' after the noise buffers are re-drawn (once per batch of ``batch_size``: the
official 2, which is part of the definition); crop (optional) keeps rows [3c, 7c) and columns [2c, 6c), c = res/8;
images larger than 256 are box-downsampled by res // 256; scaled to [0, 255]; grayscale repeated to 3 channels.
The distance is ``distance(img_t0, img_t1) / eps^2`` -- by default the squared difference of the VGG16 file's LPIPS
features (``vgg16(img, resize_images=False, return_lpips=True)``). The value is the mean of the samples between
the 1st and 99th percentiles (:func:`~styleforge.metrics.formulas.filtered_mean`). The generator's noise buffers
are restored afterwards.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import numpy as np
import torch

from ..errors import StyleforgeError
from ..utils.progress import Reporter
from .formulas import filtered_mean

__all__ = ["slerp", "ppl_latents", "ppl_distances", "lpips_distance", "compute_ppl"]

Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of the normalised a and b (official ``slerp``)."""
    a = a / a.norm(dim=-1, keepdim=True)
    b = b / b.norm(dim=-1, keepdim=True)
    d = (a * b).sum(dim=-1, keepdim=True)
    p = t * torch.acos(d)
    c = b - d * a
    c = c / c.norm(dim=-1, keepdim=True)
    d = a * torch.cos(p) + c * torch.sin(p)
    return d / d.norm(dim=-1, keepdim=True)


def ppl_latents(rng: np.random.RandomState, n: int, z_dim: int, sampling: str) -> Tuple[np.ndarray, np.ndarray,
                                                                                        np.ndarray]:
    """One batch's draws, in this order: t [n] (zeros for 'end'), then z0, z1 [n, z_dim]."""
    t = rng.uniform(size=[n]) * (1.0 if sampling == "full" else 0.0)
    z = rng.standard_normal([2 * n, z_dim])
    return t, z[:n], z[n:]


def lpips_distance(vgg16: torch.nn.Module) -> Distance:
    """The official PPL distance: squared difference of the VGG16 file's LPIPS features, summed per sample."""
    def distance(img0: torch.Tensor, img1: torch.Tensor) -> torch.Tensor:
        f0, f1 = vgg16(torch.cat([img0, img1]), resize_images=False, return_lpips=True).chunk(2)
        return (f0 - f1).square().sum(dim=1)
    return distance


def ppl_distances(G: torch.nn.Module, z0: torch.Tensor, z1: torch.Tensor, c: torch.Tensor, t: torch.Tensor, *,
                  space: str, epsilon: float, crop: bool, distance: Distance) -> torch.Tensor:
    """Per-sample ``distance(img(t), img(t + eps)) / eps^2`` (noise buffers as they are)."""
    tt = t.reshape(-1, 1)
    if space == "w":
        w0, w1 = G.mapping(torch.cat([z0, z1]), torch.cat([c, c])).chunk(2)
        tt = tt.to(w0.dtype)
        wt0 = w0.lerp(w1, tt.unsqueeze(2))
        wt1 = w0.lerp(w1, tt.unsqueeze(2) + epsilon)
    else:
        zt0 = slerp(z0, z1, tt)
        zt1 = slerp(z0, z1, tt + epsilon)
        wt0, wt1 = G.mapping(torch.cat([zt0, zt1]), torch.cat([c, c])).chunk(2)
    img = G.synthesis(torch.cat([wt0, wt1]), noise_mode="const")
    if crop:
        if img.shape[2] != img.shape[3]:
            raise StyleforgeError(f"PPL's crop needs square images, got {img.shape[3]}x{img.shape[2]}")
        k = img.shape[2] // 8
        img = img[:, :, k * 3: k * 7, k * 2: k * 6]
    factor = int(G.img_resolution) // 256
    if factor > 1:
        img = img.reshape([-1, img.shape[1], img.shape[2] // factor, factor, img.shape[3] // factor, factor])
        img = img.mean([3, 5])
    img = (img + 1) * (255 / 2)
    if img.shape[1] == 1:
        img = img.repeat([1, 3, 1, 1])
    img0, img1 = img.chunk(2)
    return distance(img0, img1) / epsilon ** 2


def compute_ppl(G: torch.nn.Module, num_samples: int, *, epsilon: float, space: str, sampling: str, crop: bool,
                batch_size: int, distance: Distance, label_source=None, seed: int = 0, device="cpu",
                reporter: Optional[Reporter] = None) -> float:
    """PPL over ``num_samples`` samples drawn from ``np.random.RandomState(seed)`` (t, z0, z1 per batch by
    :func:`ppl_latents`, then the labels); the noise buffers are re-drawn per batch from ``torch`` generator
    ``seed`` and put back afterwards."""
    if not (hasattr(G, "mapping") and hasattr(G, "synthesis")):
        raise StyleforgeError("PPL needs a generator with a mapping and a synthesis network (a W space); "
                              "this network has none", param="metrics", label="metrics")
    rep = reporter or Reporter()
    rng = np.random.RandomState(seed)
    gen = torch.Generator().manual_seed(seed)
    bufs = [b for name, b in G.named_buffers() if name.endswith(".noise_const") or name == "noise_const"]
    saved = [b.detach().clone() for b in bufs]
    c_dim = int(getattr(G, "c_dim", 0))
    dists = []
    try:
        with rep.stage("ppl samples", total=num_samples, unit="sample") as advance, torch.no_grad():
            for start in range(0, num_samples, batch_size):
                n = min(batch_size, num_samples - start)
                t, z0, z1 = ppl_latents(rng, n, G.z_dim, sampling)
                if label_source is not None and c_dim > 0:
                    c = np.stack([label_source(rng) for _ in range(n)]).astype(np.float32)
                else:
                    c = np.zeros([n, c_dim], dtype=np.float32)
                for b in bufs:
                    b.copy_(torch.randn(b.shape, generator=gen).to(b))
                as_t = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32)).to(device)  # noqa: E731
                d = ppl_distances(G, as_t(z0), as_t(z1), as_t(c), as_t(t), space=space, epsilon=epsilon,
                                  crop=crop, distance=distance)
                dists.append(d.detach().to("cpu", torch.float64).numpy())
                advance(n)
    finally:
        with torch.no_grad():
            for b, s in zip(bufs, saved):
                b.copy_(s)
    return filtered_mean(np.concatenate(dists))
