"""The baseline networks: MLP GAN, DCGAN, the mapping + AdaIN DCGAN and ProGAN, as registered styleforge networks.

Every class registers under ``baselines.<kind>.generator`` / ``baselines.<kind>.discriminator`` with a config
dataclass, so a checkpoint rebuilds it from ``(arch, config)`` (family ``baselines`` in :data:`styleforge.zoo.FAMILIES`).
The generators take what every styleforge tool passes: ``G(z, c, truncation_psi=..., noise_mode=...)``; they have no
W space (``has_w_space = False``), so truncation scales z towards its mean (0). Images come out in [-1, 1].

Conditional networks (``c_dim > 0``) take one-hot (or soft) labels ``[N, c_dim]`` or integer classes ``[N]``;
a class outside ``0..c_dim-1`` or a missing label is refused with a StyleforgeError.

* ``mlp``: Goodfellow et al.'s fully connected GAN as the seeds teach it: G z -> 256 -> 512 -> C*R*R (tanh),
  D C*R*R -> 512 -> 256 -> 1, leaky ReLU 0.2 (784 outputs at 28 px; the shared dataset reader needs powers of two,
  so MNIST is padded to 32 px and the MLP makes 1024). Labels through a learned embedding concatenated to the input.
* ``dcgan``: Radford et al.'s rules: G transposed convolutions (4x4, stride 2) with batch norm and ReLU, tanh out;
  D strided convolutions with leaky ReLU 0.2, batch norm after the first layer (``d_norm``: ``batch``, ``layer`` for
  a WGAN-GP critic, or ``none``); no pooling, no dense hidden layers. Labels: embedding concatenated to z; in D an
  embedding projected to one extra image-sized input channel.
* ``style``: the upgraded DCGAN: a mapping network (pixel norm, dense layers) turns z (and the label embedding) into w;
  the synthesis starts from a learned 4x4 constant and, per resolution, upsamples, convolves and applies AdaIN
  (instance norm, then a per-channel scale and bias from w).
* ``progan``: Karras et al. 2018: progressive growing from 4 px with fade-in, pixel norm, equalised learning rate and
  minibatch std (:class:`styleforge.networks.layers.FullyConnectedLayer`, ``Conv2dLayer``, ``MinibatchStdLayer``,
  ``normalize_2nd_moment``). The current stage (log2 resolution) and fade-in ``alpha`` are buffers, set by the
  training schedule and saved with the weights; the output is always the full resolution (nearest-upsampled).
  Conditional ProGAN uses a projection discriminator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import StyleforgeError
from ..networks.config import ConfigBase, check_choice, check_int, register_network
from ..networks.layers import Conv2dLayer, FullyConnectedLayer, MinibatchStdLayer, normalize_2nd_moment


def _check_common(cfg, max_res: int = 256, min_res: int = 8) -> None:
    check_int("z_dim", cfg.z_dim, 1, 4096)
    check_int("c_dim", cfg.c_dim, 0, 10000)
    check_int("img_channels", cfg.img_channels, 1, 4)
    check_int("img_resolution", cfg.img_resolution, min_res, max_res)
    if cfg.img_resolution & (cfg.img_resolution - 1):
        raise ValueError(f"img_resolution must be a power of two, got {cfg.img_resolution}")


def labels_as_onehot(c: Optional[torch.Tensor], c_dim: int, n: int, device) -> Optional[torch.Tensor]:
    """Float ``[n, c_dim]`` labels from one-hot/soft labels or integer classes; None when unconditional."""
    if c_dim == 0:
        return None
    if c is None:
        raise StyleforgeError(f"the network is conditional ({c_dim} classes): pass a class 0..{c_dim - 1}",
                              param="class_idx", label="class")
    if not torch.is_floating_point(c):
        c = c.reshape(-1).long()
        bad = (c < 0) | (c >= c_dim)
        if bool(bad.any()):
            raise StyleforgeError(f"out of range: the network has classes 0..{c_dim - 1}", param="class_idx",
                                  label="class", value=int(c[bad][0]))
        c = F.one_hot(c, c_dim).float()
    if c.ndim != 2 or c.shape[1] != c_dim or c.shape[0] != n:
        raise StyleforgeError(f"labels of shape {list(c.shape)} for {n} latents; expected [{n}, {c_dim}]",
                              param="class_idx", label="class")
    return c.to(device=device, dtype=torch.float32)


class _BaselineG(nn.Module):
    """What every baseline generator shares: the call signature of the tools and label handling."""

    has_w_space = False

    def _init_common(self, config) -> None:
        self.config = config
        self.z_dim, self.c_dim = config.z_dim, config.c_dim
        self.img_resolution, self.img_channels = config.img_resolution, config.img_channels

    def forward(self, z: torch.Tensor, c: Optional[torch.Tensor] = None, truncation_psi: float = 1.0,
                truncation_cutoff: Optional[int] = None, noise_mode: str = "const", **_unused) -> torch.Tensor:
        z = z.to(torch.float32)  # the tools' seed latents are float64
        c = labels_as_onehot(c, self.c_dim, z.shape[0], z.device)
        if truncation_psi != 1:
            z = z * truncation_psi  # no W space: pull z towards its mean (0)
        return self.synthesize(z, c)

    def synthesize(self, z: torch.Tensor, c: Optional[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError


def _embedding(c_dim: int, dim: int) -> Optional[nn.Linear]:
    """A label embedding (a one-hot label times the table), N(0, 1) like ``nn.Embedding``; None unconditional."""
    if not c_dim:
        return None
    emb = nn.Linear(c_dim, dim, bias=False)
    nn.init.normal_(emb.weight)
    return emb


def _sn(layer: nn.Module, on: bool) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(layer) if on else layer


# ---------------------------------------------------------------------------------------------------------------------
# MLP GAN / cGAN.


@dataclass
class MLPConfig(ConfigBase):
    z_dim: int = 100
    c_dim: int = 0
    img_resolution: int = 32
    img_channels: int = 1
    hidden: Tuple[int, ...] = (256, 512)  # G's hidden widths; D uses them reversed
    embed_dim: int = 10  # label embedding width (conditional only)
    spectral_norm: bool = False  # D only

    def validate(self) -> None:
        _check_common(self, max_res=128)
        if not 1 <= len(self.hidden) <= 8 or not all(isinstance(h, int) and 1 <= h <= 8192 for h in self.hidden):
            raise ValueError(f"hidden must be 1-8 widths in [1, 8192], got {self.hidden!r}")
        check_int("embed_dim", self.embed_dim, 1, 4096)
        self.hidden = tuple(self.hidden)


@register_network("baselines.mlp.generator")
class MLPGenerator(_BaselineG):
    config_class = MLPConfig

    def __init__(self, config: MLPConfig):
        super().__init__()
        self._init_common(config)
        self.embed = _embedding(config.c_dim, config.embed_dim)
        dims = [config.z_dim + (config.embed_dim if config.c_dim else 0), *config.hidden]
        layers = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.LeakyReLU(0.2)]
        layers += [nn.Linear(dims[-1], config.img_channels * config.img_resolution**2), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def synthesize(self, z, c):
        x = torch.cat([z, self.embed(c)], dim=1) if self.embed is not None else z
        r = self.img_resolution
        return self.net(x).view(-1, self.img_channels, r, r)


@register_network("baselines.mlp.discriminator")
class MLPDiscriminator(nn.Module):
    config_class = MLPConfig

    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = config
        self.c_dim = config.c_dim
        self.embed = _embedding(config.c_dim, config.embed_dim)
        dims = [config.img_channels * config.img_resolution**2 + (config.embed_dim if config.c_dim else 0),
                *reversed(config.hidden)]
        layers = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [_sn(nn.Linear(a, b), config.spectral_norm), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        self.out = _sn(nn.Linear(dims[-1], 1), config.spectral_norm)

    def forward(self, img, c=None, return_features: bool = False):
        x = img.flatten(1)
        c = labels_as_onehot(c, self.c_dim, x.shape[0], x.device)
        if self.embed is not None:
            x = torch.cat([x, self.embed(c)], dim=1)
        f = self.features(x)
        logits = self.out(f)
        return (logits, f) if return_features else logits


# ---------------------------------------------------------------------------------------------------------------------
# DCGAN / cDCGAN (and the WGAN critics, which are DCGAN discriminators without batch norm).


@dataclass
class DCGANConfig(ConfigBase):
    z_dim: int = 100
    c_dim: int = 0
    img_resolution: int = 32
    img_channels: int = 1
    ngf: int = 64  # G's channels at half the image resolution (doubling per halving, at most 8 * ngf)
    ndf: int = 64  # D's channels after the first layer (same rule)
    d_norm: str = "batch"  # batch | layer | none (a WGAN-GP critic must not use batch norm)
    spectral_norm: bool = False  # D only

    def validate(self) -> None:
        _check_common(self)
        check_int("ngf", self.ngf, 2, 1024)
        check_int("ndf", self.ndf, 2, 1024)
        check_choice("d_norm", self.d_norm, ("batch", "layer", "none"))


def _channels(base: int, res: int, img_res: int) -> int:
    """DCGAN widths: ``base`` at half the image resolution, doubling per halving, at most 8 * base."""
    return min(base * img_res // (2 * res), base * 8)


class BatchNorm(nn.BatchNorm2d):
    """Batch norm without the int64 ``num_batches_tracked`` counter (unused with a fixed momentum; styleforge
    checkpoints hold floating-point tensors only)."""

    def __init__(self, channels: int):
        super().__init__(channels)
        self.register_buffer("num_batches_tracked", None)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # skip _NormBase's upgrade of files without version metadata, which would add the counter back
        nn.Module._load_from_state_dict(self, state_dict, prefix, *args, **kwargs)


def _norm(kind: str, ch: int) -> nn.Module:
    return {"batch": lambda: BatchNorm(ch), "layer": lambda: nn.GroupNorm(1, ch),
            "none": nn.Identity}[kind]()


@register_network("baselines.dcgan.generator")
class DCGANGenerator(_BaselineG):
    """z (through a 4x4 transposed convolution, batch norm and ReLU) and the one-hot label (4x4 transposed
    convolution and ReLU) concatenated, as in the usual cDCGAN; then transposed convolutions up to the image."""

    config_class = DCGANConfig

    def __init__(self, config: DCGANConfig):
        super().__init__()
        self._init_common(config)
        R = config.img_resolution
        ch = _channels(config.ngf, 4, R)
        zc = ch // 2 if config.c_dim else ch
        self.z_in = nn.Sequential(nn.ConvTranspose2d(config.z_dim, zc, 4, 1, 0, bias=False), BatchNorm(zc),
                                  nn.ReLU(True))
        # no batch norm on the label path: normalising the class maps over a batch made G ignore z on MNIST
        # (per-class sample spread 0.02 vs 0.15 without it after 3 epochs)
        self.c_in = nn.Sequential(nn.ConvTranspose2d(config.c_dim, ch - zc, 4, 1, 0),
                                  nn.ReLU(True)) if config.c_dim else None
        layers = []
        res = 4
        while res * 2 < R:
            nxt = _channels(config.ngf, res * 2, R)
            layers += [nn.ConvTranspose2d(ch, nxt, 4, 2, 1, bias=False), BatchNorm(nxt), nn.ReLU(True)]
            ch, res = nxt, res * 2
        layers += [nn.ConvTranspose2d(ch, config.img_channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(_dcgan_init)

    def synthesize(self, z, c):
        x = self.z_in(z[:, :, None, None])
        if self.c_in is not None:
            x = torch.cat([x, self.c_in(c[:, :, None, None])], dim=1)
        return self.net(x)


@register_network("baselines.dcgan.discriminator")
class DCGANDiscriminator(nn.Module):
    """The image (and the one-hot label, broadcast to image-sized maps) each through a strided 4x4 convolution and
    leaky ReLU, concatenated; then strided convolutions down to 4x4 and a 4x4 convolution to one logit."""

    config_class = DCGANConfig

    def __init__(self, config: DCGANConfig):
        super().__init__()
        self.config = config
        self.c_dim = config.c_dim
        R = config.img_resolution
        sn = config.spectral_norm
        ch = _channels(config.ndf, R // 2, R)
        xc = ch // 2 if config.c_dim else ch
        self.x_in = nn.Sequential(_sn(nn.Conv2d(config.img_channels, xc, 4, 2, 1), sn), nn.LeakyReLU(0.2, True))
        self.c_in = nn.Sequential(_sn(nn.Conv2d(config.c_dim, ch - xc, 4, 2, 1), sn),
                                  nn.LeakyReLU(0.2, True)) if config.c_dim else None
        layers = []
        res = R // 2
        while res > 4:
            nxt = _channels(config.ndf, res // 2, R)
            layers += [_sn(nn.Conv2d(ch, nxt, 4, 2, 1, bias=config.d_norm == "none"), sn), _norm(config.d_norm, nxt),
                       nn.LeakyReLU(0.2, True)]
            ch, res = nxt, res // 2
        self.features = nn.Sequential(*layers)
        self.out = _sn(nn.Conv2d(ch, 1, 4, 1, 0), sn)
        self.apply(_dcgan_init)

    def forward(self, img, c=None, return_features: bool = False):
        c = labels_as_onehot(c, self.c_dim, img.shape[0], img.device)
        x = self.x_in(img)
        if self.c_in is not None:
            R = self.config.img_resolution
            x = torch.cat([x, self.c_in(c[:, :, None, None].expand(-1, -1, R, R))], dim=1)
        f = self.features(x)
        logits = self.out(f).flatten(1)
        return (logits, f.flatten(1)) if return_features else logits


def _dcgan_init(m: nn.Module) -> None:
    """DCGAN's initialisation: weights N(0, 0.02), batch-norm scales N(1, 0.02)."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        w = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
        nn.init.normal_(w, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


# ---------------------------------------------------------------------------------------------------------------------
# DCGAN with a mapping network and AdaIN (the seeds' "upgraded" DCGAN). D: the DCGAN discriminator.


@dataclass
class StyleDCGANConfig(ConfigBase):
    z_dim: int = 128
    c_dim: int = 0
    img_resolution: int = 32
    img_channels: int = 1
    w_dim: int = 128
    map_layers: int = 4
    ngf: int = 64  # widths as DCGAN's
    embed_dim: int = 32

    def validate(self) -> None:
        _check_common(self)
        check_int("w_dim", self.w_dim, 1, 4096)
        check_int("map_layers", self.map_layers, 1, 16)
        check_int("ngf", self.ngf, 1, 1024)
        check_int("embed_dim", self.embed_dim, 1, 4096)


class AdaIN(nn.Module):
    """Adaptive instance norm: ``(1 + scale(w)) * instance_norm(x) + bias(w)``, scale and bias per channel."""

    def __init__(self, channels: int, w_dim: int):
        super().__init__()
        self.affine = nn.Linear(w_dim, 2 * channels)
        nn.init.zeros_(self.affine.weight)
        nn.init.zeros_(self.affine.bias)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        scale, bias = self.affine(w)[:, :, None, None].chunk(2, dim=1)
        return (1 + scale) * F.instance_norm(x, eps=1e-5) + bias


@register_network("baselines.style.generator")
class StyleDCGANGenerator(_BaselineG):
    config_class = StyleDCGANConfig

    def __init__(self, config: StyleDCGANConfig):
        super().__init__()
        self._init_common(config)
        R = config.img_resolution
        self.embed = _embedding(config.c_dim, config.embed_dim)
        dims = [config.z_dim + (config.embed_dim if config.c_dim else 0)] + [config.w_dim] * config.map_layers
        self.mapping = nn.Sequential(*[FullyConnectedLayer(a, b, activation="lrelu", lr_multiplier=0.01)
                                       for a, b in zip(dims[:-1], dims[1:])])
        ch = _channels(config.ngf, 4, R)
        self.const = nn.Parameter(torch.randn(1, ch, 4, 4))
        self.convs = nn.ModuleList([nn.Conv2d(ch, ch, 3, 1, 1)])
        self.adains = nn.ModuleList([AdaIN(ch, config.w_dim)])
        res = 4
        while res < R:
            nxt = _channels(config.ngf, res * 2, R)
            self.convs.append(nn.Conv2d(ch, nxt, 3, 1, 1))
            self.adains.append(AdaIN(nxt, config.w_dim))
            ch, res = nxt, res * 2
        self.to_rgb = nn.Conv2d(ch, config.img_channels, 1)

    def mapping_forward(self, z, c):
        x = normalize_2nd_moment(z)
        if self.embed is not None:
            x = torch.cat([x, normalize_2nd_moment(self.embed(c))], dim=1)
        return self.mapping(x)

    def synthesize(self, z, c):
        w = self.mapping_forward(z, c)
        x = self.const.expand(z.shape[0], -1, -1, -1)
        for i, (conv, adain) in enumerate(zip(self.convs, self.adains)):
            if i > 0:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = F.leaky_relu(adain(conv(x), w), 0.2)
        return torch.tanh(self.to_rgb(x))


# ---------------------------------------------------------------------------------------------------------------------
# ProGAN.


@dataclass
class ProGANConfig(ConfigBase):
    z_dim: int = 128
    c_dim: int = 0
    img_resolution: int = 32
    img_channels: int = 1
    channel_base: int = 1024  # channels at resolution r: min(channel_base / r, channel_max) (CPU-sized)
    channel_max: int = 64
    mbstd_group_size: int = 4  # D only
    embed_dim: int = 32  # G's label embedding (conditional only)

    def validate(self) -> None:
        _check_common(self, min_res=4)
        check_int("channel_base", self.channel_base, 16, 1 << 20)
        check_int("channel_max", self.channel_max, 1, 4096)
        check_int("mbstd_group_size", self.mbstd_group_size, 1, 64)
        check_int("embed_dim", self.embed_dim, 1, 4096)


def _pg_channels(cfg: ProGANConfig, res: int) -> int:
    return max(min(cfg.channel_base // res, cfg.channel_max), 1)


class _Progressive(nn.Module):
    """The growing state: ``stage`` (log2 of the current resolution) and ``alpha`` (fade-in of that stage)."""

    def _init_stage(self, cfg: ProGANConfig) -> None:
        self.max_stage = int(math.log2(cfg.img_resolution))
        self.register_buffer("stage", torch.tensor(float(self.max_stage)))  # a fresh network: fully grown
        self.register_buffer("alpha", torch.tensor(1.0))

    def set_stage(self, stage: int, alpha: float) -> None:
        if not 2 <= stage <= self.max_stage or not 0 <= alpha <= 1:
            raise ValueError(f"stage {stage} (2..{self.max_stage}) / alpha {alpha} (0..1) out of range")
        self.stage.fill_(float(stage))
        self.alpha.fill_(float(alpha))

    def current(self) -> Tuple[int, float]:
        return int(self.stage.item()), float(self.alpha.item())


@register_network("baselines.progan.generator")
class ProGANGenerator(_BaselineG, _Progressive):
    config_class = ProGANConfig

    def __init__(self, config: ProGANConfig):
        super().__init__()
        self._init_common(config)
        self._init_stage(config)
        self.embed = _embedding(config.c_dim, config.embed_dim)
        in_dim = config.z_dim + (config.embed_dim if config.c_dim else 0)
        ch4 = _pg_channels(config, 4)
        self.fc = FullyConnectedLayer(in_dim, ch4 * 16, activation="lrelu")
        self.conv4 = Conv2dLayer(ch4, ch4, 3, activation="lrelu")
        self.blocks = nn.ModuleDict()
        self.to_rgb = nn.ModuleDict({"4": Conv2dLayer(ch4, config.img_channels, 1)})
        for s in range(3, self.max_stage + 1):
            r = 2**s
            a, b = _pg_channels(config, r // 2), _pg_channels(config, r)
            self.blocks[str(r)] = nn.ModuleList([Conv2dLayer(a, b, 3, activation="lrelu"),
                                                 Conv2dLayer(b, b, 3, activation="lrelu")])
            self.to_rgb[str(r)] = Conv2dLayer(b, config.img_channels, 1)

    def block(self, r: int, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        for conv in self.blocks[str(r)]:
            x = normalize_2nd_moment(conv(x))
        return x

    def synthesize(self, z, c, stage: Optional[int] = None, alpha: Optional[float] = None):
        cur_stage, cur_alpha = self.current()
        stage = cur_stage if stage is None else stage
        alpha = cur_alpha if alpha is None else alpha
        x = normalize_2nd_moment(z)
        if self.embed is not None:
            x = normalize_2nd_moment(torch.cat([x, self.embed(c)], dim=1))
        x = normalize_2nd_moment(self.fc(x).view(-1, _pg_channels(self.config, 4), 4, 4))
        x = normalize_2nd_moment(self.conv4(x))
        prev = None
        for s in range(3, stage + 1):
            prev = x
            x = self.block(2**s, x)
        r = 2**stage
        img = self.to_rgb[str(r)](x)
        if prev is not None and alpha < 1:
            low = F.interpolate(self.to_rgb[str(r // 2)](prev), scale_factor=2, mode="nearest")
            img = torch.lerp(low, img, alpha)
        if r < self.img_resolution:
            img = F.interpolate(img, scale_factor=self.img_resolution // r, mode="nearest")
        return img


@register_network("baselines.progan.discriminator")
class ProGANDiscriminator(_Progressive):
    config_class = ProGANConfig

    def __init__(self, config: ProGANConfig):
        super().__init__()
        self.config = config
        self.c_dim = config.c_dim
        self._init_stage(config)
        C = config.img_channels
        self.from_rgb = nn.ModuleDict()
        self.blocks = nn.ModuleDict()
        for s in range(2, self.max_stage + 1):
            r = 2**s
            self.from_rgb[str(r)] = Conv2dLayer(C, _pg_channels(config, r), 1, activation="lrelu")
            if s > 2:
                a, b = _pg_channels(config, r), _pg_channels(config, r // 2)
                self.blocks[str(r)] = nn.ModuleList([Conv2dLayer(a, a, 3, activation="lrelu"),
                                                     Conv2dLayer(a, b, 3, activation="lrelu")])
        ch4 = _pg_channels(config, 4)
        self.mbstd = MinibatchStdLayer(config.mbstd_group_size)
        self.conv4 = Conv2dLayer(ch4 + 1, ch4, 3, activation="lrelu")
        self.fc = FullyConnectedLayer(ch4 * 16, ch4, activation="lrelu")
        self.out = FullyConnectedLayer(ch4, 1)
        self.project = FullyConnectedLayer(config.c_dim, ch4, bias=False) if config.c_dim else None

    def block(self, r: int, x: torch.Tensor) -> torch.Tensor:
        for conv in self.blocks[str(r)]:
            x = conv(x)
        return F.avg_pool2d(x, 2)

    def forward(self, img, c=None, return_features: bool = False, stage: Optional[int] = None,
                alpha: Optional[float] = None):
        cur_stage, cur_alpha = self.current()
        stage = cur_stage if stage is None else stage
        alpha = cur_alpha if alpha is None else alpha
        c = labels_as_onehot(c, self.c_dim, img.shape[0], img.device)
        r = 2**stage
        x = F.avg_pool2d(img, self.config.img_resolution // r) if r < self.config.img_resolution else img
        h = self.from_rgb[str(r)](x)
        if stage > 2:
            h = self.block(r, h)
            if alpha < 1:
                h = torch.lerp(self.from_rgb[str(r // 2)](F.avg_pool2d(x, 2)), h, alpha)
        for s in range(stage - 1, 2, -1):
            h = self.block(2**s, h)
        h = self.conv4(self.mbstd(h))
        f = self.fc(h.flatten(1))
        logits = self.out(f)
        if self.project is not None:  # projection discriminator: + <embed(c), features>
            logits = logits + (self.project(c) * f).sum(dim=1, keepdim=True) / math.sqrt(f.shape[1])
        return (logits, f) if return_features else logits


def fade_reals(img: torch.Tensor, stage: int, alpha: float) -> torch.Tensor:
    """Real images as ProGAN's D sees them at ``stage`` / ``alpha``: at the stage's resolution, blended with the
    previous resolution during fade-in, nearest-upsampled back to the full size."""
    R = img.shape[-1]
    r = 2**stage
    x = F.avg_pool2d(img, R // r) if r < R else img
    if stage > 2 and alpha < 1:
        x = torch.lerp(F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="nearest"), x, alpha)
    return F.interpolate(x, scale_factor=R // r, mode="nearest") if r < R else x
