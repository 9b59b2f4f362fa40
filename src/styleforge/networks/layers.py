"""Building blocks shared by the StyleGAN2 generator and discriminator.

Parameter and buffer names match the official StyleGAN2-ADA modules one-to-one, so an official state dict
loads with ``load_state_dict(strict=True)`` and ours can be compared to it name by name. Weights are stored
unscaled and multiplied by their equalised-learning-rate gain at run time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import nn

from .config import ConfigBase, check_choice, check_float, check_int, init_normal
from .ops import (
    POSITIVELY_HOMOGENEOUS, WeightLayouts, activation_gain, bias_act, conv2d_resample, modulated_conv2d, setup_filter,
)


class FullyConnectedLayer(nn.Module):
    """Dense layer with equalised learning rate: y = act(x @ (W * lr/sqrt(in))^T + b * lr)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        bias_init: float = 0.0,
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(init_normal([out_features, in_features], 1 / lr_multiplier))
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self._layouts = WeightLayouts()

    def _scaled(self, t: torch.Tensor) -> torch.Tensor:
        return t * self.weight_gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == self.weight.dtype and not (torch.is_grad_enabled() and self.weight.requires_grad):
            w = self._layouts.get(self.weight, "scaled", self._scaled)  # frozen: scale once, not per call
        else:
            w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        x = x.matmul(w.t())
        return bias_act(x, b, act=self.activation)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, act={self.activation}"


class Conv2dLayer(nn.Module):
    """Convolution with equalised learning rate, optional FIR up/downsampling, bias, activation, clamp."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",
        up: int = 1,
        down: int = 1,
        resample_filter: Sequence[float] = (1, 3, 3, 1),
        conv_clamp: Optional[float] = None,
        trainable: bool = True,
    ):
        super().__init__()
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.act_gain = activation_gain(activation)
        weight = init_normal([out_channels, in_channels, kernel_size, kernel_size])
        b = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = nn.Parameter(weight)
            self.bias = nn.Parameter(b) if b is not None else None
        else:
            self.register_buffer("weight", weight)
            if b is not None:
                self.register_buffer("bias", b)
            else:
                self.bias = None

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = self.weight * self.weight_gain
        b = self.bias.to(x.dtype) if self.bias is not None else None
        x = conv2d_resample(x, w.to(x.dtype), f=self.resample_filter, up=self.up, down=self.down, padding=self.padding)
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=act_clamp)


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale each vector to unit root-mean-square along ``dim``."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


@dataclass
class MappingConfig(ConfigBase):
    """Constructor settings of a mapping network (z, c -> w)."""

    num_layers: int = 8
    embed_features: Optional[int] = None  # None: w_dim when conditional
    layer_features: Optional[int] = None  # None: w_dim
    activation: str = "lrelu"
    lr_multiplier: float = 0.01
    w_avg_beta: Optional[float] = 0.995  # None: no tracked w_avg (discriminator's label mapping)

    def validate(self) -> None:
        from .ops import ACTIVATIONS

        check_int("mapping num_layers", self.num_layers, 0, 64)
        check_int("mapping embed_features", self.embed_features, 1, 65536, optional=True)
        check_int("mapping layer_features", self.layer_features, 1, 65536, optional=True)
        check_choice("mapping activation", self.activation, ACTIVATIONS)
        check_float("mapping lr_multiplier", self.lr_multiplier, 1e-8, 1e8)
        check_float("mapping w_avg_beta", self.w_avg_beta, 0.0, 1.0, optional=True)


class MappingNetwork(nn.Module):
    """z (and a label c) -> w through normalisation, an optional label embedding and an MLP.

    Tracks the running mean ``w_avg`` during training and applies the truncation trick
    ``w_avg + psi * (w - w_avg)`` (via ``torch.lerp``, as the official code does) to the first
    ``truncation_cutoff`` of the ``num_ws`` broadcast copies.
    """

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: Optional[int], cfg: MappingConfig):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = cfg.num_layers
        self.w_avg_beta = cfg.w_avg_beta
        embed_features = cfg.embed_features
        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        layer_features = cfg.layer_features if cfg.layer_features is not None else w_dim
        features = [z_dim + embed_features] + [layer_features] * (cfg.num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for i in range(cfg.num_layers):
            layer = FullyConnectedLayer(
                features[i], features[i + 1], activation=cfg.activation, lr_multiplier=cfg.lr_multiplier
            )
            setattr(self, f"fc{i}", layer)
        if num_ws is not None and cfg.w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self,
        z: Optional[torch.Tensor],
        c: Optional[torch.Tensor],
        truncation_psi: float = 1.0,
        truncation_cutoff: Optional[int] = None,
        update_w_avg: bool = True,
    ) -> torch.Tensor:
        x = None
        if self.z_dim > 0:
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        if self.w_avg_beta is not None and self.training and update_w_avg and hasattr(self, "w_avg"):
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            if not hasattr(self, "w_avg"):
                raise ValueError("truncation needs a tracked w_avg, which this mapping network does not have")
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x = x.clone()
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution with per-pixel noise, bias, activation and clamp."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        kernel_size: int = 3,
        up: int = 1,
        use_noise: bool = True,
        activation: str = "lrelu",
        resample_filter: Sequence[float] = (1, 3, 3, 1),
        conv_clamp: Optional[float] = None,
    ):
        super().__init__()
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = activation_gain(activation)
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(init_normal([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", init_normal([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self._layouts = WeightLayouts()

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const", fused: Optional[bool] = None,
        gain: float = 1.0, exact_order: bool = False,
    ) -> torch.Tensor:
        """``exact_order=True`` keeps the official op order (the mixed-precision path needs it: fp16 layers
        amplify any rounding difference coming from the fp32 layers before them)."""
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = (
                torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device)
                * self.noise_strength
            )
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        out_gain = self.act_gain * gain
        # act(g * (conv + noise + b)) computed as act(g*conv + g*noise + g*b): the gain rides on the
        # demodulation and the bias on the convolution call, saving two passes over the output
        fold = (not exact_order and x.dtype == torch.float32 and self.activation in POSITIVELY_HOMOGENEOUS
                and out_gain > 0)
        x = modulated_conv2d(
            x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
            resample_filter=self.resample_filter, fused=fused, layouts=self._layouts,
            out_scale=out_gain if fold else 1.0, bias=self.bias * out_gain if fold else None,
        )
        if fold:
            return bias_act(x, None, act=self.activation, gain=1.0, clamp=act_clamp, scratch=True)
        return bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=out_gain, clamp=act_clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 convolution (no demodulation) to image channels, bias, clamp."""

    def __init__(
        self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1, conv_clamp: Optional[float] = None
    ):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(init_normal([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, fused: Optional[bool] = None, exact_order: bool = False
    ) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        fold = not exact_order and x.dtype == torch.float32  # bias added by the convolution call itself
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=fused, bias=self.bias if fold else None)
        return bias_act(x, None if fold else self.bias.to(x.dtype), clamp=self.conv_clamp)


class MinibatchStdLayer(nn.Module):
    """Append the mean standard deviation over (strided) groups of samples as extra feature channels."""

    def __init__(self, group_size: Optional[int], num_channels: int = 1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n) if self.group_size is not None else n
        if n % g != 0:
            raise ValueError(f"batch size {n} is not divisible by the minibatch-std group size {g}")
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)
        y = y - y.mean(dim=0)
        y = y.square().mean(dim=0)
        y = (y + 1e-8).sqrt()
        y = y.mean(dim=[2, 3, 4])
        y = y.reshape(-1, f, 1, 1)
        y = y.repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)
