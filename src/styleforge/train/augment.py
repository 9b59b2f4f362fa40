"""Adaptive discriminator augmentation (ADA): a differentiable, stochastic augmentation pipeline and its p controller.

This is a clean-room implementation of the augmentation scheme of Karras et al. 2020, "Training Generative
Adversarial Networks with Limited Data" (appendix B), in plain PyTorch (no torchvision, no compiled ops).

What the pipeline does
----------------------
Every image shown to the discriminator (reals *and* fakes) goes through :class:`AugmentPipe`. Each operation of the
configured set fires independently per sample with probability ``p * multiplier``; ``p`` is a 0-dim float buffer
(so it lives in ``state_dict`` and follows ``.to(device)``) and the multipliers come from a plain-data
:class:`AugmentConfig`. Because each op is skipped with a positive probability, the augmented distribution still
determines the clean one ("non-leaking") as long as ``p`` stays below roughly 0.8.

The 'bgc' set, in the order the image content sees it:

* pixel blitting - ``xflip`` (mirror left-right), ``rotate90`` (0/90/180/270 degrees), ``xint`` (integer
  translation, uniform within +-``xint_max`` of the image size);
* general geometry - ``scale`` (isotropic, ``2**N(0, scale_std)``), ``rotate`` (uniform angle within
  +-``rotate_max`` half-turns, applied as a rotation before *and/or* after the anisotropic scaling, each with
  probability ``1 - sqrt(1 - rotate*p)`` so that "at least one" has probability ``rotate*p``), ``aniso``
  (``diag(s, 1/s)``, ``s = 2**N(0, aniso_std)``), ``xfrac`` (sub-pixel translation, ``N(0, xfrac_std)`` of the size);
* colour - ``brightness`` (add ``N(0, brightness_std)``), ``contrast`` (multiply by ``2**N(0, contrast_std)``),
  ``lumaflip`` (mirror the colour along the grey axis), ``hue`` (rotate around the grey axis, uniform within
  +-``hue_max`` half-turns), ``saturation`` (scale the distance from the grey axis by ``2**N(0, saturation_std)``).

For the two ops with a discrete choice (flips) the choice includes "do nothing": ``xflip`` mirrors half of the
samples it fires on and ``rotate90`` picks one of the four quarter turns, 0 included. So with ``p = 1`` an ``xflip``
pipe mirrors ~50 % of the batch, as in the paper.

Images are expected in the StyleGAN range ``[-1, 1]`` (grey 0 is the centre of brightness/contrast).

How it is computed
------------------
*Geometry.* All geometric draws of a sample are composed into one 3x3 homogeneous matrix that maps an output pixel
position (pixel units, origin at the image centre, x right, y down) to the input position it must be read from.
Samples are then split three ways:

1. identity matrix  -> the sample is passed through untouched (bit-exact, so ``p = 0`` is an exact identity);
2. integer matrix (flips, quarter turns, whole-pixel shifts only) -> an exact gather of pixels, with
   mirror ("reflect") indexing outside the image;
3. anything else -> the filtered warp below.

The filtered warp follows the quality recipe of the paper: reflect-pad the image far enough that the warped frame
plus the filter supports stay inside it, upsample 2x with a high-quality low-pass filter (the 12-tap orthogonal
symlet-6 wavelet low-pass), resample the transform with ``grid_sample`` (bilinear by default, bicubic optional) on a
slightly enlarged 2x output grid, and low-pass + decimate back with the mirrored filter, cropping the border.
Because the symlet is orthogonal, "upsample then downsample" is an exact identity, so translations by whole pixels
and other grid-aligned transforms do not blur. The filter is not symmetric, so the upsampled content sits about
half a 2x-pixel off-centre; the warp is conjugated with that shift (``SYM6_DELAY``) so rotations and scalings pivot
around the true image centre (exact quarter turns through this path match ``torch.rot90`` to ~0.015 RMS; the rest
is the symlet's non-linear phase). Where a transform would need more border than one reflection can give (extreme
zoom-out), ``grid_sample`` continues with reflection instead of filling zeros. ``AugmentConfig(geom_filter='none')``
skips the 2x over-sampling (faster, more aliasing).

*Colour.* All colour draws are composed into one 4x4 homogeneous matrix acting on ``(r, g, b, 1)``. Grey-scale
images are treated as ``(l, l, l)``, transformed, and averaged back to one channel; hue and saturation do nothing
on them. Other channel counts are rejected when a colour op is enabled.

Every step (padding, filtering, ``grid_sample``, gathers, the colour matmul) is differentiable w.r.t. the images,
including double backward (R1 through the augmentation).

Randomness
----------
All random parameters are drawn on the CPU in float64, from ``generator`` when given (a CPU ``torch.Generator``) or
from the global CPU RNG (``torch.manual_seed``). The same seed therefore gives the same augmentation on any device.
Each enabled op always consumes its random numbers, whatever ``p`` is, so changing ``p`` does not reshuffle the
draws of the other ops.

Controller
----------
:class:`AdaptiveP` implements the ADA heuristic: accumulate ``sign(D(real))`` over the discriminator's real batches;
every ``interval`` training steps set ``r_t`` to their mean and move ``p`` by
``sign(r_t - target) * images_in_interval / (ada_kimg * 1000)``, never below 0. With a constant batch size the step
is ``batch * interval / (ada_kimg * 1000)``, the paper's "p can go from 0 to 1 in ada_kimg thousand images".

Modes: :func:`make_augment` builds ``'ada'`` (pipe + controller, p starts at 0), ``'fixed'`` (pipe with a constant
p) and ``'noaug'`` (nothing).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "AUGPIPE_PRESETS",
    "AugmentConfig",
    "AugmentPipe",
    "AdaptiveP",
    "make_augment",
    "affine_warp",
    "SYM6_LOWPASS",
]

# ----------------------------------------------------------------------------------------------------------
# Constants.

# Symlet-6 ("least asymmetric" Daubechies wavelet with 6 vanishing moments) decomposition low-pass filter, the
# standard tabulated values (e.g. PyWavelets' ``Wavelet('sym6').dec_lo``). Orthogonal: sum f[k] f[k+2n] = delta(n),
# sum f = sqrt(2). tests/test_augment.py checks these properties.
SYM6_LOWPASS = (
    0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
    0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
    -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148,
)

# Delay of the 2x upsampler built from SYM6_LOWPASS, in 2x-grid pixels, relative to a symmetric filter of the same
# length (the sign: content lands this much *before* where a symmetric filter would put it). The symlet is not
# linear-phase: its group delay is -0.40 at DC and -0.5 to -0.9 across the rest of the 2x passband. -0.5 is what
# makes exact 90/180-degree turns through the filtered warp closest to torch.rot90 on natural images (scan over
# -0.40...-0.70 on five skimage photos at 64 and 128 px: RMS error minimal at -0.5, 0.014 in [-1, 1] units).
SYM6_DELAY = -0.5

_GEOM_FILTERS = {"sym6": (SYM6_LOWPASS, SYM6_DELAY), "none": None}
_INTERPOLATIONS = ("bilinear", "bicubic")

_BLIT_OPS = ("xflip", "rotate90", "xint")
_GEOM_OPS = ("scale", "rotate", "aniso", "xfrac")
_COLOR_OPS = ("brightness", "contrast", "lumaflip", "hue", "saturation")
OPS = _BLIT_OPS + _GEOM_OPS + _COLOR_OPS

# Named op sets: probability multipliers (1 = enabled). 'noaug' enables nothing.
AUGPIPE_PRESETS: Dict[str, Dict[str, float]] = {
    "noaug": {},
    "blit": {k: 1.0 for k in _BLIT_OPS},
    "geom": {k: 1.0 for k in _GEOM_OPS},
    "color": {k: 1.0 for k in _COLOR_OPS},
    "bg": {k: 1.0 for k in _BLIT_OPS + _GEOM_OPS},
    "bgc": {k: 1.0 for k in _BLIT_OPS + _GEOM_OPS + _COLOR_OPS},
}


# ----------------------------------------------------------------------------------------------------------
# Config.


@dataclass
class AugmentConfig:
    """Plain-data description of an :class:`AugmentPipe` (JSON-able via :meth:`to_dict`).

    Op fields are probability multipliers (0 disables the op; the firing probability is ``p * multiplier``). The
    ``*_max`` / ``*_std`` fields are magnitudes with the paper's defaults. Names match the official AugmentPipe
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
    # Implementation of the geometric warp.
    geom_filter: str = "sym6"  # 'sym6' = 2x over-sampling with the symlet low-pass; 'none' = direct grid_sample
    interpolation: str = "bilinear"  # grid_sample mode: 'bilinear' or 'bicubic'

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            if f.name in ("geom_filter", "interpolation"):
                continue
            v = getattr(self, f.name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise ValueError(f"AugmentConfig.{f.name} must be a finite number >= 0, got {v!r}")
        if self.geom_filter not in _GEOM_FILTERS:
            raise ValueError(
                f"AugmentConfig.geom_filter must be one of {sorted(_GEOM_FILTERS)}, got {self.geom_filter!r}"
            )
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(
                f"AugmentConfig.interpolation must be one of {_INTERPOLATIONS}, got {self.interpolation!r}"
            )

    def __post_init__(self):
        for f in dataclasses.fields(self):
            if f.name not in ("geom_filter", "interpolation"):
                v = getattr(self, f.name)
                if isinstance(v, int) and not isinstance(v, bool):
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
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"AugmentConfig: unknown settings {sorted(unknown)}")
        return cls(**dict(d))

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "AugmentConfig":
        if name not in AUGPIPE_PRESETS:
            raise KeyError(f"unknown augment preset {name!r}; expected one of {sorted(AUGPIPE_PRESETS)}")
        return cls.from_dict({**AUGPIPE_PRESETS[name], **overrides})

    @classmethod
    def from_official_kwargs(cls, kwargs: Mapping[str, Any]) -> "AugmentConfig":
        """Convert the ``init_kwargs`` of an official AugmentPipe. Ops we do not implement (imgfilter, noise,
        cutout) are accepted only when disabled; their magnitude settings are ignored."""
        ours = {f.name for f in dataclasses.fields(cls)} - {"geom_filter", "interpolation"}
        unsupported_ops = ("imgfilter", "noise", "cutout")
        ignored = {"imgfilter_bands", "imgfilter_std", "noise_std", "cutout_size"}
        d = {}
        for k, v in kwargs.items():
            if k in ours:
                d[k] = float(v)
            elif k in unsupported_ops:
                if float(v) != 0:
                    raise ValueError(f"augment op {k!r} is not implemented by styleforge (multiplier {v})")
            elif k not in ignored:
                raise ValueError(f"unknown official augment setting {k!r}")
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
# Batched homogeneous matrices (float64, CPU). Shapes [n, 3, 3] (2-D) and [n, 4, 4] (colour).


def _eye(n: int, k: int) -> torch.Tensor:
    return torch.eye(k, dtype=torch.float64).repeat(n, 1, 1)


def _translate2(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    m = _eye(tx.shape[0], 3)
    m[:, 0, 2] = tx
    m[:, 1, 2] = ty
    return m


def _scale2(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    m = _eye(sx.shape[0], 3)
    m[:, 0, 0] = sx
    m[:, 1, 1] = sy
    return m


def _rotate2(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    m = _eye(cos.shape[0], 3)
    m[:, 0, 0] = cos
    m[:, 0, 1] = -sin
    m[:, 1, 0] = sin
    m[:, 1, 1] = cos
    return m


# ----------------------------------------------------------------------------------------------------------
# Random draws.


class _Draws:
    """Source of the per-sample random numbers.

    Normal mode draws from ``generator`` (or the global CPU RNG). ``percentile`` mode replaces every draw by a fixed
    quantile ``q`` of its distribution and makes every enabled op fire: used for illustrations and debugging.
    """

    def __init__(self, n: int, generator: Optional[torch.Generator], percentile: Optional[float]):
        self.n = n
        self.g = generator
        self.q = None if percentile is None else min(max(float(percentile), 1e-6), 1.0 - 1e-6)

    def uniform(self, *shape: int) -> torch.Tensor:
        if self.q is not None:
            return torch.full((self.n, *shape), self.q, dtype=torch.float64)
        return torch.rand((self.n, *shape), generator=self.g, dtype=torch.float64)

    def normal(self, *shape: int) -> torch.Tensor:
        if self.q is not None:
            z = math.sqrt(2.0) * torch.erfinv(torch.tensor(2.0 * self.q - 1.0, dtype=torch.float64))
            return torch.full((self.n, *shape), float(z), dtype=torch.float64)
        return torch.randn((self.n, *shape), generator=self.g, dtype=torch.float64)

    def choice(self, k: int) -> torch.Tensor:
        """Uniform integer in [0, k)."""
        return (self.uniform() * k).floor().clamp_(max=k - 1).long()

    def fires(self, prob: float) -> torch.Tensor:
        """Bernoulli(prob) per sample (always True in percentile mode)."""
        if self.q is not None:
            return torch.ones(self.n, dtype=torch.bool)
        return torch.rand(self.n, generator=self.g, dtype=torch.float64) < prob


# ----------------------------------------------------------------------------------------------------------
# Resampling helpers.


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


def _reflect_index(i: torch.Tensor, n: int) -> torch.Tensor:
    """Mirror integer indices into [0, n) like ``F.pad(mode='reflect')`` (edge pixel not repeated), any distance."""
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = torch.remainder(i, period)
    return torch.where(i >= n, period - i, i)


def _blit(x: torch.Tensor, lin: torch.Tensor, off: torch.Tensor) -> torch.Tensor:
    """Exact pixel gather: output pixel (row i, col j) reads input (row, col) = lin @ (j, i) + off, mirrored at borders.

    ``lin`` [n,2,2] and ``off`` [n,2] are integer tensors, rows ordered (x, y).
    """
    n, c, h, w = x.shape
    dev = x.device
    lin = lin.to(dev)
    off = off.to(dev)
    jj = torch.arange(w, device=dev).view(1, 1, w)
    ii = torch.arange(h, device=dev).view(1, h, 1)
    sx = lin[:, 0, 0].view(n, 1, 1) * jj + lin[:, 0, 1].view(n, 1, 1) * ii + off[:, 0].view(n, 1, 1)
    sy = lin[:, 1, 0].view(n, 1, 1) * jj + lin[:, 1, 1].view(n, 1, 1) * ii + off[:, 1].view(n, 1, 1)
    flat = _reflect_index(sy, h) * w + _reflect_index(sx, w)  # [n, h, w]
    flat = flat.reshape(n, 1, h * w).expand(n, c, h * w)
    return x.reshape(n, c, h * w).gather(2, flat).reshape(n, c, h, w)


def affine_warp(
    images: torch.Tensor,
    inv_matrix: torch.Tensor,
    *,
    geom_filter: str = "sym6",
    interpolation: str = "bilinear",
) -> torch.Tensor:
    """Resample ``images`` [n,c,h,w] through per-sample 3x3 matrices with the filtered warp (no exact shortcuts).

    ``inv_matrix`` [n,3,3] maps an output pixel position to the input position it reads, in pixel units with the
    origin at the image centre (x right, y down). See the module docstring for the method.
    """
    if images.ndim != 4:
        raise ValueError(f"expected images [N, C, H, W], got shape {tuple(images.shape)}")
    if geom_filter not in _GEOM_FILTERS:
        raise ValueError(f"geom_filter must be one of {sorted(_GEOM_FILTERS)}, got {geom_filter!r}")
    n, c, h, w = images.shape
    G = inv_matrix.detach().to(dtype=torch.float64, device="cpu")
    spec = _GEOM_FILTERS[geom_filter]
    taps, delay = None, 0.0
    if spec is not None:
        total = math.fsum(spec[0])
        taps = [t / total for t in spec[0]]
        delay = spec[1]
    interp_support = 2 if interpolation == "bicubic" else 1  # input pixels the kernel reaches past a sample point

    if taps is not None:
        k = len(taps)
        m = k // 4  # output border (output pixels) so the decimation filter sees valid samples
        support = math.ceil(k / 4) + 1  # upsampling-filter + interpolation reach, in input pixels
    else:
        m = 0
        support = interp_support

    # Border needed around the input: where do the (enlarged) output corners land?
    cx, cy = (w - 1) / 2, (h - 1) / 2
    corners = torch.tensor(
        [[-cx - m, -cy - m, 1.0], [cx + m, -cy - m, 1.0], [cx + m, cy + m, 1.0], [-cx - m, cy + m, 1.0]],
        dtype=torch.float64,
    )
    pts = G @ corners.T  # [n, 3, 4]
    px, py = pts[:, 0, :], pts[:, 1, :]
    need = [
        float(-px.min()) - cx,  # left
        float(px.max()) - cx,  # right
        float(-py.min()) - cy,  # top
        float(py.max()) - cy,  # bottom
    ]
    lim = [w - 1, w - 1, h - 1, h - 1]  # one reflection at most; grid_sample reflects further if needed
    mx0, mx1, my0, my1 = [int(min(max(math.ceil(v + support - 1e-9), 0), L)) for v, L in zip(need, lim)]
    x = images
    if mx0 or mx1 or my0 or my1:
        x = F.pad(x, [mx0, mx1, my0, my1], mode="reflect")
    hp, wp = h + my0 + my1, w + mx0 + mx1
    pad_shift = _translate2(torch.tensor([(mx0 - mx1) / 2]), torch.tensor([(my0 - my1) / 2]))

    def scale(sx, sy):
        return _scale2(torch.tensor([float(sx)]), torch.tensor([float(sy)]))

    if taps is not None:
        x = _upsample2x(x, taps)
        hin, win = 2 * hp, 2 * wp
        hout, wout = 2 * (h + 2 * m), 2 * (w + 2 * m)
        d = delay  # conjugate the warp with the filter delay so it pivots on the true centre
        shift = _translate2(torch.tensor([d]), torch.tensor([d]))
        unshift = _translate2(torch.tensor([-d]), torch.tensor([-d]))
        # output-grid normalised -> 2x output px -> output px -> input px -> padded px -> 2x padded px -> normalised
        M = scale(2 / win, 2 / hin) @ shift @ scale(2, 2) @ pad_shift @ G
        M = M @ scale(0.5, 0.5) @ unshift @ scale(wout / 2, hout / 2)
    else:
        hin, win, hout, wout = hp, wp, h, w
        M = scale(2 / win, 2 / hin) @ pad_shift @ G @ scale(wout / 2, hout / 2)

    # Sampling grid (what F.affine_grid(align_corners=False) builds), by broadcasting instead of a batched matmul.
    theta = M[:, :2, :].to(dtype=x.dtype, device=x.device)
    gx = (torch.arange(wout, dtype=x.dtype, device=x.device) * 2 + 1) / wout - 1
    gy = (torch.arange(hout, dtype=x.dtype, device=x.device) * 2 + 1) / hout - 1
    gx, gy = gx.view(1, 1, wout), gy.view(1, hout, 1)
    t = theta.view(n, 2, 3, 1, 1)
    sx = t[:, 0, 0] * gx + t[:, 0, 1] * gy + t[:, 0, 2]
    sy = t[:, 1, 0] * gx + t[:, 1, 1] * gy + t[:, 1, 2]
    grid = torch.stack([sx, sy], dim=3)
    y = F.grid_sample(x, grid, mode=interpolation, padding_mode="reflection", align_corners=False)
    if taps is not None:
        y = _downsample2x(y, taps, crop=2 * m)
    return y


# ----------------------------------------------------------------------------------------------------------
# The pipeline.


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
        cfg = self.config
        return f"p={float(self.p):.4f}, {ops}, geom_filter={cfg.geom_filter}, interpolation={cfg.interpolation}"

    # -- parameter sampling ------------------------------------------------------------------------------

    def sample_transforms(
        self,
        batch_size: int,
        height: int,
        width: int,
        num_channels: int = 3,
        generator: Optional[torch.Generator] = None,
        percentile: Optional[float] = None,
        p: Optional[float] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Draw the per-sample transforms: ``(G_inv [n,3,3], C [n,4,4])`` in float64 on the CPU.

        ``G_inv`` maps output pixel positions to input positions (centred pixel units, x right, y down); ``C`` maps
        homogeneous colours ``(r, g, b, 1)`` to the output colour. ``p`` defaults to the buffer value.
        """
        if generator is not None and generator.device.type != "cpu":
            raise ValueError("AugmentPipe draws its parameters on the CPU: pass a CPU torch.Generator")
        cfg = self.config
        n = int(batch_size)
        pv = float(self.p) if p is None else float(p)
        rnd = _Draws(n, generator, percentile)

        # ---- geometry: G_inv = F1^-1 F2^-1 ... Fk^-1 for content transforms F1 (first) ... Fk (last) ----
        G = _eye(n, 3)

        if cfg.xflip > 0:
            flip = rnd.choice(2)
            on = rnd.fires(cfg.xflip * pv)
            sx = torch.where(on & (flip == 1), -1.0, 1.0).double()
            G = G @ _scale2(sx, torch.ones(n, dtype=torch.float64))  # a flip is its own inverse

        if cfg.rotate90 > 0:
            quarter = rnd.choice(4)
            on = rnd.fires(cfg.rotate90 * pv)
            quarter = torch.where(on, quarter, torch.zeros_like(quarter))
            # inverse of a rotation by quarter*90 degrees, with exact integer cos/sin
            cos_t = torch.tensor([1.0, 0.0, -1.0, 0.0], dtype=torch.float64)[quarter]
            sin_t = torch.tensor([0.0, 1.0, 0.0, -1.0], dtype=torch.float64)[quarter]
            G = G @ _rotate2(cos_t, -sin_t)

        if cfg.xint > 0:
            t = (rnd.uniform(2) * 2 - 1) * cfg.xint_max
            on = rnd.fires(cfg.xint * pv)
            t = torch.where(on[:, None], t, torch.zeros_like(t))
            tx, ty = torch.round(t[:, 0] * width), torch.round(t[:, 1] * height)
            G = G @ _translate2(-tx, -ty)

        if cfg.scale > 0:
            s = torch.exp2(rnd.normal() * cfg.scale_std)
            on = rnd.fires(cfg.scale * pv)
            s = torch.where(on, s, torch.ones_like(s))
            G = G @ _scale2(1 / s, 1 / s)

        # The rotation may happen before and/or after the anisotropic scaling; each with p_rot so that
        # P(at least one) = rotate * p.
        p_rot = 1.0 - math.sqrt(min(max(1.0 - cfg.rotate * pv, 0.0), 1.0))
        if cfg.rotate > 0:
            theta = (rnd.uniform() * 2 - 1) * math.pi * cfg.rotate_max
            on = rnd.fires(p_rot)
            theta = torch.where(on, theta, torch.zeros_like(theta))
            G = G @ _rotate2(torch.cos(theta), -torch.sin(theta))

        if cfg.aniso > 0:
            s = torch.exp2(rnd.normal() * cfg.aniso_std)
            on = rnd.fires(cfg.aniso * pv)
            s = torch.where(on, s, torch.ones_like(s))
            G = G @ _scale2(1 / s, s)

        if cfg.rotate > 0:
            theta = (rnd.uniform() * 2 - 1) * math.pi * cfg.rotate_max
            on = rnd.fires(p_rot)
            theta = torch.where(on, theta, torch.zeros_like(theta))
            if percentile is not None:
                theta = torch.zeros_like(theta)  # one rotation is enough for an illustration
            G = G @ _rotate2(torch.cos(theta), -torch.sin(theta))

        if cfg.xfrac > 0:
            t = rnd.normal(2) * cfg.xfrac_std
            on = rnd.fires(cfg.xfrac * pv)
            t = torch.where(on[:, None], t, torch.zeros_like(t))
            G = G @ _translate2(-t[:, 0] * width, -t[:, 1] * height)

        # ---- colour: C = Ck ... C2 C1 (brightness first, saturation last) ----
        C = _eye(n, 4)
        v = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=torch.float64) / math.sqrt(3.0)  # grey axis
        vvT = torch.outer(v, v)

        if cfg.brightness > 0:
            b = rnd.normal() * cfg.brightness_std
            on = rnd.fires(cfg.brightness * pv)
            b = torch.where(on, b, torch.zeros_like(b))
            T = _eye(n, 4)
            T[:, :3, 3] = b[:, None]
            C = T @ C

        if cfg.contrast > 0:
            s = torch.exp2(rnd.normal() * cfg.contrast_std)
            on = rnd.fires(cfg.contrast * pv)
            s = torch.where(on, s, torch.ones_like(s))
            S = _eye(n, 4)
            S[:, 0, 0] = S[:, 1, 1] = S[:, 2, 2] = s
            C = S @ C

        if cfg.lumaflip > 0:
            flip = rnd.choice(2)
            on = rnd.fires(cfg.lumaflip * pv)
            f = (on & (flip == 1)).double()
            C = (_eye(n, 4) - 2 * f[:, None, None] * vvT) @ C  # Householder mirror across the plane normal to v

        if cfg.hue > 0:
            theta = (rnd.uniform() * 2 - 1) * math.pi * cfg.hue_max
            on = rnd.fires(cfg.hue * pv)
            theta = torch.where(on, theta, torch.zeros_like(theta))
            if num_channels > 1:
                ct, st = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
                K = torch.zeros(4, 4, dtype=torch.float64)  # cross-product matrix of v
                K[0, 1], K[0, 2], K[1, 0], K[1, 2], K[2, 0], K[2, 1] = -v[2], v[1], v[2], -v[0], -v[1], v[0]
                R = ct * torch.eye(4, dtype=torch.float64) + st * K + (1 - ct) * vvT  # Rodrigues
                R[:, 3, :] = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
                R[:, :3, 3] = 0.0
                C = R @ C

        if cfg.saturation > 0:
            s = torch.exp2(rnd.normal() * cfg.saturation_std)
            on = rnd.fires(cfg.saturation * pv)
            s = torch.where(on, s, torch.ones_like(s))
            if num_channels > 1:
                P = torch.eye(4, dtype=torch.float64) - vvT  # projector onto the chroma plane (+ the homogeneous 1)
                P[3, 3] = 0.0
                Sm = vvT + s[:, None, None] * P
                Sm[:, 3, 3] = 1.0
                Sm = torch.where(on[:, None, None], Sm, torch.eye(4, dtype=torch.float64))  # exact identity if off
                C = Sm @ C

        return G, C

    # -- application -------------------------------------------------------------------------------------

    def forward(
        self,
        images: torch.Tensor,
        generator: Optional[torch.Generator] = None,
        percentile: Optional[float] = None,
    ) -> torch.Tensor:
        """Augment ``images`` [N, C, H, W]. ``generator``: optional CPU generator for the draws. ``percentile``:
        debug/illustration mode, every enabled op fires with its parameter at that quantile."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise ValueError(f"expected images [N, C, H, W], got {getattr(images, 'shape', type(images))}")
        n, c, h, w = images.shape
        cfg = self.config
        color_on = any(getattr(cfg, k) > 0 for k in _COLOR_OPS)
        if color_on and c not in (1, 3):
            raise ValueError(f"colour augmentations need 1 or 3 channels, got {c}")
        if not self.enabled or n == 0:
            return images
        G, C = self.sample_transforms(n, h, w, c, generator=generator, percentile=percentile)

        x = images
        # ---- geometry ----
        if any(getattr(cfg, k) > 0 for k in _BLIT_OPS + _GEOM_OPS):
            x = self._apply_geometry(x, G)
        # ---- colour ----
        eye4 = torch.eye(4, dtype=torch.float64)
        nonid = ~(C == eye4).flatten(1).all(dim=1)
        if color_on and bool(nonid.any()):
            x = self._apply_color(x, C)
        return x

    def _apply_geometry(self, x: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        eye3 = torch.eye(3, dtype=torch.float64)
        identity = (G == eye3).flatten(1).all(dim=1)
        if bool(identity.all()):
            return x
        # Integer transforms (flips, quarter turns, whole-pixel shifts) become exact gathers.
        lin = G[:, :2, :2]
        cxy = torch.tensor([(w - 1) / 2, (h - 1) / 2], dtype=torch.float64)
        off = G[:, :2, 2] + cxy - (lin @ cxy[:, None])[:, :, 0]  # input index of output pixel (0, 0)
        tol = 1e-9
        lin_r, off_r = lin.round(), off.round()
        integer = ((lin - lin_r).abs() < tol).flatten(1).all(1) & ((off - off_r).abs() < tol).all(1)
        integer = integer & ~identity
        general = ~identity & ~integer

        out = x
        idx = integer.nonzero().flatten()
        if idx.numel() > 0:
            dev_idx = idx.to(x.device)
            y = _blit(x.index_select(0, dev_idx), lin_r[idx].long(), off_r[idx].long())
            out = out.index_copy(0, dev_idx, y)
        idx = general.nonzero().flatten()
        if idx.numel() > 0:
            dev_idx = idx.to(x.device)
            y = affine_warp(
                x.index_select(0, dev_idx), G[idx],
                geom_filter=self.config.geom_filter, interpolation=self.config.interpolation,
            )
            out = out.index_copy(0, dev_idx, y)
        return out

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
    and ``p += sign(r_t - target) * images / (ada_kimg * 1000)`` (``images`` = sum of ``batch_size`` over those
    calls, = batch * interval for a constant batch), clamped to ``>= 0``. An interval without accumulated signs
    leaves ``p`` unchanged. The new ``p`` is written into ``pipe.p`` when a pipe is attached. ``state_dict`` holds
    plain numbers, including the partial interval, so a resumed run continues exactly.

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
            self._p = max(self._p + direction * self.adjustment_size(self._images), 0.0)
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
