"""Images into detector features: reals from a dataset, fakes from a generator; streamed into sinks; cached.

Images reach the detector as the official code feeds them: uint8 NCHW at the native resolution, grayscale repeated
to 3 channels; fakes are quantised ``(img * 127.5 + 128).clamp(0, 255)`` to uint8 first. ``resize="legacy"`` leaves
the resize to the detector (the Inception file resizes to 299 inside: the official numbers); ``resize="clean"``
is clean-fid's path: every channel resized to the detector's input size (Inception 299, VGG16 224) by PIL bicubic
in float mode ``F`` (clipped to [0, 255], not quantised) before the detector, whose own resize is then the
identity.

Features go to a sink as they come: :class:`~styleforge.metrics.formulas.MeanCov` (FID), :class:`FeatureFile`
(KID, PR: rows appended to a ``.npy`` file, read back memory-mapped), or any object with ``update(batch)``. Real-set results
are cached (:class:`RealCache`): an npz of mean/covariance or an npy of features, keyed by the dataset's content,
the items used, the detector's identity, its call, the resize mode and the number of images; written atomically,
so an interrupted computation never leaves a partial entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import zipfile
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional

import numpy as np
import torch
import torch.utils.data

from ..perceptual.detectors import detector_identity
from ..utils.fileio import atomic_path
from ..utils.progress import Reporter

__all__ = ["sample_images", "quantize", "clean_resize", "detector_input", "FeatureFile", "RealCache",
           "dataset_fingerprint", "real_batches", "fake_batches", "run_detector", "CLEAN_SIZE"]

CLEAN_SIZE = 299  # Inception's input size: clean-fid resizes to it outside the network
CLEAN_SIZES = {"inception": 299, "vgg16": 224}  # each detector's own input size (the files resize to it inside)
RESIZE_MODES = ("legacy", "clean")
CACHE_VERSION = 1


def sample_images(G: torch.nn.Module, z: torch.Tensor, c: torch.Tensor, psi: float = 1.0,
                  noise_mode: str = "random") -> torch.Tensor:
    """Images in [-1, 1] from any generator family with StyleGAN2's call (the one place metrics call G)."""
    return G(z, c, truncation_psi=psi, noise_mode=noise_mode)


def quantize(img: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] -> uint8 as the official metrics quantise it."""
    return (img * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def clean_resize(images: torch.Tensor, size: int = CLEAN_SIZE) -> torch.Tensor:
    """clean-fid's resize: each channel of uint8 images [N, C, H, W] to ``size`` x ``size`` by PIL bicubic in float
    mode, clipped to [0, 255] -> float32 [N, C, size, size] (on the CPU)."""
    import PIL.Image

    arr = images.detach().cpu().numpy()
    out = np.empty([arr.shape[0], arr.shape[1], size, size], dtype=np.float32)
    for i in range(arr.shape[0]):
        for ch in range(arr.shape[1]):
            im = PIL.Image.fromarray(arr[i, ch].astype(np.float32))
            out[i, ch] = np.asarray(im.resize((size, size), resample=PIL.Image.BICUBIC)).clip(0, 255)
    return torch.from_numpy(out)


def detector_input(images: torch.Tensor, resize: str, size: int = CLEAN_SIZE) -> torch.Tensor:
    """uint8 [N, C, H, W] -> what the detector gets: 3 channels; clean-resized to ``size`` (the detector's input
    size: 299 for Inception, 224 for VGG16) in ``clean`` mode."""
    if images.shape[1] == 1:
        images = images.repeat([1, 3, 1, 1])
    if resize == "clean":
        images = clean_resize(images, size)
    return images


def run_detector(det: torch.nn.Module, images: torch.Tensor, det_kwargs: Dict, resize: str,
                 device, size: int = CLEAN_SIZE) -> torch.Tensor:
    with torch.no_grad():
        return det(detector_input(images, resize, size).to(device), **det_kwargs)


# -- image streams ----------------------------------------------------------------------------------------------


def real_batches(dataset, num: int, batch_size: int, num_workers: int = 0) -> Iterator[torch.Tensor]:
    """The first ``num`` items of ``dataset`` (as the official code takes them: in order, no flips added) as
    uint8 [B, C, H, W] batches; decoded by ``num_workers`` DataLoader processes when > 0."""
    if num_workers > 0:
        subset = torch.utils.data.Subset(dataset, range(num))
        loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, num_workers=num_workers)
        for images, _labels in loader:
            yield images
        return
    for start in range(0, num, batch_size):
        imgs = [dataset[i][0] for i in range(start, min(start + batch_size, num))]
        yield torch.from_numpy(np.stack(imgs))


def fake_batches(G: torch.nn.Module, num: int, batch_size: int, rng: np.random.RandomState,
                 label_source: Optional[Callable[[np.random.RandomState], np.ndarray]], psi: float,
                 noise_mode: str, device) -> Iterator[torch.Tensor]:
    """``num`` generated images as uint8 batches: z ~ N(0, I) and labels (``label_source(rng)``: a random real
    label, as official; None: no labels) drawn from ``rng``."""
    c_dim = int(getattr(G, "c_dim", 0))
    for start in range(0, num, batch_size):
        b = min(batch_size, num - start)
        z = torch.from_numpy(rng.standard_normal([b, G.z_dim]).astype(np.float32)).to(device)
        if label_source is not None and c_dim > 0:
            c = torch.from_numpy(np.stack([label_source(rng) for _ in range(b)]).astype(np.float32)).to(device)
        else:
            c = torch.zeros([b, c_dim], device=device)
        with torch.no_grad():
            yield quantize(sample_images(G, z, c, psi, noise_mode))


# -- sinks ------------------------------------------------------------------------------------------------------


class FeatureFile:
    """Feature rows appended to a ``.npy`` file at ``path`` (its header written at the first batch, when the width
    is known) with plain writes, so memory stays bounded for any number of images; ``array()`` maps it
    read-only."""

    def __init__(self, path: Path, num: int, dtype=np.float32):
        self.path, self.num, self.dtype = Path(path), int(num), np.dtype(dtype)
        self._f = None
        self.count = 0

    def update(self, x) -> None:
        x = torch.as_tensor(x).detach().to("cpu", torch.float32).numpy().astype(self.dtype)
        if self._f is None:
            self._f = open(self.path, "wb")
            header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                      "shape": (self.num, x.shape[1])}
            np.lib.format.write_array_header_1_0(self._f, header)
        if self.count + x.shape[0] > self.num:
            raise ValueError(f"more than {self.num} feature rows")
        self._f.write(np.ascontiguousarray(x).tobytes())
        self.count += x.shape[0]

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def array(self) -> np.ndarray:
        self.close()
        if self.count != self.num:
            raise ValueError(f"{self.path}: {self.count} of {self.num} feature rows written")
        return np.load(self.path, mmap_mode="r")


# -- the real-set cache -----------------------------------------------------------------------------------------


_FOLDER_HASHES: Dict[str, str] = {}  # listing signature (names, sizes, mtimes) -> content hash, for this process


def dataset_fingerprint(dataset, reporter: Optional[Reporter] = None) -> str:
    """A hash of the dataset's content and of the items it yields: for a zip, every member's CRC-32 and size from
    the zip directory (free); for a folder, the sha256 of every file's bytes (read once per process and listing,
    reported as a stage); plus the dataset's item selection (subset, mirrored copies) and its image shape."""
    h = hashlib.sha256()
    path = Path(dataset.path)
    names = list(dataset.fnames) + ["dataset.json"]
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            infos = {i.filename: i for i in zf.infolist()}
            for name in names:
                info = infos.get(name)
                h.update(f"{name}\0{info.CRC if info else -1}\0{info.file_size if info else -1}\n".encode())
    else:
        listing = hashlib.sha256(str(path.resolve()).encode())
        for name in names:
            st = (path / name).stat() if (path / name).is_file() else None
            listing.update(f"{name}\0{st.st_size if st else -1}\0{st.st_mtime_ns if st else -1}\n".encode())
        content = _FOLDER_HASHES.get(listing.hexdigest())
        if content is None:
            rep = reporter or Reporter()
            ch = hashlib.sha256()
            with rep.stage("hashing dataset", total=len(names), unit="file") as advance:
                for name in names:
                    f = path / name
                    ch.update(f"{name}\0".encode())
                    if f.is_file():
                        with open(f, "rb") as fh:
                            for block in iter(lambda: fh.read(1 << 20), b""):
                                ch.update(block)
                    ch.update(b"\n")
                    advance()
            content = _FOLDER_HASHES[listing.hexdigest()] = ch.hexdigest()
        h.update(content.encode())
    h.update(json.dumps(dataset.image_shape).encode())
    raw_idx = getattr(dataset, "_raw_idx", None)  # styleforge's ImageDataset: the subset and mirror choice
    flips = getattr(dataset, "_xflip", None)
    h.update(str(len(dataset)).encode())
    if raw_idx is not None:
        h.update(np.ascontiguousarray(raw_idx, dtype=np.int64).tobytes())
    if flips is not None:
        h.update(np.ascontiguousarray(flips, dtype=np.uint8).tobytes())
    return h.hexdigest()


class RealCache:
    """Real-set statistics under ``folder`` (None: no caching). Entries are named
    ``<dataset>-<what>-<key[:20]>.npz|.npy``; the key hashes :func:`dataset_fingerprint`, the detector's identity and
    call, the resize mode and the number of images."""

    def __init__(self, folder: Optional[Path], reporter: Reporter):
        self.folder = Path(folder) if folder is not None else None
        self.rep = reporter
        self._fingerprints: Dict[int, str] = {}

    def key(self, dataset, det: torch.nn.Module, det_kwargs: Dict, resize: str, num: int, what: str) -> str:
        fp = self._fingerprints.get(id(dataset))
        if fp is None:
            fp = self._fingerprints[id(dataset)] = dataset_fingerprint(dataset, self.rep)
        desc = dict(version=CACHE_VERSION, dataset=fp, detector=detector_identity(det), call=sorted(det_kwargs.items()),
                    resize=resize, num=int(num), what=what)
        return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()

    def path(self, dataset, key: str, what: str, ext: str) -> Optional[Path]:
        if self.folder is None:
            return None
        stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(getattr(dataset, "name", "data")))
        return self.folder / f"{stem}-{what}-{key[:20]}{ext}"

    def hit(self, path: Optional[Path]) -> bool:
        if path is not None and path.is_file():
            self.rep.note(f"real-set statistics from the cache: {path}")
            return True
        return False

    @contextlib.contextmanager
    def writing(self, path: Optional[Path]) -> Iterator[Optional[Path]]:
        """A temporary path renamed to ``path`` when the block succeeds (deleted otherwise); None when not caching."""
        if path is None:
            yield None
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            yield tmp


def save_meancov(tmp: Path, mu: np.ndarray, sigma: np.ndarray, count: int) -> None:
    with open(tmp, "wb") as f:
        np.savez(f, mu=mu, sigma=sigma, count=np.int64(count))


def load_meancov(path: Path):
    with np.load(path) as z:
        return z["mu"], z["sigma"], int(z["count"])


def default_cache_dir() -> Path:
    from ..utils.cache import cache_dir

    return cache_dir() / "metrics"
