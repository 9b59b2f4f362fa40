"""The StyleGAN2 discriminator (architectures resnet, orig, skip) with minibatch-stddev and projection
conditioning through a label-mapping network: ``D(img, c) -> logits [N, 1]``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import torch
from torch import nn

from .config import ConfigBase, check_choice, check_filter, check_float, check_int, register_network
from .generator import _memory_format, channels_at
from .layers import Conv2dLayer, FullyConnectedLayer, MappingConfig, MappingNetwork, MinibatchStdLayer

from .ops import downsample2d, setup_filter

ARCHITECTURES_D = ("resnet", "orig", "skip")


def _d_mapping_default() -> MappingConfig:
    return MappingConfig(w_avg_beta=None)


@dataclass
class DiscriminatorConfig(ConfigBase):
    """Everything needed to rebuild a StyleGAN2 discriminator."""

    c_dim: int = 0
    img_resolution: int = 1024
    img_channels: int = 3
    architecture: str = "resnet"
    channel_base: int = 32768
    channel_max: int = 512
    num_fp16_res: int = 0
    conv_clamp: Optional[float] = None
    cmap_dim: Optional[int] = None  # None: channels at 4x4
    activation: str = "lrelu"
    resample_filter: List[int] = field(default_factory=lambda: [1, 3, 3, 1])
    freeze_layers: int = 0  # layers (from the input) whose weights are buffers, for transfer learning
    mbstd_group_size: Optional[int] = 4  # None: the whole batch
    mbstd_num_channels: int = 1
    epilogue_activation: str = "lrelu"
    mapping: MappingConfig = field(default_factory=_d_mapping_default)

    def validate(self) -> None:
        from .ops import ACTIVATIONS

        check_int("c_dim", self.c_dim, 0, 65536)
        check_int("img_channels", self.img_channels, 1, 16)
        r = self.img_resolution
        check_int("img_resolution", r, 8, 16384)
        if r & (r - 1):
            raise ValueError(f"img_resolution must be a power of two >= 8, got {r}")
        check_choice("discriminator architecture", self.architecture, ARCHITECTURES_D)
        check_int("channel_base", self.channel_base, 1, 2**24)
        check_int("channel_max", self.channel_max, 1, 65536)
        check_int("num_fp16_res", self.num_fp16_res, 0, 64)
        check_float("conv_clamp", self.conv_clamp, 1e-8, 1e30, optional=True)
        check_int("cmap_dim", self.cmap_dim, 1, 65536, optional=True)
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("epilogue_activation", self.epilogue_activation, ACTIVATIONS)
        check_filter("resample_filter", self.resample_filter)
        check_int("freeze_layers", self.freeze_layers, 0, 1000)
        check_int("mbstd_group_size", self.mbstd_group_size, 1, 65536, optional=True)
        check_int("mbstd_num_channels", self.mbstd_num_channels, 0, 64)
        self.mapping.validate()


class DiscriminatorBlock(nn.Module):
    """One resolution of D: [FromRGB], conv, down-conv, with a resnet or skip path."""

    def __init__(self, in_channels, tmp_channels, out_channels, resolution, img_channels, first_layer_idx,
                 architecture, activation, resample_filter, conv_clamp, use_fp16, freeze_layers):
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.num_layers = 0

        def trainable() -> bool:
            idx = first_layer_idx + self.num_layers
            self.num_layers += 1
            return idx >= freeze_layers

        common = dict(activation=activation, conv_clamp=conv_clamp)
        if in_channels == 0 or architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, trainable=trainable(), **common)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, trainable=trainable(), **common)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, down=2, resample_filter=resample_filter,
                                 trainable=trainable(), **common)
        if architecture == "resnet":
            self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2,
                                    resample_filter=resample_filter, trainable=trainable())

    def forward(self, x, img, fp16: bool = False):
        dtype = torch.float16 if (self.use_fp16 and fp16) else torch.float32
        mf = _memory_format(img.device if img is not None else x.device, fp16)
        if x is not None:
            x = x.to(dtype=dtype, memory_format=mf)
        if self.in_channels == 0 or self.architecture == "skip":
            y = self.fromrgb(img.to(dtype=dtype, memory_format=mf))
            x = x + y if x is not None else y
            img = downsample2d(img, self.resample_filter) if self.architecture == "skip" else None
        if self.architecture == "resnet":
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv0(x)
            x = self.conv1(x, gain=np.sqrt(0.5))
            x = y + x
        else:
            x = self.conv0(x)
            x = self.conv1(x)
        return x, img


class DiscriminatorEpilogue(nn.Module):
    """The 4x4 head: [FromRGB], minibatch stddev, conv, fc, output (projected onto cmap when conditional)."""

    def __init__(self, in_channels, cmap_dim, resolution, img_channels, architecture, mbstd_group_size,
                 mbstd_num_channels, activation, conv_clamp):
        super().__init__()
        self.cmap_dim = cmap_dim
        self.architecture = architecture
        if architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, in_channels, 1, activation=activation)
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, 3, activation=activation, conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution**2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x, img, cmap):
        x = x.to(torch.float32, memory_format=torch.contiguous_format)
        if self.architecture == "skip":
            x = x + self.fromrgb(img.to(torch.float32, memory_format=torch.contiguous_format))
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        x = self.out(x)
        if self.cmap_dim > 0:
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / np.sqrt(self.cmap_dim))
        return x


@register_network("stylegan2.discriminator")
class Discriminator(nn.Module):
    """StyleGAN2(-ADA) discriminator. Build with ``Discriminator(DiscriminatorConfig(...))``."""

    config_class = DiscriminatorConfig

    def __init__(self, config: Optional[DiscriminatorConfig] = None, **overrides):
        super().__init__()
        cfg = config if config is not None else DiscriminatorConfig()
        if overrides:
            cfg = DiscriminatorConfig.from_dict({**cfg.to_dict(), **overrides})
        cfg.validate()
        self.config = cfg
        self.c_dim = cfg.c_dim
        self.img_resolution = cfg.img_resolution
        self.img_channels = cfg.img_channels
        log2 = int(np.log2(cfg.img_resolution))
        self.block_resolutions = [2**i for i in range(log2, 2, -1)]
        ch = {res: channels_at(res, cfg.channel_base, cfg.channel_max) for res in self.block_resolutions + [4]}
        fp16_resolution = max(2 ** (log2 + 1 - cfg.num_fp16_res), 8)
        cmap_dim = ch[4] if cfg.cmap_dim is None else cfg.cmap_dim
        if cfg.c_dim == 0:
            cmap_dim = 0
        self.cmap_dim = cmap_dim
        cur_layer_idx = 0
        for res in self.block_resolutions:
            in_ch = ch[res] if res < cfg.img_resolution else 0
            block = DiscriminatorBlock(
                in_ch, ch[res], ch[res // 2], res, cfg.img_channels, cur_layer_idx, cfg.architecture,
                cfg.activation, cfg.resample_filter, cfg.conv_clamp, res >= fp16_resolution, cfg.freeze_layers,
            )
            setattr(self, f"b{res}", block)
            cur_layer_idx += block.num_layers
        if cfg.c_dim > 0:
            self.mapping = MappingNetwork(0, cfg.c_dim, cmap_dim, None, cfg.mapping)
        self.b4 = DiscriminatorEpilogue(
            ch[4], cmap_dim, 4, cfg.img_channels, cfg.architecture, cfg.mbstd_group_size,
            cfg.mbstd_num_channels, cfg.epilogue_activation, cfg.conv_clamp,
        )

    def forward(self, img: torch.Tensor, c: Optional[torch.Tensor] = None, fp16: bool = False) -> torch.Tensor:
        expect = [self.img_channels, self.img_resolution, self.img_resolution]
        if img.ndim != 4 or list(img.shape[1:]) != expect:
            raise ValueError(f"D expects images [N, {', '.join(map(str, expect))}], got {list(img.shape)}")
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f"b{res}")(x, img, fp16=fp16)
        cmap = self.mapping(None, c) if self.c_dim > 0 else None
        return self.b4(x, img, cmap)
