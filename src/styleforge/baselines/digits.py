"""A small digit classifier that serves as the metrics' feature detector for MNIST (FID/KID that mean something there).

Inception-v3 was trained on photographs; on 32 px grayscale digits its features say little, and NVIDIA's file is
not available offline anyway. :class:`DigitNet` is a small CNN trained in seconds on real digits
(:func:`train_digit_net`, deterministic for a seed and thread count); its penultimate layer is the feature vector.
It has the call signature of NVIDIA's Inception file, so the metrics package takes it as its ``inception``
detector (``calc_metric(..., detectors={"inception": net})`` or, saved with :meth:`DigitNet.save_torchscript`,
``MetricOptions(inception=path)``):

    net(images, return_features=False, use_fp16=False, no_output_bias=False, resize_images=True, return_lpips=False)

``images`` are [N, C, H, W] in [0, 255] (uint8 or float; C = 1 or 3, channels averaged to gray) at any size
(resized to 32 x 32 by area averaging or bilinear upsampling unless ``resize_images=False``).
``return_features=True`` gives [N, ``features``] (the ReLU'd penultimate layer); otherwise softmax class
probabilities [N, 10] (without the output bias when ``no_output_bias``, as the Inception file's IS output).
``use_fp16`` and ``return_lpips`` are accepted for the signature; LPIPS is not offered (a ValueError).

Architecture: conv 3x3 (16) - ReLU - max-pool, conv 3x3 (32) - ReLU - max-pool, conv 3x3 (64) - ReLU - max-pool,
dense 1024 -> ``features`` - ReLU, dense -> 10. Training: Adam 1e-3, batch 64, cross-entropy, one-pixel random
shifts, ``epochs`` passes; weights, shuffling and shifts come from private generators seeded by ``seed``.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..utils.progress import Callback, reporter

__all__ = ["DigitNet", "train_digit_net", "classify", "accuracy"]


class DigitNet(nn.Module):
    """The digit classifier / detector (see the module docstring). Build it with :func:`train_digit_net`."""

    def __init__(self, features: int = 128, num_classes: int = 10, size: int = 32, seed: int = 0):
        super().__init__()
        self.size = int(size)
        self.num_features = int(features)
        gen = torch.Generator().manual_seed(int(seed))
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1)
        flat = 64 * (self.size // 8) ** 2
        self.fc1 = nn.Linear(flat, self.num_features)
        self.fc2 = nn.Linear(self.num_features, int(num_classes))
        with torch.no_grad():  # He initialisation from the private generator (the global RNG is left alone)
            for layer in (self.conv1, self.conv2, self.conv3, self.fc1, self.fc2):
                fan_in = layer.weight[0].numel()
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * math.sqrt(2.0 / fan_in))
                layer.bias.zero_()

    def forward(self, img: torch.Tensor, return_features: bool = False, use_fp16: bool = False,
                no_output_bias: bool = False, resize_images: bool = True,
                return_lpips: bool = False) -> torch.Tensor:
        if return_lpips:
            raise ValueError("DigitNet has no LPIPS features")
        x = img.to(torch.float32).mean(dim=1, keepdim=True)
        if resize_images and (x.shape[2] != self.size or x.shape[3] != self.size):
            if x.shape[2] >= self.size:
                x = F.adaptive_avg_pool2d(x, [self.size, self.size])
            else:
                x = F.interpolate(x, size=[self.size, self.size], mode="bilinear", align_corners=False)
        h = x / 127.5 - 1
        h = F.max_pool2d(F.relu(self.conv1(h)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        h = F.max_pool2d(F.relu(self.conv3(h)), 2)
        feats = F.relu(self.fc1(h.flatten(1)))
        if return_features:
            return feats
        logits = F.linear(feats, self.fc2.weight)
        if not no_output_bias:
            logits = logits + self.fc2.bias
        return torch.softmax(logits, dim=1)

    def save_torchscript(self, path: Union[str, Path]) -> Path:
        """Write this network as a TorchScript file (what ``perceptual.detectors.load_detector`` reads)."""
        with warnings.catch_warnings():  # torch >= 2.10 marks TorchScript deprecated; the detector files are one
            warnings.simplefilter("ignore", DeprecationWarning)
            net = torch.jit.script(self.eval())
        path = Path(path)
        net.save(str(path))
        return path


def _as_batch(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W] (or [N, 1, H, W]) -> float [N, 1, H, W] in [0, 255]."""
    t = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32)
    return t[:, None] if t.ndim == 3 else t


def train_digit_net(images: np.ndarray, labels: np.ndarray, *, epochs: int = 10, seed: int = 0,
                    features: int = 128, batch: int = 64, lr: float = 1e-3,
                    callback: Optional[Callback] = None) -> DigitNet:
    """Train a :class:`DigitNet` on uint8 digits [N, R, R] (R a multiple of 8; 32 for the padded MNIST digits) and
    integer classes [N]; returns it frozen, in eval mode. Deterministic for ``seed`` (and a fixed thread count)."""
    x_all = _as_batch(images)
    y_all = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    if x_all.shape[0] != y_all.shape[0] or x_all.shape[0] == 0:
        raise ValueError(f"need as many labels as images, got {x_all.shape[0]} images and {y_all.shape[0]} labels")
    num_classes = int(y_all.max()) + 1
    net = DigitNet(features=features, num_classes=max(num_classes, 10), size=int(x_all.shape[-1]), seed=seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(int(seed) + 1)
    n = x_all.shape[0]
    steps = math.ceil(n / batch)
    net.train()
    with reporter(callback).stage("digit classifier", total=int(epochs) * steps, unit="step") as advance:
        for _ in range(int(epochs)):
            order = torch.randperm(n, generator=gen)
            for i in range(steps):
                idx = order[i * batch:(i + 1) * batch]
                x = x_all[idx]
                dx, dy = (int(v) for v in torch.randint(-1, 2, [2], generator=gen))  # a one-pixel shift
                x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
                probs = net(x, resize_images=False)
                loss = F.nll_loss(torch.log(probs.clamp_min(1e-12)), y_all[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                advance(1, loss=float(loss.detach()))
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


@torch.no_grad()
def classify(net: torch.nn.Module, images: Union[np.ndarray, torch.Tensor], batch: int = 500) -> np.ndarray:
    """Predicted classes [N] of uint8 digits [N, H, W] / [N, C, H, W] (or float in [0, 255])."""
    x = _as_batch(images) if isinstance(images, np.ndarray) else images.to(torch.float32)
    out = [net(x[i:i + batch]).argmax(dim=1) for i in range(0, x.shape[0], batch)]
    return torch.cat(out).numpy() if out else np.zeros([0], dtype=np.int64)


def accuracy(net: torch.nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    """The share of ``images`` that ``net`` assigns to ``labels``."""
    return float((classify(net, images) == np.asarray(labels)).mean())
