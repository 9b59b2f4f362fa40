"""Adaptive discriminator augmentation (ADA): the augmentation pipeline and its p controller.

Karras et al. 2020, "Training Generative Adversarial Networks with Limited Data" (appendix B), in plain PyTorch (no
torchvision, no compiled ops). The pipeline computes what the official StyleGAN2-ADA ``AugmentPipe`` computes, draw
for draw: tests/test_augment_parity.py reproduces every case of the official fixtures (``augment_bgc``) within
1e-4, seeded, with injected draws and in the official ``debug_percentile`` mode.

What the pipeline does
----------------------
Every image shown to the discriminator (reals *and* fakes) goes through :class:`AugmentPipe`. Each enabled op fires
per sample with probability ``p * multiplier`` (a draw ``u < multiplier * p``, float32); ``p`` is a 0-dim float32
buffer (``state_dict``, follows ``.to(device)``), the multipliers and magnitudes live in :class:`AugmentConfig`
(the official keyword names and defaults). Ops, in the order they act:

* pixel blitting - ``xflip`` (mirror left-right, half of the firings), ``rotate90`` (0/90/180/270 degrees),
  ``xint`` (translation by whole pixels, uniform within +-``xint_max`` of the size);
* general geometry - ``scale`` (isotropic, ``2**N(0, scale_std)``), ``rotate`` (uniform within +-``rotate_max``
  half-turns, before and/or after ``aniso``, each with probability ``1 - sqrt(1 - rotate*p)``), ``aniso``
  (``diag(s, 1/s)``, ``s = 2**N(0, aniso_std)``), ``xfrac`` (translation by ``N(0, xfrac_std)`` of the size);
* colour - ``brightness`` (add ``N(0, brightness_std)``), ``contrast`` (times ``2**N(0, contrast_std)``),
  ``lumaflip`` (mirror along the grey axis, half of the firings), ``hue`` (rotation around the grey axis, uniform
  within +-``hue_max`` half-turns), ``saturation`` (chroma times ``2**N(0, saturation_std)``);
* ``imgfilter`` - per band of a 4-band filter bank a gain ``2**N(0, imgfilter_std)``, power-normalised;
* ``noise`` - additive Gaussian noise with per-image sigma ``|N(0, noise_std)|``;
* ``cutout`` - zero a ``cutout_size`` square (fraction of the size) at a uniform position.

How it is computed
------------------
*Draws.* Every enabled op makes its draws (float32, CPU, torch's generator: ``generator`` or the global one) on every
call, whatever ``p`` is, whether it fires or not, in the op order above; the gate draw follows the value draw (except
cutout: gate, then centre). ``draws=`` replaces the source (any object with ``rand(*shape)`` / ``randn(*shape)``,
e.g. :class:`ReplayDraws`), to replay recorded numbers. ``debug_percentile=d`` (the official deterministic testing
mode) overwrites every op's parameter by a value derived from ``d`` after the draws, for every image.

*Geometry.* The geometric draws compose one inverse matrix per image (output pixel -> input pixel, pixel units
around the image centre), ``G_inv = G_inv @ step``. Whenever a geometric op is enabled (also at ``p = 0``) the batch
is warped: reflect-padded by the margin the mapped corners need (plus 6 px, at most size - 1), upsampled 2x with the
normalised 12-tap symlet-6 low-pass (zero insertion, gain 4), resampled by ``grid_sample`` (bilinear, zero padding,
``align_corners=False``) onto a 2x grid 6 px larger per side, then filtered with the same taps and decimated back.
The symlet is not symmetric, so even flips and quarter turns move content by a fraction of a pixel (as in the
official pipe; ``xflip`` differs from an exact mirror by up to ~0.2).

*Colour.* The colour draws compose one 4x4 matrix acting on ``(r, g, b, 1)`` (``C = step @ C``), applied whenever
a colour op is enabled; grey images are treated as ``(l, l, l)`` and averaged back (hue and saturation neither draw
nor act on them). Then ``imgfilter`` (separable 43-tap filter, reflect padding), ``noise``, ``cutout``.

Everything is differentiable w.r.t. the images, double backward included (R1 through the augmentation).

Controller
----------
:class:`AdaptiveP`: accumulate ``sign(D(real))`` over the real batches; every ``interval`` steps move ``p`` by
``sign(r_t - target) * images / (ada_kimg * 1000)`` in float32 (as the official loop updates its float32 buffer),
never below 0 (no upper clamp). :func:`make_augment` builds ``'ada'`` (pipe + controller, p starts at 0),
``'fixed'`` (pipe with a constant p) and ``'noaug'`` (nothing).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..networks.grid_sample import grid_sample

__all__ = [
    "AUGPIPE_PRESETS",
    "AugmentConfig",
    "AugmentPipe",
    "AdaptiveP",
    "ReplayDraws",
    "make_augment",
    "affine_warp",
    "filter_bank",
    "SYM6_LOWPASS",
]

# ----------------------------------------------------------------------------------------------------------
# Constants.

# Symlet-6 decomposition low-pass filter, the standard tabulated values (e.g. PyWavelets' ``Wavelet('sym6').dec_lo``).
# Orthogonal: sum f[k] f[k+2n] = delta(n), sum f = sqrt(2). tests/test_augment.py checks these properties.
SYM6_LOWPASS = (
    0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
    0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
    -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148,
)
# Symlet-2 (= Daubechies-2) decomposition low-pass filter, the prototype of the imgfilter bank.
SYM2_LOWPASS = (-0.12940952255092145, 0.22414386804185735, 0.836516303737469, 0.48296291314469025)

_BLIT_OPS = ("xflip", "rotate90", "xint")
_GEOM_OPS = ("scale", "rotate", "aniso", "xfrac")
_COLOR_OPS = ("brightness", "contrast", "lumaflip", "hue", "saturation")
_OTHER_OPS = ("imgfilter", "noise", "cutout")
OPS = _BLIT_OPS + _GEOM_OPS + _COLOR_OPS + _OTHER_OPS

# Named op sets: probability multipliers (1 = enabled). 'noaug' enables nothing.
AUGPIPE_PRESETS: Dict[str, Dict[str, float]] = {
    "noaug": {},
    "blit": {k: 1.0 for k in _BLIT_OPS},
    "geom": {k: 1.0 for k in _GEOM_OPS},
    "color": {k: 1.0 for k in _COLOR_OPS},
    "bg": {k: 1.0 for k in _BLIT_OPS + _GEOM_OPS},
    "bgc": {k: 1.0 for k in _BLIT_OPS + _GEOM_OPS + _COLOR_OPS},
}

# Settings of earlier styleforge versions (a different warp), accepted in stored configs with these values only.
_LEGACY_SETTINGS = {"geom_filter": "sym6", "interpolation": "bilinear"}


def _geom_taps() -> torch.Tensor:
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


# ----------------------------------------------------------------------------------------------------------
# Config.


@dataclass
class AugmentConfig:
    """Plain-data description of an :class:`AugmentPipe` (JSON-able via :meth:`to_dict`).

    Op fields are probability multipliers (0 disables the op; it fires where a uniform draw is below
    ``multiplier * p``). The other fields are magnitudes. Names and defaults are those of the official AugmentPipe
    keyword arguments, so an official ``init_kwargs`` dict converts with :meth:`from_official_kwargs`.
    """

    # Pixel blitting.
    xflip: float = 0.0
    rotate90: float = 0.0
    xint: float = 0.0
    xint_max: float = 0.125  # max integer shift, fraction of the image size
    # General geometric transformations.
    scale: float = 0.0
    rotate: float = 0.0
    aniso: float = 0.0
    xfrac: float = 0.0
    scale_std: float = 0.2  # log2 std of the isotropic scale
    rotate_max: float = 1.0  # max angle in half-turns (1 = +-180 degrees)
    aniso_std: float = 0.2  # log2 std of the anisotropic scale
    xfrac_std: float = 0.125  # std of the fractional shift, fraction of the image size
    # Colour transformations.
    brightness: float = 0.0
    contrast: float = 0.0
    lumaflip: float = 0.0
    hue: float = 0.0
    saturation: float = 0.0
    brightness_std: float = 0.2  # std of the added offset
    contrast_std: float = 0.5  # log2 std of the gain
    hue_max: float = 1.0  # max hue angle in half-turns
    saturation_std: float = 1.0  # log2 std of the saturation gain
    # Image-space filtering.
    imgfilter: float = 0.0
    imgfilter_bands: List[float] = field(default_factory=lambda: [1.0, 1.0, 1.0, 1.0])  # per-band multipliers
    imgfilter_std: float = 1.0  # log2 std of each band's gain
    # Image-space corruptions.
    noise: float = 0.0
    cutout: float = 0.0
    noise_std: float = 0.1  # std of the per-image noise sigma
    cutout_size: float = 0.5  # side of the cutout square, fraction of the image size

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            values = getattr(self, f.name)
            if f.name == "imgfilter_bands":
                if not isinstance(values, list) or len(values) != 4:
                    raise ValueError(f"AugmentConfig.imgfilter_bands must be a list of 4 numbers, got {values!r}")
            else:
                values = [values]
            for v in values:
                if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                    got = getattr(self, f.name)
                    raise ValueError(f"AugmentConfig.{f.name} must be finite numbers >= 0, got {got!r}")

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "imgfilter_bands" and isinstance(v, (list, tuple)):
                setattr(self, f.name, [float(b) if isinstance(b, int) and not isinstance(b, bool) else b for b in v])
            elif isinstance(v, int) and not isinstance(v, bool):
                setattr(self, f.name, float(v))
        self.validate()

    # -- conversion -------------------------------------------------------------------------------------

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AugmentConfig":
        if isinstance(d, cls):
            return d
        if not isinstance(d, Mapping):
            raise TypeError(f"AugmentConfig expects a mapping, got {type(d).__name__}")
        d = dict(d)
        for k, v in _LEGACY_SETTINGS.items():
            if k in d and d[k] == v:
                del d[k]
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"AugmentConfig: unknown settings {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "AugmentConfig":
        if name not in AUGPIPE_PRESETS:
            raise KeyError(f"unknown augment preset {name!r}; expected one of {sorted(AUGPIPE_PRESETS)}")
        return cls.from_dict({**AUGPIPE_PRESETS[name], **overrides})

    @classmethod
    def from_official_kwargs(cls, kwargs: Mapping[str, Any]) -> "AugmentConfig":
        """Convert the ``init_kwargs`` of an official AugmentPipe (every official setting has a field here)."""
        names = {f.name for f in dataclasses.fields(cls)}
        d = {}
        for k, v in kwargs.items():
            if k not in names:
                raise ValueError(f"unknown official augment setting {k!r}")
            d[k] = [float(b) for b in v] if k == "imgfilter_bands" else float(v)
        return cls(**d)

    # -- queries -----------------------------------------------------------------------------------------

    def enabled_ops(self) -> Tuple[str, ...]:
        return tuple(k for k in OPS if getattr(self, k) > 0)


ConfigLike = Union[None, str, Mapping[str, Any], AugmentConfig]


def _resolve_config(config: ConfigLike, overrides: Dict[str, Any]) -> AugmentConfig:
    if config is None:
        base: Dict[str, Any] = {}
    elif isinstance(config, str):
        if config not in AUGPIPE_PRESETS:
            raise KeyError(f"unknown augment preset {config!r}; expected one of {sorted(AUGPIPE_PRESETS)}")
        base = dict(AUGPIPE_PRESETS[config])
    elif isinstance(config, AugmentConfig):
        base = config.to_dict()
    elif isinstance(config, Mapping):
        base = dict(config)
    else:
        raise TypeError(f"config must be a preset name, a dict or an AugmentConfig, got {type(config).__name__}")
    return AugmentConfig.from_dict({**base, **overrides})


# ----------------------------------------------------------------------------------------------------------
# Batched homogeneous matrices (float32, CPU): [n, 3, 3] in 2-D, [n, 4, 4] for colours. Each takes per-sample
# tensors [n] (or Python numbers, broadcast to n).


def _eye(n: int, k: int) -> torch.Tensor:
    return torch.eye(k).repeat(n, 1, 1)


def _per_sample(n: int, *values) -> List[torch.Tensor]:
    return [torch.as_tensor(v, dtype=torch.float32).reshape(-1).expand(n) for v in values]


def _translate2(n: int, tx, ty) -> torch.Tensor:
    m = _eye(n, 3)
    m[:, 0, 2], m[:, 1, 2] = _per_sample(n, tx, ty)
    return m


def _scale2(n: int, sx, sy) -> torch.Tensor:
    m = _eye(n, 3)
    m[:, 0, 0], m[:, 1, 1] = _per_sample(n, sx, sy)
    return m


def _rotate2(theta: torch.Tensor) -> torch.Tensor:
    """Counter-clockwise in a y-up frame (in image coordinates, y down: clockwise) by ``theta`` [n]."""
    c, s = torch.cos(theta), torch.sin(theta)
    m = _eye(theta.shape[0], 3)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
    return m


def _translate3(b: torch.Tensor) -> torch.Tensor:
    m = _eye(b.shape[0], 4)
    m[:, :3, 3] = b[:, None]
    return m


def _scale3(s: torch.Tensor) -> torch.Tensor:
    m = _eye(s.shape[0], 4)
    m[:, 0, 0] = m[:, 1, 1] = m[:, 2, 2] = s
    return m


def _rotate3(axis: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Rotation by ``theta`` [n] around the unit ``axis`` (first 3 entries of a [4] vector), Rodrigues' formula."""
    a = axis[:3]
    c, s = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    cross = torch.zeros(3, 3)  # cross-product matrix: cross @ x == a x x
    cross[0, 1], cross[0, 2], cross[1, 0], cross[1, 2], cross[2, 0], cross[2, 1] = -a[2], a[1], a[2], -a[0], -a[1], a[0]
    m = _eye(theta.shape[0], 4)
    m[:, :3, :3] = torch.outer(a, a) * (1 - c) + torch.eye(3) * c + cross * s
    return m


# ----------------------------------------------------------------------------------------------------------
# Sources of random numbers.


class _TorchDraws:
    """The normal source: torch's CPU generator (``generator``, or the global one seeded by ``torch.manual_seed``)."""

    def __init__(self, generator: Optional[torch.Generator] = None):
        if generator is not None and generator.device.type != "cpu":
            raise ValueError("AugmentPipe draws its parameters on the CPU: pass a CPU torch.Generator")
        self.generator = generator

    def rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator)

    def randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator)


class ReplayDraws:
    """Hands out given numbers in place of random draws, in order (replaying a recorded forward pass).

    ``draws``: a sequence of ``(call, values)`` with call ``'rand'`` or ``'randn'``; each request must match the next
    entry's call and shape. :meth:`finished` tells whether all were used.
    """

    def __init__(self, draws: Sequence[Tuple[str, Any]]):
        self._draws = [(call, torch.as_tensor(np.asarray(v), dtype=torch.float32)) for call, v in draws]
        self._next = 0

    def _take(self, call: str, shape: Tuple[int, ...]) -> torch.Tensor:
        if self._next >= len(self._draws):
            raise RuntimeError(f"ReplayDraws: draw #{self._next} ({call} {list(shape)}) requested, "
                               f"only {len(self._draws)} given")
        want, values = self._draws[self._next]
        if want != call or tuple(values.shape) != tuple(shape):
            raise RuntimeError(f"ReplayDraws: draw #{self._next} is {want} {list(values.shape)}, "
                               f"the pipe asked for {call} {list(shape)}")
        self._next += 1
        return values.clone()

    def rand(self, *shape: int) -> torch.Tensor:
        return self._take("rand", shape)

    def randn(self, *shape: int) -> torch.Tensor:
        return self._take("randn", shape)

    def finished(self) -> bool:
        return self._next == len(self._draws)


# ----------------------------------------------------------------------------------------------------------
# Resampling helpers (the FIR conventions of upfirdn2d: zero insertion, padding, true convolution).


def _fir_up2_axis(x: torch.Tensor, taps, dim: int) -> torch.Tensor:
    """2x upsampling along ``dim``: zero insertion, then convolution with ``taps`` (true convolution, gain 2).

    Padding (K//2, K//2 - 1) keeps a symmetric filter centred (input sample i lands at 2i + 0.5). Computed in
    polyphase form as sums of shifted slices (much faster on CPU than a 1-channel conv, and no zero-stuffed tensor).
    """
    k = len(taps)
    p0 = (k + 1) // 2
    n = x.shape[dim]
    kern = [2.0 * t for t in reversed(taps)]  # correlation kernel of the true convolution, with gain 2
    phases = []
    for r in (0, 1):
        # out[2q + r] = sum_j kern[j] * z[2q + r + j - p0], z = zero-stuffed x: only even z indices are non-zero
        sel = [(kern[j], (r + j - p0) // 2) for j in range(k) if (r + j - p0) % 2 == 0]
        lo = min(o for _, o in sel)
        hi = max(o for _, o in sel)
        pad_lo, pad_hi = max(0, -lo), max(0, hi)
        xp = F.pad(x, [0, 0] * (x.ndim - 1 - dim) + [pad_lo, pad_hi]) if (pad_lo or pad_hi) else x
        out = None
        for t, o in sel:
            piece = xp.narrow(dim, o + pad_lo, n)
            out = piece * t if out is None else out.add_(piece, alpha=t)
        phases.append(out)
    y = torch.stack(phases, dim=dim + 1)
    shape = list(x.shape)
    shape[dim] = 2 * n
    return y.reshape(shape)


def _fir_down2_axis(x: torch.Tensor, taps, dim: int, pad: int) -> torch.Tensor:
    """Zero-pad (``pad`` > 0) or crop (``pad`` < 0) both ends of ``dim``, correlate with ``taps``, keep every 2nd."""
    k = len(taps)
    if pad > 0:
        x = F.pad(x, [0, 0] * (x.ndim - 1 - dim) + [pad, pad])
    elif pad < 0:
        x = x.narrow(dim, -pad, x.shape[dim] + 2 * pad)
    n_out = (x.shape[dim] - k) // 2 + 1
    idx = [slice(None)] * x.ndim
    idx[dim] = slice(None, None, 2)
    idx = tuple(idx)
    out = None
    for j, t in enumerate(taps):
        piece = x.narrow(dim, j, 2 * (n_out - 1) + 1)[idx]
        out = piece * t if out is None else out.add_(piece, alpha=t)
    return out


def _upsample2x(x: torch.Tensor, taps) -> torch.Tensor:
    """2x upsampling of [N, C, H, W] with the separable low-pass ``taps`` (a list of floats summing to 1)."""
    return _fir_up2_axis(_fir_up2_axis(x, taps, dim=3), taps, dim=2)


def _downsample2x(x: torch.Tensor, taps, crop: int) -> torch.Tensor:
    """Correlate with ``taps`` (the mirror of the upsampling filter) and keep every second sample, after cropping
    ``crop`` samples per side. Together with :func:`_upsample2x` this is the identity for an orthogonal filter."""
    pad = (len(taps) - 1) // 2 - crop
    return _fir_down2_axis(_fir_down2_axis(x, taps, dim=3, pad=pad), taps, dim=2, pad=pad)


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
    taps = _geom_taps()
    border = taps.numel() // 4  # the 2x grid reaches this many pixels past each side (cropped by the decimation)
    taps = taps.tolist()

    # Reflect margin: how far outside the image the mapped corners read, plus the filters' reach.
    cx, cy = (w - 1) / 2, (h - 1) / 2
    corners = torch.tensor([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]], dtype=torch.float32)
    reach = (G @ corners.t())[:, :2, :].permute(1, 0, 2).flatten(1)  # [xy, n * 4]
    margin = torch.cat([-reach, reach]).max(dim=1).values  # [left, top, right, bottom]
    margin = margin + torch.tensor([border * 2 - cx, border * 2 - cy] * 2, dtype=torch.float32)
    margin = margin.max(torch.zeros(4)).min(torch.tensor([w - 1, h - 1] * 2, dtype=torch.float32))
    mx0, my0, mx1, my1 = (int(v) for v in margin.ceil())

    x = F.pad(images, [mx0, mx1, my0, my1], mode="reflect")
    G = _translate2(n, (mx0 - mx1) / 2, (my0 - my1) / 2) @ G  # centre of the padded image
    x = _upsample2x(x, taps)
    G = _scale2(n, 2, 2) @ G @ _scale2(n, 1 / 2, 1 / 2)  # 2x pixel units ...
    G = _translate2(n, -0.5, -0.5) @ G @ _translate2(n, 0.5, 0.5)  # ... whose pixel centres sit half a pixel off
    hout, wout = (h + border * 2) * 2, (w + border * 2) * 2
    # normalised coordinates of grid_sample (align_corners=False) on both sides
    G = _scale2(n, 2 / x.shape[3], 2 / x.shape[2]) @ G @ _scale2(n, 1 / (2 / wout), 1 / (2 / hout))
    theta = G[:, :2, :].to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, [n, c, hout, wout], align_corners=False)
    x = grid_sample(x, grid)  # twice differentiable on every torch (R1 through the warp)
    return _downsample2x(x, taps, crop=border * 2)


@functools.lru_cache(maxsize=None)
def _imgfilter_bank() -> torch.Tensor:
    return filter_bank()


def _apply_filters(x: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
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


def _cutout_mask(size: torch.Tensor, centre: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[n, 1, h, w] float mask: 0 inside each image's rectangle (``size``/``centre`` [n, 2, 1, 1, 1], x then y)."""
    fx = (torch.arange(w).reshape(1, 1, 1, w) + 0.5) / w
    fy = (torch.arange(h).reshape(1, 1, h, 1) + 0.5) / h
    outside_x = (fx - centre[:, 0]).abs() >= size[:, 0] / 2
    outside_y = (fy - centre[:, 1]).abs() >= size[:, 1] / 2
    return torch.logical_or(outside_x, outside_y).to(torch.float32)


# ----------------------------------------------------------------------------------------------------------
# The pipeline.


class AugmentParams(NamedTuple):
    """Everything one forward pass drew (CPU, float32); None where the op group is off."""

    G_inv: Optional[torch.Tensor]  # [n, 3, 3] output -> input pixel position (any geometric op enabled)
    C: Optional[torch.Tensor]  # [n, 4, 4] colour matrix on (r, g, b, 1)
    filters: Optional[torch.Tensor]  # [n, taps] imgfilter kernels
    noise: Optional[Tuple[torch.Tensor, torch.Tensor]]  # (sigma [n, 1, 1, 1], unit noise [n, c, h, w])
    cutout: Optional[Tuple[torch.Tensor, torch.Tensor]]  # (size, centre), each [n, 2, 1, 1, 1]


class AugmentPipe(nn.Module):
    """Stochastic differentiable augmentation of [N, C, H, W] images (C = 1 or 3 for colour ops).

    ``AugmentPipe('bgc', p=0.2)``, ``AugmentPipe(AugmentConfig(...))``, ``AugmentPipe({'xflip': 1})`` or
    ``AugmentPipe(xflip=1, rotate90=1)``; keyword overrides apply on top of the preset/config. ``p`` is the buffer
    ``self.p`` (0-dim float32); set it with ``pipe.p.fill_(value)`` or :meth:`set_p`.
    """

    def __init__(self, config: ConfigLike = None, *, p: float = 0.0, **overrides: Any):
        super().__init__()
        self.config = _resolve_config(config, overrides)
        self.register_buffer("p", torch.tensor(float(p), dtype=torch.float32))

    # -- config helpers ----------------------------------------------------------------------------------

    def config_dict(self) -> Dict[str, Any]:
        """Plain dict that rebuilds this pipe with ``AugmentPipe(config_dict)`` (p lives in ``state_dict``)."""
        return self.config.to_dict()

    @classmethod
    def from_config(cls, config: Mapping[str, Any], p: float = 0.0) -> "AugmentPipe":
        return cls(AugmentConfig.from_dict(config), p=p)

    def set_p(self, value: float) -> None:
        with torch.no_grad():
            self.p.fill_(float(value))

    @property
    def enabled(self) -> bool:
        return len(self.config.enabled_ops()) > 0

    def extra_repr(self) -> str:
        ops = ", ".join(f"{k}={getattr(self.config, k):g}" for k in self.config.enabled_ops()) or "no ops"
        return f"p={float(self.p):.4f}, {ops}"

    # -- parameter sampling ------------------------------------------------------------------------------

    def sample_params(
        self,
        batch_size: int,
        height: int,
        width: int,
        num_channels: int = 3,
        *,
        generator: Optional[torch.Generator] = None,
        draws: Any = None,
        debug_percentile: Optional[float] = None,
        p: Optional[float] = None,
    ) -> AugmentParams:
        """Make all draws of one forward pass, in the official order, and turn them into :class:`AugmentParams`.

        ``draws``: the source of random numbers (default: torch's CPU generator, ``generator`` or the global one).
        ``debug_percentile``: the official deterministic mode (module docstring). ``p`` defaults to the buffer.
        """
        cfg = self.config
        n = int(batch_size)
        src = draws if draws is not None else _TorchDraws(generator)
        p = self.p.detach().to("cpu", torch.float32) if p is None else torch.tensor(float(p), dtype=torch.float32)
        d = None if debug_percentile is None else torch.tensor(float(debug_percentile), dtype=torch.float32)
        zeros, ones = torch.zeros_like, torch.ones_like

        def gated(value: torch.Tensor, prob, neutral) -> torch.Tensor:
            """``value`` where the op fires, else ``neutral``. The gate is the next draw: one per image, shaped
            like ``value`` with dim 1 of size 1."""
            u = src.rand(*(value.shape[:1] + (1,) + value.shape[2:] if value.ndim > 1 else value.shape))
            return torch.where(u < prob, value, neutral(value))

        def debug(value: torch.Tensor, fixed) -> torch.Tensor:
            """debug_percentile: ``fixed(d)`` for every image (after the op's draws)."""
            return value if d is None else torch.full_like(value, float(fixed(d)))

        def quantile(std: float):  # d -> the d-quantile of N(0, std), divided by sqrt(2) as in the official code
            return lambda q: torch.erfinv(q * 2 - 1) * std

        # ---- geometry: G_inv = G_inv @ (inverse of each content transform), first op leftmost ----
        G = _eye(n, 3) if any(getattr(cfg, k) > 0 for k in _BLIT_OPS + _GEOM_OPS) else None
        if cfg.xflip > 0:
            i = gated(torch.floor(src.rand(n) * 2), cfg.xflip * p, zeros)
            i = debug(i, lambda q: torch.floor(q * 2))
            G = G @ _scale2(n, 1 / (1 - 2 * i), 1)
        if cfg.rotate90 > 0:
            i = gated(torch.floor(src.rand(n) * 4), cfg.rotate90 * p, zeros)
            i = debug(i, lambda q: torch.floor(q * 4))
            G = G @ _rotate2(math.pi / 2 * i)  # inverse of a content turn by -90 degrees * i
        if cfg.xint > 0:
            t = gated((src.rand(n, 2) * 2 - 1) * cfg.xint_max, cfg.xint * p, zeros)  # one gate for both axes
            t = debug(t, lambda q: (q * 2 - 1) * cfg.xint_max)
            G = G @ _translate2(n, -torch.round(t[:, 0] * width), -torch.round(t[:, 1] * height))
        if cfg.scale > 0:
            s = gated(torch.exp2(src.randn(n) * cfg.scale_std), cfg.scale * p, ones)
            s = debug(s, lambda q: torch.exp2(quantile(cfg.scale_std)(q)))
            G = G @ _scale2(n, 1 / s, 1 / s)
        # rotation before and/or after aniso, each with p_rot, so that P(at least one) = rotate * p
        p_rot = 1 - torch.sqrt((1 - cfg.rotate * p).clamp(0, 1))
        if cfg.rotate > 0:
            theta = gated((src.rand(n) * 2 - 1) * math.pi * cfg.rotate_max, p_rot, zeros)
            theta = debug(theta, lambda q: (q * 2 - 1) * math.pi * cfg.rotate_max)
            G = G @ _rotate2(theta)  # inverse of a content rotation by -theta
        if cfg.aniso > 0:
            s = gated(torch.exp2(src.randn(n) * cfg.aniso_std), cfg.aniso * p, ones)
            s = debug(s, lambda q: torch.exp2(quantile(cfg.aniso_std)(q)))
            G = G @ _scale2(n, 1 / s, 1 / (1 / s))
        if cfg.rotate > 0:
            theta = gated((src.rand(n) * 2 - 1) * math.pi * cfg.rotate_max, p_rot, zeros)
            theta = debug(theta, lambda q: 0.0)  # debug mode: the first rotation only
            G = G @ _rotate2(theta)
        if cfg.xfrac > 0:
            t = gated(src.randn(n, 2) * cfg.xfrac_std, cfg.xfrac * p, zeros)
            t = debug(t, quantile(cfg.xfrac_std))
            G = G @ _translate2(n, -(t[:, 0] * width), -(t[:, 1] * height))

        # ---- colour: C = step @ C ----
        C = None
        v = torch.tensor(np.asarray([1, 1, 1, 0]) / np.sqrt(3), dtype=torch.float32)  # grey axis
        vv = torch.outer(v, v)

        def colour(step: torch.Tensor) -> None:
            nonlocal C
            C = step if C is None else step @ C

        if cfg.brightness > 0:
            b = gated(src.randn(n) * cfg.brightness_std, cfg.brightness * p, zeros)
            colour(_translate3(debug(b, quantile(cfg.brightness_std))))
        if cfg.contrast > 0:
            s = gated(torch.exp2(src.randn(n) * cfg.contrast_std), cfg.contrast * p, ones)
            colour(_scale3(debug(s, lambda q: torch.exp2(quantile(cfg.contrast_std)(q)))))
        if cfg.lumaflip > 0:
            i = gated(torch.floor(src.rand(n, 1, 1) * 2), cfg.lumaflip * p, zeros)
            i = debug(i, lambda q: torch.floor(q * 2))
            colour(torch.eye(4) - 2 * vv * i)  # Householder mirror across the plane normal to the grey axis
        if cfg.hue > 0 and num_channels > 1:
            theta = gated((src.rand(n) * 2 - 1) * math.pi * cfg.hue_max, cfg.hue * p, zeros)
            colour(_rotate3(v, debug(theta, lambda q: (q * 2 - 1) * math.pi * cfg.hue_max)))
        if cfg.saturation > 0 and num_channels > 1:
            s = gated(torch.exp2(src.randn(n, 1, 1) * cfg.saturation_std), cfg.saturation * p, ones)
            s = debug(s, lambda q: torch.exp2(quantile(cfg.saturation_std)(q)))
            colour(vv + (torch.eye(4) - vv) * s)

        # ---- image-space filter: per-band gains, each power-normalised against a 1/f spectrum ----
        filters = None
        if cfg.imgfilter > 0:
            bank = _imgfilter_bank()
            bands = bank.shape[0]
            power = torch.tensor(np.asarray([10, 1, 1, 1]) / 13, dtype=torch.float32)
            g = torch.ones(n, bands)
            for i, strength in enumerate(cfg.imgfilter_bands):
                t_i = gated(torch.exp2(src.randn(n) * cfg.imgfilter_std), cfg.imgfilter * p * strength, ones)
                if strength > 0:  # (a disabled band never fires: its gain stays 1, in debug mode too)
                    t_i = debug(t_i, lambda q: torch.exp2(quantile(cfg.imgfilter_std)(q)))
                t = torch.ones(n, bands)
                t[:, i] = t_i
                g = g * (t / (power * t.square()).sum(dim=-1, keepdim=True).sqrt())
            filters = g @ bank

        # ---- additive noise, cutout ----
        noise = None
        if cfg.noise > 0:
            sigma = gated(src.randn(n, 1, 1, 1).abs() * cfg.noise_std, cfg.noise * p, zeros)
            sigma = debug(sigma, lambda q: torch.erfinv(q) * cfg.noise_std)
            noise = (sigma, src.randn(n, num_channels, height, width))
        cutout = None
        if cfg.cutout > 0:
            size = gated(torch.full([n, 2, 1, 1, 1], cfg.cutout_size), cfg.cutout * p, zeros)  # gate drawn first
            centre = src.rand(n, 2, 1, 1, 1)
            cutout = (debug(size, lambda q: cfg.cutout_size), debug(centre, lambda q: q))
        return AugmentParams(G, C, filters, noise, cutout)

    # -- application -------------------------------------------------------------------------------------

    def forward(
        self,
        images: torch.Tensor,
        generator: Optional[torch.Generator] = None,
        debug_percentile: Optional[float] = None,
        draws: Any = None,
    ) -> torch.Tensor:
        """Augment ``images`` [N, C, H, W]. ``generator``: a CPU generator for the draws (default: the global one);
        ``draws``: another source (e.g. :class:`ReplayDraws`); ``debug_percentile``: the official debug mode."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise ValueError(f"expected images [N, C, H, W], got {getattr(images, 'shape', type(images))}")
        n, c, h, w = images.shape
        if any(getattr(self.config, k) > 0 for k in _COLOR_OPS) and c not in (1, 3):
            raise ValueError(f"colour augmentations need 1 or 3 channels, got {c}")
        if not self.enabled or n == 0:
            return images
        prm = self.sample_params(n, h, w, c, generator=generator, draws=draws, debug_percentile=debug_percentile)
        x = images
        if prm.G_inv is not None:
            x = affine_warp(x, prm.G_inv)
        if prm.C is not None:
            x = self._apply_color(x, prm.C)
        if prm.filters is not None:
            x = _apply_filters(x, prm.filters)
        if prm.noise is not None:
            sigma, unit = prm.noise
            x = x + unit.to(device=x.device, dtype=x.dtype) * sigma.to(device=x.device, dtype=x.dtype)
        if prm.cutout is not None:
            x = x * _cutout_mask(*prm.cutout, h, w).to(device=x.device, dtype=x.dtype)
        return x

    @staticmethod
    def _apply_color(x: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        C = C.to(dtype=x.dtype, device=x.device)
        flat = x.reshape(n, c, h * w)
        if c == 3:
            y = C[:, :3, :3] @ flat + C[:, :3, 3:]
        else:  # grey: (l, l, l) -> C -> mean of the three outputs
            row = C[:, :3, :].mean(dim=1, keepdim=True)  # [n, 1, 4]
            y = flat * row[:, :, :3].sum(dim=2, keepdim=True) + row[:, :, 3:]
        return y.reshape(n, c, h, w)


# ----------------------------------------------------------------------------------------------------------
# Adaptive p.


class AdaptiveP:
    """The ADA controller: tunes ``p`` so that the overfitting heuristic ``r_t = E[sign(D(real))]`` tracks ``target``.

    Usage in a training loop::

        ada = AdaptiveP(pipe, target=0.6, interval=4, ada_kimg=500)
        ...
        real_logits = D(pipe(real_images))
        ada.accumulate(real_logits)          # every D step that sees reals
        ...
        ada.step(batch_size)                 # once per training iteration (after the optimiser steps)

    Every ``interval`` calls of :meth:`step`, ``r_t`` becomes the mean sign accumulated since the last adjustment
    and ``p += sign(r_t - target) * images / (ada_kimg * 1000)`` in float32 (``images`` = sum of ``batch_size``
    over those calls, = batch * interval for a constant batch), clamped to ``>= 0``. An interval without
    accumulated signs leaves ``p`` unchanged. The new ``p`` is written into ``pipe.p`` when a pipe is attached.
    ``state_dict`` holds plain numbers, including the partial interval, so a resumed run continues exactly.

    For multi-process training reduce the accumulators across ranks before :meth:`step`
    (see :meth:`pending`/:meth:`set_pending`), or feed every rank's logits to one controller.
    """

    def __init__(
        self,
        pipe: Optional[AugmentPipe] = None,
        target: float = 0.6,
        interval: int = 4,
        ada_kimg: float = 500.0,
        p: Optional[float] = None,
    ):
        if interval < 1:
            raise ValueError("interval must be >= 1")
        if ada_kimg <= 0:
            raise ValueError("ada_kimg must be > 0")
        self.pipe = pipe
        self.target = float(target)
        self.interval = int(interval)
        self.ada_kimg = float(ada_kimg)
        if p is None:
            p = float(pipe.p) if pipe is not None else 0.0
        self._p = max(float(p), 0.0)
        self._sign_sum: Union[float, torch.Tensor] = 0.0  # tensor while accumulating (no device sync per batch)
        self._sign_count = 0
        self._steps = 0  # steps since the last adjustment
        self._images = 0  # images since the last adjustment
        self.r_t: Optional[float] = None  # last measured heuristic (None before the first adjustment)
        self.num_adjustments = 0
        self._push()

    # -- accessors ---------------------------------------------------------------------------------------

    @property
    def p(self) -> float:
        return self._p

    @p.setter
    def p(self, value: float) -> None:
        self._p = max(float(value), 0.0)
        self._push()

    def _push(self) -> None:
        if self.pipe is not None:
            self.pipe.set_p(self._p)

    def adjustment_size(self, images: int) -> float:
        return images / (self.ada_kimg * 1000.0)

    # -- accumulation --------------------------------------------------------------------------------------

    def accumulate(self, real_logits: torch.Tensor) -> None:
        """Add ``sign(real_logits)`` (any shape; one entry per real image) to the running interval."""
        s = torch.sign(real_logits.detach().float()).sum()
        self._sign_sum = self._sign_sum + s
        self._sign_count += int(real_logits.numel())

    def pending(self) -> Tuple[float, int]:
        """(sum of signs, number of logits) accumulated in the current interval."""
        return float(self._sign_sum), self._sign_count

    def set_pending(self, sign_sum: float, count: int) -> None:
        """Overwrite the accumulators (e.g. with values all-reduced across processes)."""
        self._sign_sum = float(sign_sum)
        self._sign_count = int(count)

    def step(self, batch_size: int) -> bool:
        """Count one training iteration of ``batch_size`` images; adjust p at interval boundaries.

        Returns True when p was adjusted on this call.
        """
        self._steps += 1
        self._images += int(batch_size)
        if self._steps < self.interval:
            return False
        adjusted = False
        if self._sign_count > 0:
            r_t = float(self._sign_sum) / self._sign_count
            self.r_t = r_t
            direction = (r_t > self.target) - (r_t < self.target)
            adjust = direction * self.adjustment_size(self._images)
            # in float32, as the official loop adds to the pipe's float32 buffer (no upper clamp)
            self._p = float((torch.tensor(self._p, dtype=torch.float32) + adjust).clamp(min=0))
            self.num_adjustments += 1
            adjusted = True
            self._push()
        self._sign_sum = 0.0
        self._sign_count = 0
        self._steps = 0
        self._images = 0
        return adjusted

    # -- state ---------------------------------------------------------------------------------------------

    def state_dict(self) -> Dict[str, Any]:
        return {
            "p": self._p,
            "target": self.target,
            "interval": self.interval,
            "ada_kimg": self.ada_kimg,
            "sign_sum": float(self._sign_sum),
            "sign_count": self._sign_count,
            "steps": self._steps,
            "images": self._images,
            "r_t": self.r_t,
            "num_adjustments": self.num_adjustments,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.target = float(state["target"])
        self.interval = int(state["interval"])
        self.ada_kimg = float(state["ada_kimg"])
        self._sign_sum = float(state["sign_sum"])
        self._sign_count = int(state["sign_count"])
        self._steps = int(state["steps"])
        self._images = int(state["images"])
        self.r_t = None if state.get("r_t") is None else float(state["r_t"])
        self.num_adjustments = int(state.get("num_adjustments", 0))
        self.p = float(state["p"])

    def __repr__(self) -> str:
        r = "None" if self.r_t is None else f"{self.r_t:.3f}"
        return (
            f"AdaptiveP(p={self._p:.4f}, r_t={r}, target={self.target}, interval={self.interval}, "
            f"ada_kimg={self.ada_kimg:g})"
        )


# ----------------------------------------------------------------------------------------------------------
# Factory for the three modes.


def make_augment(
    aug: str = "ada",
    augpipe: Union[str, Mapping[str, Any], AugmentConfig] = "bgc",
    p: Optional[float] = None,
    target: float = 0.6,
    interval: int = 4,
    ada_kimg: float = 500.0,
) -> Tuple[Optional[AugmentPipe], Optional[AdaptiveP]]:
    """Build the augmentation for a training run.

    * ``aug='ada'``: pipe + :class:`AdaptiveP`; p starts at ``p`` (default 0).
    * ``aug='fixed'``: pipe with constant ``p`` (required), no controller.
    * ``aug='noaug'`` (or ``augpipe='noaug'``): ``(None, None)``.
    """
    if aug not in ("ada", "fixed", "noaug"):
        raise ValueError(f"aug must be 'ada', 'fixed' or 'noaug', got {aug!r}")
    if aug == "noaug" or (isinstance(augpipe, str) and augpipe == "noaug"):
        return None, None
    if aug == "fixed":
        if p is None:
            raise ValueError("aug='fixed' needs p")
        return AugmentPipe(augpipe, p=p), None
    pipe = AugmentPipe(augpipe, p=0.0 if p is None else p)
    return pipe, AdaptiveP(pipe, target=target, interval=interval, ada_kimg=ada_kimg)
