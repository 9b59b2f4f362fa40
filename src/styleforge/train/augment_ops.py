"""The image operations of the augmentation pipe (:mod:`.augment`): its filters, matrices, warp, filter bank, cutout.

*Geometry.* The geometric draws compose one inverse matrix per image (output pixel -> input pixel, pixel units
around the image centre), ``G_inv = G_inv @ step`` (:func:`translate2`, :func:`scale2`, :func:`rotate2`). Whenever a
geometric op is enabled (also at ``p = 0``) the batch is warped (:func:`affine_warp`): reflect-padded by the margin
the mapped corners need (plus 6 px, at most size - 1), upsampled 2x with the normalised 12-tap symlet-6 low-pass
(zero insertion, gain 4), resampled by ``grid_sample`` (bilinear, zero padding, ``align_corners=False``) onto a 2x
grid 6 px larger per side, then filtered with the same taps and decimated back. The FIR resampling is
:mod:`styleforge.networks.ops`' ``upsample2d`` / ``downsample2d`` (the official pipe's ``upfirdn2d`` calls). The
symlet is not symmetric, so even flips and quarter turns move content by a fraction of a pixel (as in the official
pipe; ``xflip`` differs from an exact mirror by up to ~0.2).

*Colour.* The colour draws compose one 4x4 matrix acting on ``(r, g, b, 1)`` (``C = step @ C``; :func:`translate3`,
:func:`scale3`, :func:`rotate3`), applied whenever a colour op is enabled; grey images are treated as ``(l, l, l)``
and averaged back (hue and saturation neither draw nor act on them). Then ``imgfilter`` (:func:`apply_filters`,
separable 43-tap filters from :func:`filter_bank`, reflect padding), ``noise``, ``cutout`` (:func:`cutout_mask`).

Matrices are batched homogeneous float32 CPU tensors: [n, 3, 3] in 2-D, [n, 4, 4] for colours; each takes
per-sample tensors [n] (or Python numbers, broadcast to n).
"""

from __future__ import annotations

import functools
from typing import List

import numpy as np
import torch
import torch.nn.functional as F

from ..networks.grid_sample import grid_sample
from ..networks.ops import downsample2d, upsample2d


# Symlet-6 decomposition low-pass filter, the standard tabulated values (e.g. PyWavelets' ``Wavelet('sym6').dec_lo``).
# Orthogonal: sum f[k] f[k+2n] = delta(n), sum f = sqrt(2). tests/test_augment.py checks these properties.
SYM6_LOWPASS = (
    0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
    0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
    -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148,
)
# Symlet-2 (= Daubechies-2) decomposition low-pass filter, the prototype of the imgfilter bank.
SYM2_LOWPASS = (-0.12940952255092145, 0.22414386804185735, 0.836516303737469, 0.48296291314469025)


def geom_taps() -> torch.Tensor:
    """The geometric low-pass: SYM6_LOWPASS in float32, normalised to sum 1 (in float32)."""
    f = torch.tensor(SYM6_LOWPASS, dtype=torch.float32)
    return f / f.sum()


def filter_bank(levels: int = 3) -> torch.Tensor:
    """The imgfilter bank [levels + 1, taps] (float32): an undecimated dyadic split of the spectrum built from
    the symlet-2 half-band pair. Row 0 is the low-pass residual, row ``levels`` the highest band.

    Level by level, every existing row is dilated by 2 (zeros between taps) and smoothed with the zero-phase
    low-pass ``lo * lo_reversed / 2``, and a new row holding the zero-phase high-pass ``hi * hi_reversed / 2``
    (``hi[k] = (-1)^k lo[k]``) at the centre is appended. Lengths 1 -> 7 -> 19 -> 43 taps.
    """
    lo = np.asarray(SYM2_LOWPASS, dtype=np.float64)
    hi = lo * (-1.0) ** np.arange(lo.size)
    lo2, hi2 = np.convolve(lo, lo[::-1]) / 2, np.convolve(hi, hi[::-1]) / 2
    rows = [np.ones(1)]
    for _ in range(levels):
        rows = [np.convolve(np.stack([r, np.zeros_like(r)], axis=1).ravel()[:-1], lo2) for r in rows]
        band = np.zeros(rows[0].size)
        start = (band.size - hi2.size) // 2
        band[start: start + hi2.size] = hi2
        rows.append(band)
    return torch.tensor(np.stack(rows), dtype=torch.float32)



def eye(n: int, k: int) -> torch.Tensor:
    return torch.eye(k).repeat(n, 1, 1)


def per_sample(n: int, *values) -> List[torch.Tensor]:
    return [torch.as_tensor(v, dtype=torch.float32).reshape(-1).expand(n) for v in values]


def translate2(n: int, tx, ty) -> torch.Tensor:
    m = eye(n, 3)
    m[:, 0, 2], m[:, 1, 2] = per_sample(n, tx, ty)
    return m


def scale2(n: int, sx, sy) -> torch.Tensor:
    m = eye(n, 3)
    m[:, 0, 0], m[:, 1, 1] = per_sample(n, sx, sy)
    return m


def rotate2(theta: torch.Tensor) -> torch.Tensor:
    """Counter-clockwise in a y-up frame (in image coordinates, y down: clockwise) by ``theta`` [n]."""
    c, s = torch.cos(theta), torch.sin(theta)
    m = eye(theta.shape[0], 3)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
    return m


def translate3(b: torch.Tensor) -> torch.Tensor:
    m = eye(b.shape[0], 4)
    m[:, :3, 3] = b[:, None]
    return m


def scale3(s: torch.Tensor) -> torch.Tensor:
    m = eye(s.shape[0], 4)
    m[:, 0, 0] = m[:, 1, 1] = m[:, 2, 2] = s
    return m


def rotate3(axis: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Rotation by ``theta`` [n] around the unit ``axis`` (first 3 entries of a [4] vector), Rodrigues' formula."""
    a = axis[:3]
    c, s = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    cross = torch.zeros(3, 3)  # cross-product matrix: cross @ x == a x x
    cross[0, 1], cross[0, 2], cross[1, 0], cross[1, 2], cross[2, 0], cross[2, 1] = -a[2], a[1], a[2], -a[0], -a[1], a[0]
    m = eye(theta.shape[0], 4)
    m[:, :3, :3] = torch.outer(a, a) * (1 - c) + torch.eye(3) * c + cross * s
    return m



def affine_warp(images: torch.Tensor, inv_matrix: torch.Tensor) -> torch.Tensor:
    """The geometric step of the pipe: resample ``images`` [n, c, h, w] through per-sample 3x3 matrices.

    ``inv_matrix`` [n, 3, 3] maps an output pixel position to the input position it reads, in pixel units with the
    origin at the image centre (x right, y down). Computed as the module docstring says: one reflect margin for the
    whole batch, 2x symlet-6 up-sampling, bilinear ``grid_sample`` with zero padding, symlet-6 down-sampling.
    """
    if images.ndim != 4:
        raise ValueError(f"expected images [N, C, H, W], got shape {tuple(images.shape)}")
    n, c, h, w = images.shape
    G = inv_matrix.detach().to(device="cpu", dtype=torch.float32)
    taps = geom_taps()
    border = taps.numel() // 4  # the 2x grid reaches this many pixels past each side (cropped by the decimation)

    # Reflect margin: how far outside the image the mapped corners read, plus the filters' reach.
    cx, cy = (w - 1) / 2, (h - 1) / 2
    corners = torch.tensor([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]], dtype=torch.float32)
    reach = (G @ corners.t())[:, :2, :].permute(1, 0, 2).flatten(1)  # [xy, n * 4]
    margin = torch.cat([-reach, reach]).max(dim=1).values  # [left, top, right, bottom]
    margin = margin + torch.tensor([border * 2 - cx, border * 2 - cy] * 2, dtype=torch.float32)
    margin = margin.max(torch.zeros(4)).min(torch.tensor([w - 1, h - 1] * 2, dtype=torch.float32))
    mx0, my0, mx1, my1 = (int(v) for v in margin.ceil())

    x = F.pad(images, [mx0, mx1, my0, my1], mode="reflect")
    G = translate2(n, (mx0 - mx1) / 2, (my0 - my1) / 2) @ G  # centre of the padded image
    x = upsample2d(x, taps)
    G = scale2(n, 2, 2) @ G @ scale2(n, 1 / 2, 1 / 2)  # 2x pixel units ...
    G = translate2(n, -0.5, -0.5) @ G @ translate2(n, 0.5, 0.5)  # ... whose pixel centres sit half a pixel off
    hout, wout = (h + border * 2) * 2, (w + border * 2) * 2
    # normalised coordinates of grid_sample (align_corners=False) on both sides
    G = scale2(n, 2 / x.shape[3], 2 / x.shape[2]) @ G @ scale2(n, 1 / (2 / wout), 1 / (2 / hout))
    theta = G[:, :2, :].to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, [n, c, hout, wout], align_corners=False)
    x = grid_sample(x, grid)  # twice differentiable on every torch (R1 through the warp)
    return downsample2d(x, taps, padding=-border * 2, flip_filter=True)  # correlation, as the official


@functools.lru_cache(maxsize=None)
def imgfilter_bank() -> torch.Tensor:
    return filter_bank()


def apply_filters(x: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """Separable cross-correlation of each image with its own filter [n, taps] (width, then height), reflect pad."""
    n, c, h, w = x.shape
    r = filters.shape[1] // 2
    if min(h, w) <= r:
        raise ValueError(f"imgfilter needs images larger than {r} pixels (reflect padding), got {h}x{w}")
    k = filters.to(device=x.device, dtype=x.dtype).repeat_interleave(c, dim=0)  # [n * c, taps]
    y = F.pad(x.reshape(1, n * c, h, w), [r, r, r, r], mode="reflect")
    y = F.conv2d(y, k[:, None, None, :], groups=n * c)
    y = F.conv2d(y, k[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


def cutout_mask(size: torch.Tensor, centre: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[n, 1, h, w] float mask: 0 inside each image's rectangle (``size``/``centre`` [n, 2, 1, 1, 1], x then y)."""
    fx = (torch.arange(w).reshape(1, 1, 1, w) + 0.5) / w
    fy = (torch.arange(h).reshape(1, 1, h, 1) + 0.5) / h
    outside_x = (fx - centre[:, 0]).abs() >= size[:, 0] / 2
    outside_y = (fy - centre[:, 1]).abs() >= size[:, 1] / 2
    return torch.logical_or(outside_x, outside_y).to(torch.float32)
