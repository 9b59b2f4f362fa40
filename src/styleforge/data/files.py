"""The files of a dataset: a folder or a zip, listed in sorted order and read lazily; PNG headers; the layout's names.

The official layout (what the dataset tool writes, what training reads) is a folder or an uncompressed zip holding
``00000/img00000000.png``, ``00000/img00000001.png``, ... (image *i* is ``{i:08d}`` split after 5 digits), each an
uncompressed RGB or grayscale PNG of one square size, plus ``dataset.json`` (see :mod:`.labels`). Any folder or
zip of images can be read, though: :class:`Files` lists every visible file recursively.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import struct
import zipfile
from pathlib import Path
from typing import List, Optional, Tuple, Union

import PIL.Image

from ..errors import StyleforgeError
from ..images import HIGH_DEPTH_MODES

PathLike = Union[str, os.PathLike]

DATASET_JSON = "dataset.json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_COLOR_MODES = {0: "L", 2: "RGB", 3: "RGB", 4: "LA", 6: "RGBA"}  # IHDR colour type -> decoded mode
GRAY_MODES = frozenset({"1", "L", "LA", "La"} | HIGH_DEPTH_MODES)


@functools.lru_cache(maxsize=1)
def image_extensions() -> frozenset:
    """File extensions (lower case, with dot) of every format PIL can open."""
    PIL.Image.init()
    return frozenset(ext.lower() for ext, fmt in PIL.Image.registered_extensions().items() if fmt in PIL.Image.OPEN)


def is_power_of_two(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


def nearest_powers_of_two(n: int) -> str:
    """``100`` -> ``'64 or 128'``; a power of two itself -> ``'64'``."""
    lo = 1 << max(n.bit_length() - 1, 0)
    return f"{lo} or {lo * 2}" if lo != n else str(n)


def archive_name(index: int) -> str:
    """Official file name of image ``index``: ``00000/img00000000.png``."""
    s = f"{index:08d}"
    return f"{s[:5]}/img{s}.png"


def decoded_mode(mode: str) -> str:
    """The 8-bit mode an image of PIL ``mode`` is read as: L, LA, RGB or RGBA."""
    if mode in ("LA", "La"):
        return "LA"
    if mode in GRAY_MODES:
        return "L"
    if mode in ("RGBA", "RGBa", "PA"):
        return "RGBA"
    return "RGB"


def png_header(head: bytes) -> Optional[Tuple[int, int, int, int]]:
    """(width, height, bit depth, colour type) from the first 26+ bytes of a PNG, or None if not a PNG."""
    if len(head) < 26 or not head.startswith(PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    w, h = struct.unpack(">II", head[16:24])
    return w, h, head[24], head[25]


def short_reason(e: BaseException) -> str:
    """The first line of an exception's message (at most 120 characters), or its type's name."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg[:120]


class Files:
    """Sorted relative names and bytes of the files in a folder or zip. Picklable; a zip is opened lazily, once
    per process. ``param``/``label``: the setting that named ``path`` (errors tell the user to check it)."""

    def __init__(self, path: PathLike, param: str = "path", label: str = "the path"):
        self.path = Path(path)
        about = {"also": {param: label}}
        if not self.path.exists():
            raise StyleforgeError(f"{self.path}: no such file or folder; check {{{param}}}", **about)
        self.is_zip = self.path.is_file()
        if self.is_zip and not zipfile.is_zipfile(self.path):
            raise StyleforgeError(f"{self.path}: not a folder or a zip file; point {{{param}}} at a folder of images "
                                  "or a .zip", **about)
        self._zip: Optional[zipfile.ZipFile] = None
        self._zip_pid: Optional[int] = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_zip"] = None
        state["_zip_pid"] = None
        return state

    def _zipfile(self) -> zipfile.ZipFile:
        if self._zip is None or self._zip_pid != os.getpid():
            try:
                self._zip = zipfile.ZipFile(self.path)
            except (OSError, zipfile.BadZipFile) as e:
                raise StyleforgeError(f"{self.path}: cannot open zip ({short_reason(e)}); re-create it") from None
            self._zip_pid = os.getpid()
        return self._zip

    def close(self) -> None:
        if self._zip is not None and self._zip_pid == os.getpid():
            with contextlib.suppress(Exception):
                self._zip.close()
        self._zip = None
        self._zip_pid = None

    @staticmethod
    def _hidden(rel: str) -> bool:
        return any(part.startswith(".") or part == "__MACOSX" for part in rel.split("/"))

    def names(self) -> List[str]:
        """Every visible file, as a sorted list of '/'-separated relative names."""
        if self.is_zip:
            out = [n for n in self._zipfile().namelist() if not n.endswith("/")]
        else:
            out = []
            for root, dirs, files in os.walk(self.path):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                rel_root = Path(root).relative_to(self.path).as_posix()
                for f in files:
                    out.append(f if rel_root == "." else f"{rel_root}/{f}")
        return sorted(n for n in out if not self._hidden(n))

    def image_names(self) -> List[str]:
        exts = image_extensions()
        return [n for n in self.names() if os.path.splitext(n)[1].lower() in exts]

    def exists(self, name: str) -> bool:
        if self.is_zip:
            try:
                self._zipfile().getinfo(name)
                return True
            except KeyError:
                return False
        return (self.path / name).is_file()

    def read(self, name: str) -> bytes:
        if self.is_zip:
            return self._zipfile().read(name)
        return (self.path / name).read_bytes()

    def read_head(self, name: str, n: int) -> bytes:
        if self.is_zip:
            with self._zipfile().open(name) as f:
                return f.read(n)
        with open(self.path / name, "rb") as f:
            return f.read(n)

    def source(self, name: str) -> Union[Path, io.BytesIO]:
        """What PIL (or :func:`styleforge.images.read_image`) opens for file ``name``: a path, or the bytes."""
        return io.BytesIO(self.read(name)) if self.is_zip else self.path / name

    def open_image(self, name: str) -> PIL.Image.Image:
        """Lazily opened PIL image (only the header is read until ``.load()``)."""
        return PIL.Image.open(self.source(name))

    def display(self, name: str) -> str:
        return f"{self.path}:{name}" if self.is_zip else str(self.path / name)
