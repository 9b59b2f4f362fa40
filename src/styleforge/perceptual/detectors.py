"""Feature detectors for the metrics: NVIDIA's TorchScript Inception and VGG16 files, loaded the one way.

The official metrics call two TorchScript files (``styleforge.utils.cache.KNOWN_FILES``):

- ``inception`` (``inception-2015-12-05.pt``): ``det(images, return_features=True)`` -> [N, 2048] pool features
  (FID, KID); ``det(images, no_output_bias=True)`` -> [N, 1008] class probabilities (IS). Images are NCHW in
  [0, 255], uint8 or float, at any size: the file resizes to 299 x 299 itself.
- ``vgg16`` (``vgg16.pt``): ``det(images, return_features=True)`` -> [N, 4096] (precision/recall);
  ``det(images, resize_images=False, return_lpips=True)`` -> flat LPIPS features (PPL, the projector).

:func:`load_detector` finds the file (a local path, the cache, or -- only when allowed -- NVIDIA's URL, through
:func:`styleforge.utils.cache.resolve_file`), loads it with ``torch.jit.load`` and returns a :class:`Detector`,
which calls the file and carries its identity (``digest``: the file's sha256, used to key cached real-set
statistics). A missing file is one :class:`~styleforge.errors.StyleforgeError` line naming the file, where it goes
and its URL; a file that is not TorchScript is one line too. Any module with the same call signature can stand
in (:func:`styleforge.perceptual.standins.save_detector_standin` writes a tiny one): :func:`detector_identity`
names any module.

Security note: a TorchScript file is code (loading it runs the graph stored in it). Only load the official files
or copies you made of them.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from ..errors import StyleforgeError
from ..utils.progress import Callback

__all__ = ["DETECTOR_KINDS", "Detector", "load_detector", "detector_identity"]

DETECTOR_KINDS = {
    "inception": "Inception-v3 feature network (FID, KID, IS)",
    "vgg16": "VGG16 feature network (precision/recall, PPL)",
}
"""kind -> what it is; the kind is also the file's name in ``utils.cache.KNOWN_FILES``."""


class Detector(nn.Module):
    """A loaded detector file: calls go to the TorchScript module; ``kind``, ``path`` and ``digest`` (sha256 of
    the file) say what it is."""

    def __init__(self, net: nn.Module, kind: str, path: Optional[Path] = None, digest: Optional[str] = None):
        super().__init__()
        self.net = net
        self.kind = kind
        self.path = path
        self.digest = digest

    def forward(self, *args, **kwargs):
        return self.net(*args, **kwargs)

    def describe(self) -> str:
        name = self.path.name if self.path is not None else type(self.net).__name__
        return f"{name} (sha256 {self.digest[:12]})" if self.digest else name


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def detector_identity(det: nn.Module) -> str:
    """A stable name for a detector, for cache keys and records: a loaded file's sha256; otherwise the sha256 of
    the module's class name and its parameters and buffers (so two stand-ins built alike share it)."""
    digest = getattr(det, "digest", None)
    if isinstance(digest, str) and digest:
        return digest
    h = hashlib.sha256(type(det).__name__.encode())
    original = getattr(det, "original_name", None)  # a TorchScript module's Python class name
    if isinstance(original, str):
        h.update(original.encode())
    for name, t in sorted(det.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def load_detector(kind: str, spec: Optional[Union[str, os.PathLike]] = None, allow_download: Optional[bool] = None,
                  device: Union[str, torch.device] = "cpu", callback: Optional[Callback] = None) -> Detector:
    """Load the ``kind`` detector (``inception`` or ``vgg16``) from ``spec``: a local path, a cache name or a URL
    (None: the official file, from the cache, or downloaded from NVIDIA when ``allow_download`` or
    ``STYLEFORGE_ALLOW_DOWNLOAD=1``; a download is reported to ``callback``). Returns a frozen, eval-mode
    :class:`Detector` on ``device``."""
    from ..utils.cache import KNOWN_FILES, cache_dir, fetch_command, resolve_file

    if kind not in DETECTOR_KINDS:
        raise StyleforgeError(f"{kind}: unknown detector; choose one of {', '.join(DETECTOR_KINDS)}")
    known = KNOWN_FILES[kind]
    if spec is None:
        path = resolve_file(kind, allow_download, what=f"{kind} detector file", callback=callback)
    else:
        text = os.fspath(spec)
        p = Path(text).expanduser()
        if p.is_file():
            path = p
        elif text.lower() in KNOWN_FILES or "://" in text:
            path = resolve_file(text, allow_download, what=f"{kind} detector file", callback=callback)
        else:
            raise StyleforgeError(
                f"{p}: no such file; {{{kind}}} must be NVIDIA's {known.filename} (put it at "
                f"{cache_dir() / known.filename}: '{fetch_command(kind)}' does that, or allow the download from "
                f"{known.url})",
                also={kind: f"the {kind} detector file"},
            )
    try:
        with warnings.catch_warnings():  # torch >= 2.10 marks TorchScript deprecated; the official files are
            warnings.simplefilter("ignore", DeprecationWarning)
            net = torch.jit.load(str(path), map_location=torch.device(device))
    except Exception as e:  # RuntimeError / ValueError / zip errors for files that are not TorchScript
        raise StyleforgeError(
            f"{path}: not a TorchScript file ({type(e).__name__}); {{{kind}}} must be NVIDIA's {known.filename} "
            f"from {known.url}", also={kind: f"the {kind} detector file"},
        ) from None
    net.eval()
    for p_ in net.parameters():
        p_.requires_grad_(False)
    return Detector(net, kind, Path(path), _sha256(Path(path))).eval()
