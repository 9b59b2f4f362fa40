"""Atomic output files: write to a temporary name in the same folder, then rename over the target.

A killed job therefore never leaves a half-written PNG, npz or checkpoint under its final name.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Union

from ..errors import StyleforgeError

PathLike = Union[str, os.PathLike]


_FILE_MODE = None


def _file_mode() -> int:
    """Permissions of a newly created file under the process umask (what open() would give), e.g. 0o644."""
    global _FILE_MODE
    if _FILE_MODE is None:
        mask = os.umask(0)
        os.umask(mask)
        _FILE_MODE = 0o666 & ~mask
    return _FILE_MODE


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it to ``path``, on failure delete it."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as e:
        raise StyleforgeError(f"{parent}: cannot write here ({e.strerror}); choose a writable --outdir") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _file_mode())  # mkstemp makes 0600 files; results should be as readable as open()'s
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def ensure_outdir(outdir: PathLike) -> Path:
    """Create ``outdir`` and check that it is writable, with a one-line error otherwise."""
    outdir = Path(outdir)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StyleforgeError(f"{outdir}: cannot create output folder ({e.strerror}); choose another --outdir") from None
    if not os.access(outdir, os.W_OK | os.X_OK):
        raise StyleforgeError(f"{outdir}: output folder is not writable; choose another --outdir")
    return outdir


def save_image(img, path: PathLike) -> Path:
    """Save a uint8 HWC (or HW) numpy array as PNG, atomically."""
    import PIL.Image

    path = Path(path)
    mode = "L" if img.ndim == 2 or img.shape[2] == 1 else ("RGBA" if img.shape[2] == 4 else "RGB")
    arr = img[:, :, 0] if img.ndim == 3 and img.shape[2] == 1 else img
    with atomic_path(path) as tmp:
        try:
            PIL.Image.fromarray(arr, mode if mode != "L" else None).save(tmp, format="PNG")
        except OSError as e:
            raise StyleforgeError(f"{path}: cannot write image ({e}); check free disk space") from None
    return path


def save_npz(path: PathLike, **arrays) -> Path:
    """Save arrays to an .npz file atomically."""
    import numpy as np

    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return path


def save_json(path: PathLike, obj) -> Path:
    import json

    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    return path
