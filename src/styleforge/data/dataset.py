"""Reading a dataset: :class:`ImageDataset` over a zip or folder of images (the official layout, or any images).

Items are ``(uint8 [C, H, W] array, float32 label)``, as the official training code reads them, so the training
loop, the metrics and the baselines share one reader. Decoding goes through :func:`styleforge.images.read_image`
(16-bit and float images scaled to 8 bits by its rule; images are taken as stored, without EXIF rotation, as the
official tools do), or through pyspng for 8-bit PNGs when it is installed.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np
import torch.utils.data

from ..errors import StyleforgeError
from ..images import read_image
from .files import (
    DATASET_JSON, PNG_COLOR_MODES, Files, decoded_mode, is_power_of_two, nearest_powers_of_two, png_header,
    short_reason,
)
from .labels import folder_classes, read_labels_json

try:  # optional fast PNG decoder, as used by the official reader
    import pyspng
except ImportError:  # pragma: no cover - depends on the environment
    pyspng = None

PathLike = Union[str, os.PathLike]

FIX = "re-create it with the dataset tool"


class ImageDataset(torch.utils.data.Dataset):
    """Images of an official-layout dataset (zip or folder) as ``(uint8 [C, H, W] array, float32 label)``.

    * Any folder or zip of images works; files are listed recursively in sorted order. All images must be
      square, of one power-of-two size and one channel count (checked from the file headers up front).
    * Labels come from ``dataset.json`` when it has them; otherwise, with ``folder_labels=True``, from
      first-level class subfolders (an error if an image is not in one); with ``folder_labels="auto"`` from class
      subfolders only when the dataset has no ``dataset.json`` at all and every image sits in one of at least two
      first-level subfolders (an ImageFolder), else none. Int labels are returned one-hot, float vectors as they
      are. Without labels (or with ``use_labels=False``) the label is an empty float32 array.
    * ``max_size`` keeps a random subset (``numpy.random.RandomState(random_seed)``, kept in sorted order);
      ``xflip=True`` then appends a horizontally mirrored copy of every image (so ``len`` doubles).
    * Picklable for DataLoader workers: a zip is opened lazily, once per process.
    """

    def __init__(
        self,
        path: PathLike,
        resolution: Optional[int] = None,
        use_labels: bool = True,
        max_size: Optional[int] = None,
        xflip: bool = False,
        random_seed: int = 0,
        folder_labels: Union[bool, str] = False,
    ):
        self.path = Path(path)
        self._files = Files(self.path, "path", "the dataset path")
        try:
            self._names = self._files.image_names()
            if not self._names:
                raise StyleforgeError(f"{self.path}: no images in this dataset; create one with the dataset tool")
            self._modes = self._scan_shapes()
            shape = self._shape
            if shape[1] != shape[2]:
                raise StyleforgeError(
                    f"{self._files.display(self._names[0])} is {shape[2]}x{shape[1]}, not square; "
                    f"{FIX} (transform center-crop)")
            if not is_power_of_two(shape[1]):
                raise StyleforgeError(
                    f"{self.path}: images are {shape[1]}x{shape[1]}, but training needs a power-of-two size; "
                    f"{FIX} (resolution {nearest_powers_of_two(shape[1])})")
            if resolution is not None and int(resolution) != shape[1]:
                raise StyleforgeError(
                    f"{self.path}: images are {shape[1]}x{shape[1]}, not the requested {resolution}x{resolution}; "
                    f"{FIX} (resolution {resolution})")
            raw = self._load_labels(folder_labels)
        except BaseException:
            self._files.close()
            raise
        self._raw_labels = raw if use_labels else None
        self._use_labels = use_labels
        if self._raw_labels is None:
            self._label_shape = [0]
        elif self._raw_labels.dtype == np.int64:
            self._label_shape = [int(self._raw_labels.max()) + 1]
        else:
            self._label_shape = list(self._raw_labels.shape[1:])

        n = len(self._names)
        idx = np.arange(n, dtype=np.int64)
        if max_size is not None and max_size < 1:
            raise StyleforgeError(f"{self.path}: max_size must be at least 1 (got {max_size})")
        if max_size is not None and max_size < n:
            rnd = np.random.RandomState(random_seed)
            idx = np.sort(rnd.permutation(n)[:max_size])
        self._xflip = np.zeros(len(idx), dtype=np.uint8)
        if xflip:
            idx = np.concatenate([idx, idx])
            self._xflip = np.concatenate([self._xflip, np.ones_like(self._xflip)])
        self._raw_idx = idx

    # -- setup ----------------------------------------------------------------------------------------------------

    def _probe(self, name: str) -> Tuple[int, int, str]:
        """(width, height, decoded mode) from the file header."""
        png = png_header(self._files.read_head(name, 33))
        if png is not None and png[3] in PNG_COLOR_MODES:
            return png[0], png[1], PNG_COLOR_MODES[png[3]]
        with self._files.open_image(name) as im:
            return im.size[0], im.size[1], decoded_mode(im.mode)

    def _scan_shapes(self) -> List[str]:
        modes = []
        first = None
        for name in self._names:
            try:
                w, h, mode = self._probe(name)
            except StyleforgeError:
                raise
            except Exception as e:
                raise StyleforgeError(f"{self._files.display(name)}: unreadable image ({short_reason(e)}); "
                                      f"{FIX} (it skips bad files)") from None
            if first is None:
                first = (name, w, h, mode)
            elif (w, h) != first[1:3]:
                raise StyleforgeError(
                    f"{self.path}: images have different sizes ({first[0]} is {first[1]}x{first[2]}, {name} is {w}x{h}); "
                    f"{FIX} (resolution N)")
            elif len(mode) != len(first[3]):
                raise StyleforgeError(
                    f"{self.path}: images have different channel counts ({first[0]} is {first[3]}, {name} is {mode}); "
                    f"{FIX} (RGB or grayscale)")
            modes.append(mode)
        self._shape = [len(first[3]), first[2], first[1]]
        return modes

    def _load_labels(self, folder_labels: Union[bool, str]) -> Optional[np.ndarray]:
        label_map = read_labels_json(self._files)
        where = self._files.display(DATASET_JSON)
        if label_map is None:
            if not folder_labels:
                return None
            if folder_labels == "auto":  # an ImageFolder: no dataset.json, every image in a class subfolder
                if self._files.exists(DATASET_JSON):
                    return None
                classes = folder_classes(self._names, min_classes=2)
                if classes is None:
                    return None
            else:
                classes = folder_classes(self._names, min_classes=1)
            if classes is None:
                raise StyleforgeError(
                    f"{self.path}: folder labels need every image in a first-level class subfolder "
                    "(<class>/<image>); move the images or use labels from dataset.json")
            label_map = classes[1]
        values = []
        for name in self._names:
            if name not in label_map:
                raise StyleforgeError(f"{where}: no label for {name}; {FIX}")
            values.append(label_map[name])
        if isinstance(values[0], list):
            return np.asarray(values, dtype=np.float32).reshape(len(values), -1)
        return np.asarray(values, dtype=np.int64)

    # -- properties -----------------------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def image_shape(self) -> List[int]:
        return list(self._shape)

    @property
    def num_channels(self) -> int:
        return self._shape[0]

    @property
    def resolution(self) -> int:
        return self._shape[1]

    @property
    def label_shape(self) -> List[int]:
        return list(self._label_shape)

    @property
    def label_dim(self) -> int:
        return int(self._label_shape[0])

    @property
    def has_labels(self) -> bool:
        return any(x != 0 for x in self._label_shape)

    @property
    def has_onehot_labels(self) -> bool:
        return self._raw_labels is not None and self._raw_labels.dtype == np.int64

    @property
    def num_raw_images(self) -> int:
        return len(self._names)

    @property
    def fnames(self) -> List[str]:
        """File names of the images, in raw index order."""
        return list(self._names)

    # -- access ---------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._raw_idx)

    def _load_raw_image(self, raw_idx: int) -> np.ndarray:
        name = self._names[raw_idx]
        try:
            data = self._files.read(name)
            png = png_header(data[:33])
            if pyspng is not None and png is not None and png[2] == 8 and png[3] in (0, 2, 6):
                arr = pyspng.load(data)
            else:  # a writable copy (torch warns on read-only arrays)
                arr = np.array(read_image(io.BytesIO(data), self._modes[raw_idx], exif=False))
        except StyleforgeError:
            raise
        except Exception as e:
            raise StyleforgeError(f"{self._files.display(name)}: cannot decode image ({short_reason(e)}); "
                                  f"{FIX}, which skips unreadable files") from None
        if arr.ndim == 2:
            arr = arr[:, :, np.newaxis]
        arr = arr.transpose(2, 0, 1)
        if list(arr.shape) != self._shape or arr.dtype != np.uint8:
            raise StyleforgeError(f"{self._files.display(name)}: decoded as {list(arr.shape)} {arr.dtype}, expected "
                                  f"{self._shape} uint8; {FIX}")
        return arr

    def get_label(self, idx: int) -> np.ndarray:
        """float32 label of item ``idx``: one-hot for class labels, the vector otherwise, empty without labels."""
        if self._raw_labels is None:
            return np.zeros([0], dtype=np.float32)
        value = self._raw_labels[self._raw_idx[idx]]
        if self._raw_labels.dtype == np.int64:
            onehot = np.zeros(self._label_shape, dtype=np.float32)
            onehot[int(value)] = 1
            return onehot
        return value.astype(np.float32).copy()

    def __getitem__(self, idx: int) -> Tuple[np.ndarray, np.ndarray]:
        if idx < 0:
            idx += len(self)
        if not 0 <= idx < len(self):
            raise IndexError(f"index {idx} out of range for a dataset of {len(self)} images")
        image = self._load_raw_image(int(self._raw_idx[idx]))
        if self._xflip[idx]:
            image = image[:, :, ::-1]
        return np.ascontiguousarray(image), self.get_label(idx)

    def close(self) -> None:
        self._files.close()

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        return (f"ImageDataset({str(self.path)!r}, images={len(self)}, shape={self.image_shape}, "
                f"label_dim={self.label_dim})")


def open_dataset(path: PathLike, cond: bool = True, mirror: bool = False) -> ImageDataset:
    """The training view of a dataset: labels when ``cond`` (from ``dataset.json``, or the class subfolders of an
    ImageFolder: ``folder_labels="auto"``), mirrored copies appended when ``mirror``."""
    return ImageDataset(path, use_labels=cond, xflip=mirror, folder_labels="auto")
