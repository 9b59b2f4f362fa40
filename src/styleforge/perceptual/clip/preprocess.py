"""Images into CLIP: the exact evaluation preprocessing, and a differentiable one for optimisation.

CLIP's own preprocessing (OpenAI's and open_clip's eval transform, same constants):

1. resize so that the shorter side is ``size`` (the longer one becomes ``int(size * long / short)``, truncated),
   with Pillow's bicubic filter (which antialiases when shrinking);
2. centre crop ``size`` x ``size`` (offsets ``int(round((h - size) / 2))``, ``int(round((w - size) / 2))``);
3. RGB, ``/ 255``, then ``(x - mean) / std`` per channel with :data:`OPENAI_MEAN` / :data:`OPENAI_STD`, in float32.

:func:`preprocess_image` does exactly that with Pillow (bit for bit open_clip's uint8 pixels and float input, on
the fixtures). :func:`preprocess_tensor` is the same sequence in torch for images that need gradients (a
generator's output): ``F.interpolate(mode="bicubic", antialias=True)`` on float pixels in place of Pillow's
resize, no rounding to 8 bits, no clipping (so gradients reach every pixel). Measured on the fixtures' three
photos at 224 px: after clipping and rounding it is within 5 grey levels of the exact path (mean 0.13-0.19);
unclipped, bicubic overshoot at hard edges reaches 15 levels beyond [0, 255] where Pillow clips (mean 0.28-0.30).
Same resize rule, crop and normalisation otherwise. Grayscale images are repeated to three channels.
"""

from __future__ import annotations

from typing import Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["OPENAI_MEAN", "OPENAI_STD", "resize_crop", "preprocess_image", "preprocess_tensor", "normalize"]

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def _resized_hw(h: int, w: int, size: int) -> Tuple[int, int]:
    if h <= w:
        return size, int(size * w / h)
    return int(size * h / w), size


def _crop_offsets(h: int, w: int, size: int) -> Tuple[int, int]:
    return int(round((h - size) / 2.0)), int(round((w - size) / 2.0))


def resize_crop(image, size: int) -> np.ndarray:
    """Steps 1-2 with Pillow: a PIL image or an HWC/HW uint8 array -> [size, size, 3] uint8 (RGB)."""
    import PIL.Image

    im = image if isinstance(image, PIL.Image.Image) else PIL.Image.fromarray(np.asarray(image))
    im = im.convert("RGB")
    w, h = im.size
    rh, rw = _resized_hw(h, w, size)
    im = im.resize((rw, rh), PIL.Image.BICUBIC)
    top, left = _crop_offsets(rh, rw, size)
    return np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.uint8)


def normalize(x01: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] in [0, 1] -> CLIP's input: ``(x - mean) / std`` per channel."""
    mean = torch.tensor(OPENAI_MEAN, dtype=x01.dtype, device=x01.device).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD, dtype=x01.dtype, device=x01.device).view(1, 3, 1, 1)
    return (x01 - mean) / std


def preprocess_image(image, size: int) -> torch.Tensor:
    """CLIP's exact evaluation preprocessing of one image (PIL or uint8 array) -> [3, size, size] float32."""
    px = torch.from_numpy(resize_crop(image, size).copy()).permute(2, 0, 1).to(torch.float32) / 255
    return normalize(px[None])[0]


def preprocess_tensor(images: torch.Tensor, size: int, value_range: Union[Tuple[float, float], None] = (-1.0, 1.0)
                      ) -> torch.Tensor:
    """Differentiable preprocessing of a batch [N, C, H, W] (C = 1 or 3) with values in ``value_range``
    (``(-1, 1)``: a generator's output; ``(0, 255)``: pixels) -> CLIP's input [N, 3, size, size]."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images [N, 1 or 3, H, W], got {list(images.shape)}")
    x = images.to(torch.float32)
    if value_range is not None:
        lo, hi = value_range
        x = (x - lo) / (hi - lo)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    h, w = x.shape[2], x.shape[3]
    rh, rw = _resized_hw(h, w, size)
    if (rh, rw) != (h, w):
        try:
            x = F.interpolate(x, size=(rh, rw), mode="bicubic", align_corners=False, antialias=True)
        except (NotImplementedError, RuntimeError):
            if x.device.type != "mps":  # some torch builds lack the antialiased bicubic kernel on MPS: resize on
                raise                   # the CPU (still differentiable: .to() passes the gradient back)
            x = F.interpolate(x.cpu(), size=(rh, rw), mode="bicubic", align_corners=False, antialias=True).to(x.device)
    top, left = _crop_offsets(rh, rw, size)
    x = x[:, :, top: top + size, left: left + size]
    return normalize(x)
