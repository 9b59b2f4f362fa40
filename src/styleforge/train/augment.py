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
mode) overwrites every op's parameter by a value derived from ``d`` after the draws, for every image. The draws
become one geometric and one colour matrix per image, applied with the operations of :mod:`.augment_ops` (the warp
resamples with the FIR filters of :mod:`styleforge.networks.ops`).

Everything is differentiable w.r.t. the images, double backward included (R1 through the augmentation).

Controller
----------
:class:`~styleforge.train.ada.AdaptiveP` tunes ``p``. :func:`make_augment` builds ``'ada'`` (pipe + controller, p
starts at 0), ``'fixed'`` (pipe with a constant p) and ``'noaug'`` (nothing).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from .ada import AdaptiveP
from .augment_ops import (
    SYM6_LOWPASS, affine_warp, apply_filters, cutout_mask, eye, filter_bank, imgfilter_bank, rotate2, rotate3,
    scale2, scale3, translate2, translate3,
)

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
# Op names and presets.

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
        G = eye(n, 3) if any(getattr(cfg, k) > 0 for k in _BLIT_OPS + _GEOM_OPS) else None
        if cfg.xflip > 0:
            i = gated(torch.floor(src.rand(n) * 2), cfg.xflip * p, zeros)
            i = debug(i, lambda q: torch.floor(q * 2))
            G = G @ scale2(n, 1 / (1 - 2 * i), 1)
        if cfg.rotate90 > 0:
            i = gated(torch.floor(src.rand(n) * 4), cfg.rotate90 * p, zeros)
            i = debug(i, lambda q: torch.floor(q * 4))
            G = G @ rotate2(math.pi / 2 * i)  # inverse of a content turn by -90 degrees * i
        if cfg.xint > 0:
            t = gated((src.rand(n, 2) * 2 - 1) * cfg.xint_max, cfg.xint * p, zeros)  # one gate for both axes
            t = debug(t, lambda q: (q * 2 - 1) * cfg.xint_max)
            G = G @ translate2(n, -torch.round(t[:, 0] * width), -torch.round(t[:, 1] * height))
        if cfg.scale > 0:
            s = gated(torch.exp2(src.randn(n) * cfg.scale_std), cfg.scale * p, ones)
            s = debug(s, lambda q: torch.exp2(quantile(cfg.scale_std)(q)))
            G = G @ scale2(n, 1 / s, 1 / s)
        # rotation before and/or after aniso, each with p_rot, so that P(at least one) = rotate * p
        p_rot = 1 - torch.sqrt((1 - cfg.rotate * p).clamp(0, 1))
        if cfg.rotate > 0:
            theta = gated((src.rand(n) * 2 - 1) * math.pi * cfg.rotate_max, p_rot, zeros)
            theta = debug(theta, lambda q: (q * 2 - 1) * math.pi * cfg.rotate_max)
            G = G @ rotate2(theta)  # inverse of a content rotation by -theta
        if cfg.aniso > 0:
            s = gated(torch.exp2(src.randn(n) * cfg.aniso_std), cfg.aniso * p, ones)
            s = debug(s, lambda q: torch.exp2(quantile(cfg.aniso_std)(q)))
            G = G @ scale2(n, 1 / s, 1 / (1 / s))
        if cfg.rotate > 0:
            theta = gated((src.rand(n) * 2 - 1) * math.pi * cfg.rotate_max, p_rot, zeros)
            theta = debug(theta, lambda q: 0.0)  # debug mode: the first rotation only
            G = G @ rotate2(theta)
        if cfg.xfrac > 0:
            t = gated(src.randn(n, 2) * cfg.xfrac_std, cfg.xfrac * p, zeros)
            t = debug(t, quantile(cfg.xfrac_std))
            G = G @ translate2(n, -(t[:, 0] * width), -(t[:, 1] * height))

        # ---- colour: C = step @ C ----
        C = None
        v = torch.tensor(np.asarray([1, 1, 1, 0]) / np.sqrt(3), dtype=torch.float32)  # grey axis
        vv = torch.outer(v, v)

        def colour(step: torch.Tensor) -> None:
            nonlocal C
            C = step if C is None else step @ C

        if cfg.brightness > 0:
            b = gated(src.randn(n) * cfg.brightness_std, cfg.brightness * p, zeros)
            colour(translate3(debug(b, quantile(cfg.brightness_std))))
        if cfg.contrast > 0:
            s = gated(torch.exp2(src.randn(n) * cfg.contrast_std), cfg.contrast * p, ones)
            colour(scale3(debug(s, lambda q: torch.exp2(quantile(cfg.contrast_std)(q)))))
        if cfg.lumaflip > 0:
            i = gated(torch.floor(src.rand(n, 1, 1) * 2), cfg.lumaflip * p, zeros)
            i = debug(i, lambda q: torch.floor(q * 2))
            colour(torch.eye(4) - 2 * vv * i)  # Householder mirror across the plane normal to the grey axis
        if cfg.hue > 0 and num_channels > 1:
            theta = gated((src.rand(n) * 2 - 1) * math.pi * cfg.hue_max, cfg.hue * p, zeros)
            colour(rotate3(v, debug(theta, lambda q: (q * 2 - 1) * math.pi * cfg.hue_max)))
        if cfg.saturation > 0 and num_channels > 1:
            s = gated(torch.exp2(src.randn(n, 1, 1) * cfg.saturation_std), cfg.saturation * p, ones)
            s = debug(s, lambda q: torch.exp2(quantile(cfg.saturation_std)(q)))
            colour(vv + (torch.eye(4) - vv) * s)

        # ---- image-space filter: per-band gains, each power-normalised against a 1/f spectrum ----
        filters = None
        if cfg.imgfilter > 0:
            bank = imgfilter_bank()
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
            x = apply_filters(x, prm.filters)
        if prm.noise is not None:
            sigma, unit = prm.noise
            x = x + unit.to(device=x.device, dtype=x.dtype) * sigma.to(device=x.device, dtype=x.dtype)
        if prm.cutout is not None:
            x = x * cutout_mask(*prm.cutout, h, w).to(device=x.device, dtype=x.dtype)
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
