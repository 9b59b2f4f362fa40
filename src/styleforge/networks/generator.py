"""The StyleGAN2 generator: mapping network + synthesis network (architectures skip, orig, resnet).

Contract shared with every styleforge tool:
``G.mapping(z, c, truncation_psi=1, truncation_cutoff=None) -> ws [N, num_ws, w_dim]``,
``G.synthesis(ws, noise_mode='const') -> img [N, C, H, W]`` in about [-1, 1], and ``G(z, c, ...)``.
The constructor takes one :class:`GeneratorConfig`, which is stored with the weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from .config import ConfigBase, check_choice, check_filter, check_float, check_int, init_normal, register_network
from .layers import Conv2dLayer, MappingConfig, MappingNetwork, SynthesisLayer, ToRGBLayer
from .ops import setup_filter, upsample2d

NOISE_MODES = ("const", "random", "none")
ARCHITECTURES_G = ("skip", "orig", "resnet")


@dataclass
class SynthesisConfig(ConfigBase):
    """Constructor settings of the synthesis network."""

    channel_base: int = 32768  # channels at resolution r: min(channel_base // r, channel_max)
    channel_max: int = 512
    num_fp16_res: int = 0  # highest resolutions that may run in fp16 (only with fp16=True)
    conv_clamp: Optional[float] = None  # clamp conv outputs to +-this (always applied when set)
    architecture: str = "skip"
    resample_filter: List[int] = field(default_factory=lambda: [1, 3, 3, 1])
    use_noise: bool = True
    activation: str = "lrelu"

    def validate(self) -> None:
        from .ops import ACTIVATIONS

        check_int("channel_base", self.channel_base, 1, 2**24)
        check_int("channel_max", self.channel_max, 1, 65536)
        check_int("num_fp16_res", self.num_fp16_res, 0, 64)
        check_float("conv_clamp", self.conv_clamp, 1e-8, 1e30, optional=True)
        check_choice("synthesis architecture", self.architecture, ARCHITECTURES_G)
        check_filter("resample_filter", self.resample_filter)
        check_choice("use_noise", self.use_noise, (True, False))
        check_choice("synthesis activation", self.activation, ACTIVATIONS)


@dataclass
class GeneratorConfig(ConfigBase):
    """Everything needed to rebuild a StyleGAN2 generator."""

    z_dim: int = 512
    c_dim: int = 0
    w_dim: int = 512
    img_resolution: int = 1024
    img_channels: int = 3
    mapping: MappingConfig = field(default_factory=MappingConfig)
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)

    def validate(self) -> None:
        check_int("z_dim", self.z_dim, 0, 65536)
        check_int("c_dim", self.c_dim, 0, 65536)
        check_int("w_dim", self.w_dim, 1, 65536)
        check_int("img_channels", self.img_channels, 1, 16)
        r = self.img_resolution
        check_int("img_resolution", r, 4, 16384)
        if r & (r - 1):
            raise ValueError(f"img_resolution must be a power of two >= 4, got {r}")
        if self.z_dim + self.c_dim == 0:
            raise ValueError("a generator needs z_dim > 0 or c_dim > 0")
        self.mapping.validate()
        self.synthesis.validate()


def channels_at(res: int, channel_base: int, channel_max: int) -> int:
    return min(channel_base // res, channel_max)


def _memory_format(device: torch.device, fp16: bool) -> torch.memory_format:
    """Channels-last on CPU in fp32: oneDNN's convolutions (dense, transposed and the depthwise FIR filter)
    run 1.5-3x faster in that layout. The fp16 comparison path keeps the official default layout so that
    its rounding matches the official mixed-precision outputs bit for bit on the same kind of CPU."""
    if device.type == "cpu" and not fp16:
        return torch.channels_last
    return torch.contiguous_format


def default_layer(kind: str, in_channels: int, out_channels: int, w_dim: int, resolution: int, **kw) -> nn.Module:
    """The layers of a synthesis block: ``kind`` "conv" (a :class:`SynthesisLayer`) or "torgb" (a
    :class:`ToRGBLayer`). Variants of the network (SEGAN) pass their own factory, returning subclasses of these."""
    if kind == "conv":
        return SynthesisLayer(in_channels, out_channels, w_dim, resolution, **kw)
    return ToRGBLayer(in_channels, out_channels, w_dim, **kw)


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network: [up-conv], conv, [ToRGB], with the image skip path."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        is_last: bool,
        architecture: str,
        resample_filter,
        conv_clamp: Optional[float],
        use_fp16: bool,
        use_noise: bool,
        activation: str,
        make_layer: Optional[Callable[..., nn.Module]] = None,
    ):
        super().__init__()
        make_layer = make_layer or default_layer
        self.in_channels = in_channels
        self.resolution = resolution
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        layer_kw = dict(use_noise=use_noise, activation=activation, resample_filter=resample_filter, conv_clamp=conv_clamp)
        self.num_conv = 0
        self.num_torgb = 0
        if in_channels == 0:
            self.const = nn.Parameter(init_normal([out_channels, resolution, resolution]))
        else:
            self.conv0 = make_layer("conv", in_channels, out_channels, w_dim, resolution, up=2, **layer_kw)
            self.num_conv += 1
        self.conv1 = make_layer("conv", out_channels, out_channels, w_dim, resolution, **layer_kw)
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = make_layer("torgb", out_channels, img_channels, w_dim, resolution, conv_clamp=conv_clamp)
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2, resample_filter=resample_filter)

    def forward(
        self,
        x: Optional[torch.Tensor],
        img: Optional[torch.Tensor],
        ws: torch.Tensor,
        noise_mode: str = "const",
        fp16: bool = False,
        fused_modconv: Optional[bool] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        w_iter = iter(ws.unbind(dim=1))
        dtype = torch.float16 if (self.use_fp16 and fp16) else torch.float32
        n = ws.shape[0]
        if fused_modconv is None:
            if fp16:  # the official mixed-precision rule, so that --fp16 reproduces official fp16 outputs
                fused_modconv = (not self.training) and (dtype == torch.float32 or n == 1)
            elif self.training:
                fused_modconv = False
            # otherwise None: each layer picks the cheaper formulation for its shapes (ops.modulated_conv2d)
        mf = _memory_format(ws.device, fp16)
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).repeat([n, 1, 1, 1]).contiguous(memory_format=mf)
        else:
            x = x.to(dtype=dtype, memory_format=mf)
        kw = dict(noise_mode=noise_mode, fused=fused_modconv, exact_order=fp16)
        if self.in_channels == 0:
            x = self.conv1(x, next(w_iter), **kw)
        elif self.architecture == "resnet":
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv0(x, next(w_iter), **kw)
            x = self.conv1(x, next(w_iter), gain=np.sqrt(0.5), **kw)
            x = y + x
        else:
            x = self.conv0(x, next(w_iter), **kw)
            x = self.conv1(x, next(w_iter), **kw)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter), fused=fused_modconv, exact_order=fp16)
            y = y.to(torch.float32, memory_format=torch.contiguous_format)
            img = img + y if img is not None else y
        return x, img


# On CPU, batches run together up to this resolution and one sample at a time above it (measured on 2 cores:
# paper256 batch 8 ~10% faster than one sample at a time throughout).
CPU_BATCHED_MAX_RES = 64


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] -> image, block by block from 4x4 up to img_resolution."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, cfg: SynthesisConfig,
                 make_layer: Optional[Callable[..., nn.Module]] = None):
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        log2 = int(np.log2(img_resolution))
        self.block_resolutions = [2**i for i in range(2, log2 + 1)]
        fp16_resolution = max(2 ** (log2 + 1 - cfg.num_fp16_res), 8)
        self.num_ws = 0
        for res in self.block_resolutions:
            in_ch = channels_at(res // 2, cfg.channel_base, cfg.channel_max) if res > 4 else 0
            out_ch = channels_at(res, cfg.channel_base, cfg.channel_max)
            block = SynthesisBlock(
                in_ch, out_ch, w_dim, res, img_channels, is_last=(res == img_resolution),
                architecture=cfg.architecture, resample_filter=cfg.resample_filter, conv_clamp=cfg.conv_clamp,
                use_fp16=(res >= fp16_resolution), use_noise=cfg.use_noise, activation=cfg.activation,
                make_layer=make_layer,
            )
            self.num_ws += block.num_conv
            if res == img_resolution:
                self.num_ws += block.num_torgb
            setattr(self, f"b{res}", block)

    def forward(
        self, ws: torch.Tensor, noise_mode: str = "const", fp16: bool = False, fused_modconv: Optional[bool] = None
    ) -> torch.Tensor:
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"ws must have shape [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        ws = ws.to(torch.float32)
        n = ws.shape[0]
        split = (n > 1 and ws.device.type == "cpu" and not fp16 and noise_mode != "random" and not self.training
                 and not torch.is_grad_enabled())
        # CPU inference of a batch: the low resolutions, where reading the weights dominates, run batched; the
        # rest one sample at a time, which keeps each activation in cache (same result up to float rounding;
        # 'random' noise stays batched so its RNG draws match).
        return self._run_blocks(ws, None, None, 0, noise_mode, fp16, fused_modconv, split)

    def _run_blocks(self, ws, x, img, start, noise_mode, fp16, fused_modconv, split):
        w_idx = sum(getattr(self, f"b{r}").num_conv for r in self.block_resolutions[:start])
        for i in range(start, len(self.block_resolutions)):
            res = self.block_resolutions[i]
            if split and res > CPU_BATCHED_MAX_RES:
                return torch.cat([
                    self._run_blocks(ws[k: k + 1], None if x is None else x[k: k + 1],
                                     None if img is None else img[k: k + 1], i, noise_mode, fp16, fused_modconv, False)
                    for k in range(ws.shape[0])])
            block = getattr(self, f"b{res}")
            cur = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img = block(x, img, cur, noise_mode=noise_mode, fp16=fp16, fused_modconv=fused_modconv)
        return img


@register_network("stylegan2.generator")
class Generator(nn.Module):
    """StyleGAN2(-ADA) generator. Build with ``Generator(GeneratorConfig(...))``."""

    config_class = GeneratorConfig
    has_w_space = True

    def __init__(self, config: Optional[GeneratorConfig] = None, **overrides):
        super().__init__()
        cfg = config if config is not None else self.config_class()
        if overrides:
            cfg = self.config_class.from_dict({**cfg.to_dict(), **overrides})
        cfg.validate()
        self.config = cfg
        self.z_dim = cfg.z_dim
        self.c_dim = cfg.c_dim
        self.w_dim = cfg.w_dim
        self.img_resolution = cfg.img_resolution
        self.img_channels = cfg.img_channels
        self.synthesis = self.build_synthesis(cfg)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(cfg.z_dim, cfg.c_dim, cfg.w_dim, self.num_ws, cfg.mapping)

    def build_synthesis(self, cfg: GeneratorConfig) -> SynthesisNetwork:
        """The synthesis network of ``cfg``; variants (SEGAN) override this to pass their own layers."""
        return SynthesisNetwork(cfg.w_dim, cfg.img_resolution, cfg.img_channels, cfg.synthesis)

    def forward(
        self,
        z: torch.Tensor,
        c: Optional[torch.Tensor] = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: Optional[int] = None,
        noise_mode: str = "const",
        fp16: bool = False,
        fused_modconv: Optional[bool] = None,
        update_w_avg: bool = True,
    ) -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, update_w_avg=update_w_avg)
        return self.synthesis(ws, noise_mode=noise_mode, fp16=fp16, fused_modconv=fused_modconv)

    @property
    def w_avg(self) -> torch.Tensor:
        return self.mapping.w_avg
