"""Stand-ins for feature files we cannot ship or download here: deterministic random conv nets with the call
signature of NVIDIA's ``vgg16.pt`` (tiny by default; VGG16-shaped on request, for realistic timings), savable as
TorchScript files so that tests and benchmarks exercise the same loading path as the real file."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .features import FeatureNet, lpips_normalize

VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


class RandomConvFeatures(FeatureNet):
    """A deterministic random conv net with LPIPS-style taps (before every pool and at the end).

    ``layout`` lists conv widths and 'M' for max-pools; the default is tiny (for tests), and
    ``RandomConvFeatures(VGG16_LAYOUT)`` has VGG16's shape and cost (for benchmarks). Weights are drawn
    from ``seed`` with a private generator (He initialisation), so they never touch the global RNG.
    """

    name = "random"

    def __init__(self, layout: Sequence = (8, "M", 16, "M", 32), seed: int = 0, in_channels: int = 3,
                 max_size: Optional[int] = 256):
        super().__init__()
        self.max_size = max_size
        self.layout = tuple(layout)
        gen = torch.Generator().manual_seed(seed)
        self.convs = nn.ModuleList()
        c = in_channels
        for item in self.layout:
            if item == "M":
                continue
            conv = nn.Conv2d(c, int(item), 3, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * math.sqrt(2.0 / (c * 9)))
                conv.bias.zero_()
            self.convs.append(conv)
            c = int(item)
        self.freeze()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = x * (2 / 255) - 1
        acts = []
        i = 0
        for item in self.layout:
            if item == "M":
                acts.append(h)
                h = F.max_pool2d(h, 2)
            else:
                h = F.relu(self.convs[i](h))
                i += 1
        acts.append(h)
        return lpips_normalize(acts)

    def describe(self) -> str:
        return f"random conv net ({len(self.convs)} convs, test/benchmark only)"

    def save_torchscript(self, path: Union[str, Path]) -> Path:
        """Save this network as a TorchScript file with the official ``vgg16.pt`` call signature,
        ``net(images_0_255, resize_images=True, return_lpips=False)`` (``return_lpips=True``: the same
        features as :meth:`features`; ``resize_images``: area-resize to 224 px first), so that tests and
        benchmarks can run :class:`VGG16LPIPS` without NVIDIA's file."""
        with warnings.catch_warnings():  # torch >= 2.10 marks TorchScript deprecated; the official file is one
            warnings.simplefilter("ignore", DeprecationWarning)
            net = torch.jit.script(_ScriptableConvNet(self.layout, self.convs))
        path = Path(path)
        net.save(str(path))
        return path


class _ScriptableConvNet(nn.Module):
    """:class:`RandomConvFeatures` as a scriptable module with the official VGG16 file's signature."""

    def __init__(self, layout: Sequence, convs: nn.ModuleList):
        super().__init__()
        stages: List[nn.Module] = []
        current: List[nn.Module] = []
        it = iter(convs)
        for item in layout:
            if item == "M":
                stages.append(nn.Sequential(*current))
                current = []
            else:
                conv = next(it)
                copy = nn.Conv2d(conv.in_channels, conv.out_channels, 3, padding=1)
                copy.load_state_dict(conv.state_dict())
                current += [copy, nn.ReLU()]
        stages.append(nn.Sequential(*current))
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor, resize_images: bool = True, return_lpips: bool = False) -> torch.Tensor:
        if resize_images:
            x = F.interpolate(x, size=(224, 224), mode="area")
        h = x * (2 / 255) - 1
        feats: List[torch.Tensor] = []
        for i, stage in enumerate(self.stages):
            if i > 0:
                h = F.max_pool2d(h, 2)
            h = stage(h)
            feats.append(h)
        if not return_lpips:
            return h.flatten(1)
        out: List[torch.Tensor] = []
        for a in feats:
            a = a / (a.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)
            out.append(a.flatten(1) * (1.0 / math.sqrt(a.shape[2] * a.shape[3])))
        return torch.cat(out, dim=1)


# ----------------------------------------------------------------------------------------------------------
# Image-quality helpers (used for the projector's report; metrics may share them).


# ----------------------------------------------------------------------------------------------------------
# Detector stand-in: the call signature of NVIDIA's inception-2015-12-05.pt and vgg16.pt, tiny and random.


class DetectorStandIn(nn.Module):
    """A tiny deterministic random conv net with the official detectors' call signature (scriptable):

    ``net(images [N, 3, H, W] in [0, 255] (uint8 or float), return_features=False, use_fp16=False,
    no_output_bias=False, resize_images=True, return_lpips=False)``

    - ``return_features=True``: [N, ``features``] (global-average-pooled last conv, as Inception's pool features);
    - ``return_lpips=True``: LPIPS-style flat features (unit-normalised taps / sqrt(H*W));
    - otherwise: softmax class probabilities [N, ``logits``] of a linear layer on the features, without its
      bias when ``no_output_bias`` (as the Inception file's IS output).

    ``resize_images`` (default on, like the files) first resizes bilinearly to ``size`` x ``size`` (Inception
    resizes to 299 itself; the stand-in's ``size`` is small so tests stay fast). ``use_fp16`` is accepted and
    ignored. Weights come from ``seed`` through a private generator.
    """

    def __init__(self, features: int = 64, logits: int = 16, size: int = 32, seed: int = 0,
                 widths: Sequence[int] = (8, 16, 32)):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.size = int(size)
        convs = []
        c = 3
        for w in tuple(widths) + (int(features),):
            conv = nn.Conv2d(c, int(w), 3, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * math.sqrt(2.0 / (c * 9)))
                conv.bias.copy_(torch.randn(conv.bias.shape, generator=gen) * 0.1)
            convs.append(conv)
            c = int(w)
        self.convs = nn.ModuleList(convs)
        self.fc = nn.Linear(int(features), int(logits))
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(self.fc.weight.shape, generator=gen) / math.sqrt(features))
            self.fc.bias.copy_(torch.randn(self.fc.bias.shape, generator=gen))
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def forward(self, img: torch.Tensor, return_features: bool = False, use_fp16: bool = False,
                no_output_bias: bool = False, resize_images: bool = True, return_lpips: bool = False) -> torch.Tensor:
        x = img.to(torch.float32)
        if resize_images and (x.shape[2] != self.size or x.shape[3] != self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        h = (x - 128) / 128
        taps: List[torch.Tensor] = []
        for i, conv in enumerate(self.convs):
            if i > 0:
                h = F.avg_pool2d(h, 2) if h.shape[2] >= 2 else h
            h = F.relu(conv(h))
            taps.append(h)
        if return_lpips:
            out: List[torch.Tensor] = []
            for a in taps:
                a = a / (a.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)
                out.append(a.flatten(1) * (1.0 / math.sqrt(a.shape[2] * a.shape[3])))
            return torch.cat(out, dim=1)
        feats = h.mean(dim=[2, 3])
        if return_features:
            return feats
        logits = F.linear(feats, self.fc.weight)
        if not no_output_bias:
            logits = logits + self.fc.bias
        return torch.softmax(logits, dim=1)


INCEPTION_SCALE = dict(widths=(48, 96, 192, 384), features=2048, size=299)
"""Stand-in settings whose cost is close to Inception-v3's (about 5.2 G multiply-adds per 299 x 299 image against
its 5.7 G; 2048 features), for benchmarks: ``save_detector_standin(path, **INCEPTION_SCALE)``."""


def save_detector_standin(path: Union[str, Path], features: int = 64, logits: int = 16, size: int = 32,
                          seed: int = 0, widths: Sequence[int] = (8, 16, 32)) -> Path:
    """Write a :class:`DetectorStandIn` as a TorchScript file (what :func:`styleforge.perceptual.detectors.
    load_detector` reads), so tests and benchmarks run the metrics' full path without NVIDIA's files.
    ``**INCEPTION_SCALE`` gives an Inception-sized workload (see there)."""
    with warnings.catch_warnings():  # torch >= 2.10 marks TorchScript deprecated; the official files are TorchScript
        warnings.simplefilter("ignore", DeprecationWarning)
        net = torch.jit.script(DetectorStandIn(features, logits, size, seed, widths))
    path = Path(path)
    net.save(str(path))
    return path
