"""SEGAN generators: StyleGAN2 with an EigenGAN-style linear subspace in every synthesis layer.

Every layer of the synthesis network (each modulated 3x3 convolution and each ToRGB) gets its own
:class:`Subspace`: an orthonormal basis ``U`` (columns ``u_1..u_d``), per-dimension scales ``L`` and an offset
``mu``, mapping ``d`` coordinates to ``phi = U diag(L) z + mu`` (EigenGAN, He et al. 2021). A layer's coordinates
are the first ``d`` entries of the w it receives (its W+ slot), as in the SEGAN seed, so a SEGAN network keeps
StyleGAN2's W space and works with every W tool (projection, editing, metrics, the web UI).

The four ``mode`` values (the seed's ``--mode``):

* **0**: plain StyleGAN2 (no subspaces; the same modules and parameter names as :class:`Generator`).
* **1**: the subspace spans the layer's *output feature map* (``U`` is ``[C*H*W, d]``); ``phi``, reshaped to
  ``[C, H, W]``, is added to the layer's output (to the RGB output for ToRGB layers). EigenGAN's injection.
* **2** (default, the seed's best): the subspace lives in W (``U`` is ``[w_dim, d]``); the layer's w passes
  through it, ``w' = U diag(L) w[:d] + mu``, before the affine layer that makes the modulation styles. With
  ``d < w_dim`` the layer can only vary along ``d`` learned directions.
* **3**: w is rescaled by a learned diagonal ``L`` (``w' = L * w``), no basis.

The orthogonality regulariser ``0.5 * ||U^T U - I||_F^2`` (EigenGAN), averaged over the layers, is
:meth:`SeganGenerator.orthogonality`; the seed has none (its README lists it as missing). The seed's
``sub_factor`` argument (a per-layer multiplier of the subspace term) is not carried over: it was only used at 1.0,
and its per-block slice was taken as ``[idx : num_conv + num_torgb]`` instead of ``[idx : idx + num_conv +
num_torgb]`` in modes 1 and 2, so any other value scaled the wrong layers. Editing along a coordinate
(:mod:`styleforge.segan.control`) does what it was meant for.

The layers are subclasses of :class:`~styleforge.networks.layers.SynthesisLayer` and
:class:`~styleforge.networks.layers.ToRGBLayer` handed to the unchanged StyleGAN2 synthesis network through its
layer factory: no network code is copied.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import List, NamedTuple, Optional

import torch
from torch import nn

from ..networks.config import ConfigBase, check_choice, check_float, check_int, register_network, skipping_init
from ..networks.generator import Generator, GeneratorConfig, SynthesisNetwork
from ..networks.layers import SynthesisLayer, ToRGBLayer

MODES = (0, 1, 2, 3)
DEFAULT_MODE = 2


@dataclass
class SubspaceConfig(ConfigBase):
    """The SEGAN part of a generator's settings."""

    mode: int = DEFAULT_MODE
    dim: Optional[int] = None  # coordinates per layer (None: w_dim, the seed's choice); capped at the layer's size
    init_scale: float = 1.0  # initial L (the seed: ones)

    def validate(self) -> None:
        check_choice("segan mode", self.mode, MODES)
        check_int("segan subspace dim", self.dim, 1, 65536, optional=True)
        check_float("segan init_scale", self.init_scale, 0.0, 1e6)


@dataclass
class SeganGeneratorConfig(GeneratorConfig):
    """A StyleGAN2 generator's settings plus :class:`SubspaceConfig`."""

    segan: SubspaceConfig = field(default_factory=SubspaceConfig)

    def validate(self) -> None:
        super().validate()
        self.segan.validate()
        if self.segan.dim is not None and self.segan.dim > self.w_dim:
            raise ValueError(f"segan subspace dim {self.segan.dim} is larger than w_dim {self.w_dim}")


class Subspace(nn.Module):
    """``phi = U diag(L) z + mu`` for coordinates ``z`` [N, dim]: ``U`` [size, dim] with orthonormal columns at
    initialisation, ``L`` [dim], ``mu`` [size]."""

    def __init__(self, size: int, dim: int, init_scale: float = 1.0):
        super().__init__()
        if dim > size:
            raise ValueError(f"a subspace of dimension {dim} does not fit in {size} values")
        self.size, self.dim = size, dim
        U = torch.empty([size, dim])
        self.U = nn.Parameter(U if skipping_init() else nn.init.orthogonal_(U))
        self.L = nn.Parameter(torch.full([dim], float(init_scale)))
        self.mu = nn.Parameter(torch.zeros([size]))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.mu.to(z.dtype).unsqueeze(0), z * self.L.to(z.dtype), self.U.to(z.dtype).t())

    def orthogonality(self) -> torch.Tensor:
        """``0.5 * ||U^T U - I||_F^2``: 0 exactly when the basis is orthonormal."""
        gram = self.U.t() @ self.U
        return 0.5 * (gram - torch.eye(self.dim, device=gram.device, dtype=gram.dtype)).square().sum()

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}"


class _SubspaceMixin:
    """What the SEGAN conv and ToRGB layers share: the subspace (or scale) and how it changes w or the output."""

    mode: int
    coords: int  # coordinates taken from w (0: none)

    def _setup(self, mode: int, dim: int, w_dim: int, out_shape: List[int], init_scale: float) -> None:
        self.mode = mode
        self.out_shape = list(out_shape)
        self.coords = 0
        if mode == 1:
            self.coords = min(dim, math.prod(out_shape))
            self.subspace = Subspace(math.prod(out_shape), self.coords, init_scale)
        elif mode == 2:
            self.coords = dim
            self.subspace = Subspace(w_dim, dim, init_scale)
        elif mode == 3:
            self.coords = w_dim
            self.scale = nn.Parameter(torch.full([w_dim], float(init_scale)))

    def style_input(self, w: torch.Tensor) -> torch.Tensor:
        """The w the layer's affine layer sees."""
        if self.mode == 2:
            return self.subspace(w[:, : self.coords])
        if self.mode == 3:
            return w * self.scale.to(w.dtype)
        return w

    def add_to_output(self, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if self.mode != 1:
            return y
        phi = self.subspace(w[:, : self.coords].to(torch.float32)).reshape([w.shape[0], *self.out_shape])
        return y + phi.to(y.dtype)

    def orthogonality(self) -> Optional[torch.Tensor]:
        return self.subspace.orthogonality() if self.mode in (1, 2) else None


class SeganSynthesisLayer(_SubspaceMixin, SynthesisLayer):
    """A StyleGAN2 modulated convolution with the SEGAN subspace of its mode (see the module docstring)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, *, mode: int, dim: int,
                 init_scale: float = 1.0, **kw):
        super().__init__(in_channels, out_channels, w_dim, resolution, **kw)
        self._setup(mode, dim, w_dim, [out_channels, resolution, resolution], init_scale)

    def forward(self, x: torch.Tensor, w: torch.Tensor, **kw) -> torch.Tensor:
        return self.add_to_output(super().forward(x, self.style_input(w), **kw), w)


class SeganToRGBLayer(_SubspaceMixin, ToRGBLayer):
    """A StyleGAN2 ToRGB layer with the SEGAN subspace of its mode."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, *, mode: int, dim: int,
                 init_scale: float = 1.0, **kw):
        super().__init__(in_channels, out_channels, w_dim, **kw)
        self._setup(mode, dim, w_dim, [out_channels, resolution, resolution], init_scale)

    def forward(self, x: torch.Tensor, w: torch.Tensor, **kw) -> torch.Tensor:
        return self.add_to_output(super().forward(x, self.style_input(w), **kw), w)


def segan_layer(kind: str, in_channels: int, out_channels: int, w_dim: int, resolution: int, *, mode: int,
                dim: int, init_scale: float, **kw) -> nn.Module:
    """The synthesis network's layer factory for SEGAN (see :func:`styleforge.networks.generator.default_layer`)."""
    cls = SeganSynthesisLayer if kind == "conv" else SeganToRGBLayer
    return cls(in_channels, out_channels, w_dim, resolution, mode=mode, dim=dim, init_scale=init_scale, **kw)


class LayerInfo(NamedTuple):
    """One synthesis layer: its W+ slot, its name in the network, the module, its coordinates (0: none)."""

    slot: int
    name: str
    layer: nn.Module
    coords: int


@register_network("segan.generator")
class SeganGenerator(Generator):
    """StyleGAN2 generator with per-layer linear subspaces (``config.segan.mode``; module docstring)."""

    config_class = SeganGeneratorConfig
    has_w_space = True

    def build_synthesis(self, cfg: SeganGeneratorConfig) -> SynthesisNetwork:
        s = cfg.segan
        if s.mode == 0:
            return super().build_synthesis(cfg)
        make = functools.partial(segan_layer, mode=s.mode, dim=s.dim or cfg.w_dim, init_scale=s.init_scale)
        return SynthesisNetwork(cfg.w_dim, cfg.img_resolution, cfg.img_channels, cfg.synthesis, make_layer=make)

    @property
    def mode(self) -> int:
        return self.config.segan.mode

    def layers(self) -> List[LayerInfo]:
        """Every synthesis layer in order, with the W+ slot whose w it reads."""
        out = []
        slot = 0
        syn = self.synthesis
        for res in syn.block_resolutions:
            block = getattr(syn, f"b{res}")
            for name in ("conv0", "conv1"):
                if hasattr(block, name):
                    layer = getattr(block, name)
                    out.append(LayerInfo(slot, f"b{res}.{name}", layer, getattr(layer, "coords", 0)))
                    slot += 1
            if hasattr(block, "torgb"):  # reads the slot of the next block's first layer (official indexing)
                layer = block.torgb
                out.append(LayerInfo(slot, f"b{res}.torgb", layer, getattr(layer, "coords", 0)))
        return out

    def orthogonality(self) -> torch.Tensor:
        """The mean of ``0.5 * ||U^T U - I||_F^2`` over the layers with a basis (0 for modes 0 and 3)."""
        terms = [t for t in (getattr(i.layer, "orthogonality", lambda: None)() for i in self.layers())
                 if t is not None]
        if not terms:
            return torch.zeros([], device=self.w_avg.device)
        return torch.stack(terms).mean()


def is_segan(G: nn.Module) -> bool:
    return isinstance(G, SeganGenerator)


__all__ = ["MODES", "DEFAULT_MODE", "SubspaceConfig", "SeganGeneratorConfig", "Subspace", "SeganSynthesisLayer",
           "SeganToRGBLayer", "SeganGenerator", "LayerInfo", "is_segan"]
