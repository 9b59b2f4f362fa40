"""Perceptual feature networks behind one interface.

Every feature network is a :class:`FeatureNet`: call it on images with values in [0, 255], shaped
[N, C, H, W] (float or uint8), and it returns a feature tensor [N, ...] such that the distance between two
images is the **sum of squared differences** of their features (``net.distance(fa, fb)`` -> [N]), which is
how the official projector uses NVIDIA's VGG16 LPIPS file. Samples never interact, so a batch gives the same
per-image features as one image at a time.

Implementations:

- :class:`VGG16LPIPS`: NVIDIA's TorchScript ``vgg16.pt`` (the file the official projector and metrics use);
- :class:`DiscriminatorFeatures`: intermediate activations of a StyleGAN2 discriminator (the one in the same
  network file), so projection works offline with any full network pickle;
- :class:`PixelLoss`: mean squared error on [0, 1] pixels, optionally plus ``ssim_weight * (1 - SSIM)``;
- :class:`~styleforge.perceptual.standins.RandomConvFeatures`: a deterministic random conv net (tiny by
  default; VGG16-shaped on request, savable as a TorchScript file with vgg16.pt's call signature), for tests and
  benchmarks.

:func:`area_downsample` is the official "shrink to 256x256 with area averaging when larger" step. The
module is meant to be shared by the metrics code, so it depends on nothing but torch (no torchvision).
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import StyleforgeError
from ..utils.progress import Callback
from .similarity import ssim

__all__ = ["FeatureNet", "VGG16LPIPS", "DiscriminatorFeatures", "PixelLoss", "area_downsample", "lpips_normalize"]


def area_downsample(images: torch.Tensor, size: int = 256) -> torch.Tensor:
    """Shrink [N, C, H, W] images to ``size`` x ``size`` with area averaging when they are larger than that
    (the official projector's rule: VGG was trained at 224 px; 1024 px faces are compared at 256 px).
    Smaller images are returned unchanged."""
    if images.shape[2] > size:
        images = F.interpolate(images, size=(size, size), mode="area")
    return images


def lpips_normalize(acts: Sequence[torch.Tensor], eps: float = 1e-10) -> torch.Tensor:
    """LPIPS-style flattening of activations [N, C, H, W] (one per tap), with uniform layer weights.

    At every position each activation vector is scaled to unit length over channels and divided by
    sqrt(H*W); the taps are flattened and concatenated. The sum of squared differences of two results is
    then sum over taps of the mean over positions of the squared distance of unit feature vectors.
    """
    out = []
    for a in acts:
        a = a.float()
        a = a / (a.square().sum(dim=1, keepdim=True).sqrt() + eps)
        out.append(a.flatten(1) * (1.0 / math.sqrt(a.shape[2] * a.shape[3])))
    return torch.cat(out, dim=1)


class FeatureNet(nn.Module):
    """Base class: ``net(images in [0, 255], [N, C, H, W]) -> features [N, ...]``.

    Class attributes a subclass may change:

    - ``name``: short label written into outputs (``vgg``, ``discriminator``...);
    - ``max_size``: inputs larger than this are first area-downsampled to ``max_size`` (None: never);
    - ``rgb_input``: single-channel (grayscale) images are repeated to 3 channels first.

    Subclasses implement :meth:`features`. The network's own weights are frozen (no gradients are kept
    for them), but gradients flow to the input images.
    """

    name: str = "features"
    max_size: Optional[int] = 256
    rgb_input: bool = True

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4:
            raise ValueError(f"{type(self).__name__} expects images [N, C, H, W], got {list(images.shape)}")
        x = images if images.is_floating_point() else images.float()
        x = x.to(torch.float32)
        if self.rgb_input:
            if x.shape[1] == 1:
                x = x.repeat(1, 3, 1, 1)
            elif x.shape[1] != 3:
                raise ValueError(f"{type(self).__name__} needs 1- or 3-channel images, got {x.shape[1]} channels")
        if self.max_size is not None:
            x = area_downsample(x, self.max_size)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(self.prepare(images))

    def distance(self, fa: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
        """Per-sample distance [N]: the sum of squared feature differences."""
        return (fa - fb).square().flatten(1).sum(dim=1)

    def freeze(self) -> "FeatureNet":
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    def describe(self) -> str:
        return self.name


# ----------------------------------------------------------------------------------------------------------


class VGG16LPIPS(FeatureNet):
    """NVIDIA's VGG16 LPIPS network (``vgg16.pt``), as the official projector calls it.

    The file is found with ``resolve_file('vgg16')``: an explicit local path, else the styleforge cache,
    else (only when allowed) a download from NVIDIA's CDN. It is called as
    ``net(images_0_255, resize_images=False, return_lpips=True)`` and returns one flat LPIPS feature vector
    per image; the squared distance of two vectors is the LPIPS distance.

    ``eager``: walk the file's graph in eager mode with styleforge's convolutions when a probe shows the same
    results (:mod:`styleforge.perceptual.scripted`); False runs the TorchScript runtime. Default: True unless
    the environment sets ``STYLEFORGE_VGG_EAGER=0``.

    Security note: a TorchScript file is *code* (``torch.jit.load`` runs the graph stored in it, and a
    crafted file can do anything the TorchScript runtime allows). Only use the official file from
    ``https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/vgg16.pt`` (or a copy you
    made of it); never load a ``vgg16.pt`` from an untrusted source.
    """

    name = "vgg"
    max_size = 256
    rgb_input = True

    def __init__(self, path: Optional[Union[str, Path]] = None, allow_download: Optional[bool] = None,
                 map_location: Union[str, torch.device] = "cpu", eager: Optional[bool] = None,
                 callback: Optional[Callback] = None):
        super().__init__()
        self.path = self.locate(path, allow_download, callback)
        try:
            with warnings.catch_warnings():  # torch >= 2.10 marks TorchScript deprecated; the official file is one
                warnings.simplefilter("ignore", DeprecationWarning)
                net = torch.jit.load(str(self.path), map_location=map_location)
        except Exception as e:  # torch raises RuntimeError / ValueError / zip errors for non-TorchScript files
            raise StyleforgeError(
                f"{self.path}: not a TorchScript file ({type(e).__name__}); {{vgg}} must be NVIDIA's vgg16.pt "
                f"from {self.url()}", also={"vgg": "the VGG16 file"}
            ) from None
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        if eager is None:  # STYLEFORGE_VGG_EAGER=0 runs the file as shipped (an escape hatch; see _wrap)
            eager = os.environ.get("STYLEFORGE_VGG_EAGER", "1").strip() != "0"
        self.net = self._wrap(net) if eager else net
        self.freeze()

    @staticmethod
    def _wrap(net: torch.jit.ScriptModule) -> nn.Module:
        """Run the file's graph eagerly with styleforge's convolutions when a probe shows the same features
        and input gradients as the TorchScript runtime (see :mod:`styleforge.perceptual.scripted`)."""
        from .scripted import eager_or_script

        dev = next((p.device for p in net.parameters()), torch.device("cpu"))
        gen = torch.Generator().manual_seed(0)
        probe = (torch.rand((1, 3, 64, 64), generator=gen) * 255).to(dev)
        return eager_or_script(net, probe, lambda m, x: m(x, resize_images=False, return_lpips=True))

    @property
    def runs_eager(self) -> bool:
        """True while calls take the eager walk (False: the TorchScript runtime, e.g. after a fallback)."""
        return bool(getattr(self.net, "uses_eager", False))

    @staticmethod
    def url() -> str:
        from ..utils.cache import KNOWN_FILES

        return KNOWN_FILES["vgg16"].url

    @staticmethod
    def locate(path: Optional[Union[str, Path]] = None, allow_download: Optional[bool] = None,
               callback: Optional[Callback] = None) -> Path:
        """Path of the VGG16 file; raises a one-line :class:`StyleforgeError` naming the file, the cache
        location and the URL when it is missing and downloads are not allowed (a download is reported to
        ``callback``)."""
        from ..utils.cache import resolve_file

        if path is not None:
            p = Path(path).expanduser()
            if not p.is_file():
                raise StyleforgeError(f"{p}: no such VGG16 file ({{name}}); get NVIDIA's vgg16.pt from "
                                      f"{VGG16LPIPS.url()}", param="vgg", label="the VGG16 file")
            return p
        return resolve_file("vgg16", allow_download, what="VGG16 file", callback=callback)

    @staticmethod
    def cached_path() -> Path:
        """Where the cache keeps ``vgg16.pt`` (whether or not it is there)."""
        from ..utils.cache import KNOWN_FILES, cache_dir

        return cache_dir() / KNOWN_FILES["vgg16"].filename

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, resize_images=False, return_lpips=True)

    def describe(self) -> str:
        how = "eager" if self.runs_eager else "TorchScript runtime"
        return f"vgg ({self.path.name}, LPIPS, {how})"


# ----------------------------------------------------------------------------------------------------------


class DiscriminatorFeatures(FeatureNet):
    """Intermediate activations of a StyleGAN2 discriminator as perceptual features.

    Images are mapped from [0, 255] to D's [-1, 1] range (and resized to D's resolution if they differ);
    the outputs of all of D's resolution blocks (img_resolution/2 down to 4x4) are taken, normalised over
    channels at every position as LPIPS does (:func:`lpips_normalize`). D's epilogue (minibatch stddev, the
    logit, the class projection) is not run, so the features of one image never depend on the others in
    the batch and conditional discriminators work without a label.
    """

    name = "discriminator"
    max_size = None  # D needs its own resolution
    rgb_input = False

    def __init__(self, D: nn.Module, blocks: Optional[Sequence[int]] = None):
        super().__init__()
        self.D = D.eval()
        self.block_resolutions = list(D.block_resolutions)
        self.taps = set(blocks) if blocks is not None else set(self.block_resolutions)
        self.freeze()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        D = self.D
        if x.shape[1] != D.img_channels:
            raise ValueError(f"the discriminator takes {D.img_channels}-channel images, got {x.shape[1]}")
        res = D.img_resolution
        if x.shape[2] != res or x.shape[3] != res:
            mode = "area" if x.shape[2] > res else "bilinear"
            x = F.interpolate(x, size=(res, res), mode=mode, **({} if mode == "area" else {"align_corners": False}))
        img = x * (2 / 255) - 1
        h = None
        acts: List[torch.Tensor] = []
        for r in self.block_resolutions:
            h, img = getattr(D, f"b{r}")(h, img)
            if r in self.taps:
                acts.append(h)
        return lpips_normalize(acts)

    def describe(self) -> str:
        return f"discriminator ({len(self.taps)} blocks, LPIPS-normalised)"


# ----------------------------------------------------------------------------------------------------------


class PixelLoss(FeatureNet):
    """Pixel loss: mean squared error of [0, 1] pixels (the features are the scaled pixels themselves), plus
    ``ssim_weight * (1 - SSIM)`` when ``ssim_weight > 0`` (then :meth:`distance` is no longer a plain sum of
    squares)."""

    name = "pixel"
    max_size = None
    rgb_input = False

    def __init__(self, ssim_weight: float = 0.0):
        super().__init__()
        self.ssim_weight = float(ssim_weight)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        n = x[0].numel()
        return x * (1.0 / (255.0 * math.sqrt(n)))

    def distance(self, fa: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
        d = super().distance(fa, fb)
        if self.ssim_weight > 0:
            scale = math.sqrt(fa[0].numel())
            d = d + self.ssim_weight * (1 - ssim(fa * scale, fb * scale, data_range=1.0))
        return d

    def describe(self) -> str:
        return "pixel (MSE" + (f" + {self.ssim_weight:g} x (1 - SSIM))" if self.ssim_weight > 0 else ")")


# ----------------------------------------------------------------------------------------------------------

# VGG16's convolution stack: numbers are 3x3 conv output channels (each followed by ReLU), 'M' a 2x2 max-pool.
