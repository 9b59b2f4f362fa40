"""Images in and out of the networks: float <-> uint8 conversions, grids, and reading image files.

The three float -> uint8 conversions differ on purpose, each reproducing one official script's pixels:

==========================  ==============================================  ===========================
function                    formula                                         matches
==========================  ==============================================  ===========================
:func:`uint8_as_generate`   ``clamp(x * 127.5 + 128, 0, 255)``, truncated   official ``generate.py``
:func:`uint8_as_projector`  ``clamp((x + 1) * 127.5, 0, 255)``, truncated   official ``projector.py``
:func:`uint8_as_training`   ``clamp(round((x + 1) * 127.5), 0, 255)``       official training grids
==========================  ==============================================  ===========================

:func:`read_image` is the one reader of image files (photos to align, targets to project, dataset images):
EXIF orientation applied, and high-depth images (16-bit, 32-bit integer, float) scaled to 8 bits by one rule
(:func:`high_depth_to_8bit`) instead of clipped. :func:`image_extensions` says which files are images, and
:func:`find_images` lists the images of a folder (recursively, hidden files and an output folder skipped), each
with a key for its outputs.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def uint8_as_generate(img: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] float in ~[-1, 1] -> [N, H, W, C] uint8 exactly as official generate.py converts."""
    x = (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return x.cpu().numpy()


def to_image_range(img: torch.Tensor) -> torch.Tensor:
    """Synthesis output (about [-1, 1]) -> [0, 255] float, the official projector's conversion (the projector
    compares targets and images in this range)."""
    return (img + 1) * (255 / 2)


def uint8_as_projector(img: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] synthesis output -> [N, H, W, C] uint8 as the official projector saves proj.png:
    (x + 1) * 127.5, clamp, truncate (not generate.py's +128)."""
    return to_image_range(img).permute(0, 2, 3, 1).clamp(0, 255).to(torch.uint8).cpu().numpy()


def uint8_as_training(img: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> [N, H, W, C] uint8 as the official training loop saves its grids:
    (x + 1) * 127.5, rounded, clamped."""
    x = ((img.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def make_grid(images: Sequence[np.ndarray], cols: Optional[int] = None, pad: int = 0) -> np.ndarray:
    """Tile equally sized HWC uint8 images into one image (row-major; ``cols`` default: a square-ish grid)."""
    n = len(images)
    if n == 0:
        raise ValueError("no images to tile")
    cols = cols or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    h, w, c = images[0].shape
    grid = np.zeros((rows * h + (rows - 1) * pad, cols * w + (cols - 1) * pad, c), dtype=np.uint8)
    for i, im in enumerate(images):
        r, q = divmod(i, cols)
        grid[r * (h + pad): r * (h + pad) + h, q * (w + pad): q * (w + pad) + w] = im
    return grid


def high_depth_to_8bit(im):
    """A 16-bit, 32-bit integer or float grayscale PIL image -> 8-bit L, scaled rather than clipped: integer
    images above 255 as 16-bit (x / 257, so 65535 -> 255; above 65535 relative to their maximum), float images
    in [0, 1] times 255."""
    import PIL.Image

    a = np.asarray(im, dtype=np.float64)
    top = a.max() if a.size else 0.0
    if im.mode == "F" and top <= 1.0:
        a = a * 255.0
    elif im.mode.startswith("I;16") or top > 255:
        a = a / (65535.0 if top <= 65535 else top) * 255.0
    return PIL.Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")


def read_image(path_or_file: Union[str, os.PathLike, "object"], mode: Optional[str] = None, exif: bool = True):
    """Open and decode one image file as a PIL image: EXIF orientation applied (``exif``), high-depth modes
    made 8-bit (:func:`high_depth_to_8bit`), then converted to ``mode`` (``RGB``, ``L``...) when given.
    Raises what PIL raises for an unreadable file (OSError, ValueError, DecompressionBombError); callers
    turn it into their own message."""
    import PIL.Image
    import PIL.ImageOps

    with PIL.Image.open(path_or_file) as src:
        src.load()
        im = (PIL.ImageOps.exif_transpose(src) or src) if exif else src
        if im.mode in HIGH_DEPTH_MODES:
            im = high_depth_to_8bit(im)
        if mode is not None and im.mode != mode:
            im = im.convert(mode)
        if im is src:
            im = src.copy()  # closing the file would release the decoded pixels
    return im


def image_extensions() -> frozenset:
    """File extensions (lower case, with the dot) of every format this Pillow can decode; formats it can only
    identify (its stub plugins: HDF5, GRIB, BUFR, WMF on Linux) are left out."""
    import PIL.Image
    import PIL.ImageFile

    PIL.Image.init()

    def decodes(fmt: str) -> bool:
        factory = PIL.Image.OPEN.get(fmt, (None,))[0]
        return factory is not None and not (isinstance(factory, type)
                                            and issubclass(factory, PIL.ImageFile.StubImageFile))

    return frozenset(ext.lower() for ext, fmt in PIL.Image.registered_extensions().items() if decodes(fmt))


def find_images(folder: Union[str, os.PathLike], exclude: Optional[Union[str, os.PathLike]] = None
                ) -> Tuple[List[Tuple[Path, str]], int]:
    """The image files below ``folder``, searched recursively and sorted by their relative path, each with its
    key: that path without the extension (``sub/a``); and the number of other files there. Hidden files and
    folders (``.ipynb_checkpoints``, temporary files) and everything inside ``exclude`` (an output folder
    placed in the source) are skipped. Paths start with ``folder`` as given. Keys are not yet unique across
    formats (``a.png``, ``a.jpg``): see :func:`unique_keys`."""
    root = Path(folder)
    excl = Path(exclude).resolve() if exclude is not None else None
    exts = image_extensions()
    found: List[Tuple[Tuple[str, ...], Path]] = []
    others = 0
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        dirnames[:] = [n for n in dirnames if not n.startswith(".") and not _inside((d / n).resolve(), excl)]
        for n in filenames:
            if n.startswith("."):
                continue
            p = d / n
            if os.path.splitext(n)[1].lower() in exts:
                found.append((p.relative_to(root).parts, p))
            else:
                others += 1
    found.sort()
    return [(p, p.relative_to(root).with_suffix("").as_posix()) for _, p in found], others


def unique_keys(items: Iterable[Tuple[Path, str]]) -> List[Tuple[Path, str]]:
    """``(path, key)`` pairs with keys made unique: a key that several files share (``a.png``, ``a.jpg``) gets
    each file's extension appended (``a_png``, ``a_jpg``)."""
    items = list(items)
    count = Counter(k for _, k in items)
    return [(p, f"{k}_{p.suffix.lstrip('.').lower()}" if count[k] > 1 and p.suffix else k) for p, k in items]


def _inside(path: Path, folder: Optional[Path]) -> bool:
    if folder is None:
        return False
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False
