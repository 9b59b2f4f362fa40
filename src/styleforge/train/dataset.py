"""Training images: convert a folder or zip of images into the official StyleGAN2-ADA layout, and read it back.

The layout (the same one the official tools write and read) is a folder or an uncompressed zip holding
``00000/img00000000.png``, ``00000/img00000001.png``, ... (image *i* is ``{i:08d}`` split after 5 digits),
each an uncompressed RGB or grayscale PNG of one square size, plus ``dataset.json`` with
``{"labels": [[name, label], ...]}`` (an int class, or a list of floats) or ``{"labels": null}``.

* :func:`convert_dataset` (behind ``scripts/dataset_tool.py``) turns an image folder (class subfolders become
  labels) or a zip into that layout, written atomically, skipping unreadable files and reporting them.
* :class:`ImageDataset` is a picklable ``torch.utils.data.Dataset`` over such a zip or folder, yielding
  ``(uint8 CHW array, float32 label)``, with optional mirror copies (``xflip``) and a seeded subset.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import shutil
import struct
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import PIL.Image
import torch.utils.data
from tqdm import tqdm

from ..errors import StyleforgeError
from ..utils.fileio import atomic_path, output_error

try:  # optional fast PNG decoder, as used by the official reader
    import pyspng
except ImportError:  # pragma: no cover - depends on the environment
    pyspng = None

PathLike = Union[str, os.PathLike]

TRANSFORMS = ("center-crop", "center-crop-wide")
RESIZE_FILTERS = {"box": PIL.Image.BOX, "lanczos": PIL.Image.LANCZOS}
DATASET_JSON = "dataset.json"
# Largest output side. StyleGAN2-ADA's largest configs are 1024 px, datasets of 2048/4096 px exist, and 8192 px
# is the largest power of two whose images PIL reads back (16384^2 = 268 M pixels is over its decompression-bomb
# limit of 2 x 89.5 M); one 8192 px RGB image is already 192 MiB decoded.
MAX_RESOLUTION = 8192
MIN_RESOLUTION = 4  # the smallest StyleGAN block

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOR_MODES = {0: "L", 2: "RGB", 3: "RGB", 4: "LA", 6: "RGBA"}  # IHDR colour type -> decoded mode
_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_HIGH_DEPTH_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


# ---------------------------------------------------------------------------------------------------------------------
# Small helpers shared by the converter and the reader.


@functools.lru_cache(maxsize=1)
def image_extensions() -> frozenset:
    """File extensions (lower case, with dot) of every format PIL can open."""
    PIL.Image.init()
    return frozenset(ext.lower() for ext, fmt in PIL.Image.registered_extensions().items() if fmt in PIL.Image.OPEN)


def is_power_of_two(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


def _nearest_powers_of_two(n: int) -> str:
    lo = 1 << max(n.bit_length() - 1, 0)
    return f"{lo} or {lo * 2}" if lo != n else str(n)


def archive_name(index: int) -> str:
    """Official file name of image ``index``: ``00000/img00000000.png``."""
    s = f"{index:08d}"
    return f"{s[:5]}/img{s}.png"


def _decoded_mode(mode: str) -> str:
    """The 8-bit mode an image of PIL ``mode`` is read as: L, LA, RGB or RGBA."""
    if mode in ("LA", "La"):
        return "LA"
    if mode in _GRAY_MODES:
        return "L"
    if mode in ("RGBA", "RGBa", "PA"):
        return "RGBA"
    return "RGB"


def _to_mode(img: PIL.Image.Image, target: str) -> PIL.Image.Image:
    """Convert to an 8-bit ``target`` mode; 16-bit / float grayscale is scaled down instead of clipped."""
    if img.mode in _HIGH_DEPTH_MODES:
        a = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16") or (a.size and a.max() > 255):
            a = a / 257.0
        img = PIL.Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8))
    if img.mode != target:
        img = img.convert(target)
    return img


def _png_header(head: bytes) -> Optional[Tuple[int, int, int, int]]:
    """(width, height, bit depth, colour type) from the first 26+ bytes of a PNG, or None if not a PNG."""
    if len(head) < 26 or not head.startswith(_PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    w, h = struct.unpack(">II", head[16:24])
    return w, h, head[24], head[25]


def _short_reason(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg[:120]


class _Files:
    """Sorted relative names and bytes of the files in a folder or zip. Picklable; a zip is opened lazily per process."""

    def __init__(self, path: PathLike, what: str = "--source"):
        self.path = Path(path)
        self.what = what
        if not self.path.exists():
            raise StyleforgeError(f"{self.path}: no such file or folder; check {what}")
        self.is_zip = self.path.is_file()
        if self.is_zip and not zipfile.is_zipfile(self.path):
            raise StyleforgeError(f"{self.path}: not a folder or a zip file; point {what} at a folder of images or a .zip")
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
                raise StyleforgeError(f"{self.path}: cannot open zip ({_short_reason(e)}); re-create it") from None
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

    def open_image(self, name: str) -> PIL.Image.Image:
        """Lazily opened PIL image (only the header is read until ``.load()``)."""
        if self.is_zip:
            return PIL.Image.open(io.BytesIO(self.read(name)))
        return PIL.Image.open(self.path / name)

    def display(self, name: str) -> str:
        return f"{self.path}:{name}" if self.is_zip else str(self.path / name)


def _read_labels_json(files: _Files) -> Optional[Dict[str, object]]:
    """``dataset.json`` labels as {name: int | list of float}; None when absent or ``{"labels": null}``."""
    if not files.exists(DATASET_JSON):
        return None
    where = files.display(DATASET_JSON)
    try:
        data = json.loads(files.read(DATASET_JSON).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise StyleforgeError(f"{where}: not valid JSON ({_short_reason(e)}); fix or delete it") from None
    if not isinstance(data, dict) or "labels" not in data:
        raise StyleforgeError(f'{where}: expected {{"labels": [[name, label], ...]}} or {{"labels": null}}; fix or delete it')
    labels = data["labels"]
    if labels is None:
        return None
    if not isinstance(labels, list):
        raise StyleforgeError(f'{where}: "labels" must be a list of [name, label] pairs or null; fix or delete it')
    out: Dict[str, object] = {}
    kind = None
    for item in labels:
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str)):
            raise StyleforgeError(f"{where}: label entry {item!r} is not a [name, label] pair; fix or delete it")
        name, value = item
        if isinstance(value, bool) or not isinstance(value, (int, list)):
            raise StyleforgeError(f"{where}: label of {name!r} must be an int class or a list of numbers; fix it")
        if isinstance(value, int) and value < 0:
            raise StyleforgeError(f"{where}: label of {name!r} is negative ({value}); class labels start at 0")
        if isinstance(value, list):
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                raise StyleforgeError(f"{where}: label of {name!r} must be a list of numbers; fix it")
            this_kind = ("vector", len(value))
        else:
            this_kind = ("class", 0)
        if kind is None:
            kind = this_kind
        elif kind != this_kind:
            raise StyleforgeError(f"{where}: labels mix classes and vectors (or vector lengths); make them uniform")
        key = name.replace("\\", "/")
        while key.startswith("./"):
            key = key[2:]
        out[key] = value
    return out


def _folder_classes(names: Sequence[str], min_classes: int) -> Optional[Tuple[List[str], Dict[str, int]]]:
    """ImageFolder-style classes if every name is ``<class>/<file>``: (sorted class names, {name: index})."""
    parts = [n.split("/") for n in names]
    if not parts or any(len(p) != 2 for p in parts):
        return None
    classes = sorted({p[0] for p in parts})
    if len(classes) < min_classes:
        return None
    index = {c: i for i, c in enumerate(classes)}
    return classes, {n: index[p[0]] for n, p in zip(names, parts)}


# ---------------------------------------------------------------------------------------------------------------------
# Conversion.


@dataclass
class ConvertSummary:
    """What :func:`convert_dataset` wrote."""

    dest: Path
    num_images: int  # images written
    num_found: int  # image files found in the source
    resolution: int
    num_channels: int  # 1 (L) or 3 (RGB)
    label_source: Optional[str] = None  # 'dataset.json', 'folders' or None (written as {"labels": null})
    label_dim: int = 0  # number of classes, or the label vector length; 0 without labels
    class_names: Optional[List[str]] = None  # folder names, in label order, for 'folders'
    skipped: List[Tuple[str, str]] = field(default_factory=list)  # (file, reason) of unreadable files
    warnings: List[str] = field(default_factory=list)

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def skipped_message(self, limit: int = 5) -> str:
        """One line: how many files were skipped and the first few names with reasons ('' if none)."""
        if not self.skipped:
            return ""
        shown = ", ".join(f"{n} ({r})" for n, r in self.skipped[:limit])
        more = f", and {len(self.skipped) - limit} more" if len(self.skipped) > limit else ""
        return f"skipped {len(self.skipped)} unreadable image file(s): {shown}{more}"


@dataclass
class _Info:
    name: str
    width: int
    height: int
    mode: str


def _output_size(info: _Info, transform: Optional[str], resolution: Optional[int], source: _Files) -> int:
    """Side length of the square output for one image, or a one-line error if it cannot be square."""
    w, h = info.width, info.height
    if transform == "center-crop":
        return resolution or min(w, h)
    if transform == "center-crop-wide":
        return resolution or w
    if w != h:
        raise StyleforgeError(
            f"{source.display(info.name)} is {w}x{h}, not square; pass --transform center-crop "
            "(or center-crop-wide to keep the full width)")
    return resolution or w


def _apply_transform(img: PIL.Image.Image, transform: Optional[str], size: int, resample: int) -> PIL.Image.Image:
    w, h = img.size
    if transform == "center-crop":
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        box = (left, top, left + s, top + s)
        if s == size:
            return img.crop(box)
        return img.resize((size, size), resample, box=box)
    if transform == "center-crop-wide":
        # Keep the full width scaled to `size`; letterbox with black bars, or centre-crop rows if taller than wide.
        new_h = max(1, int(round(h * size / w)))
        if new_h >= size:
            top = (h - w) // 2
            box = (0, max(top, 0), w, max(top, 0) + min(w, h))
            return img.crop(box) if (w == size and box[3] - box[1] == size) else img.resize((size, size), resample, box=box)
        strip = img if (w, h) == (size, new_h) else img.resize((size, new_h), resample)
        canvas = PIL.Image.new(img.mode, (size, size), 0)
        canvas.paste(strip, (0, (size - new_h) // 2))
        return canvas
    if (w, h) == (size, size):
        return img
    return img.resize((size, size), resample)


def _encode_png(img: PIL.Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=0, optimize=False)
    return buf.getvalue()


def _default_permissions(path: Path, is_dir: bool) -> None:
    """mkstemp/mkdtemp create private (0600/0700) entries; give the result the usual umask-based permissions."""
    umask = os.umask(0)
    os.umask(umask)
    with contextlib.suppress(OSError):
        os.chmod(path, (0o777 if is_dir else 0o666) & ~umask)


@contextlib.contextmanager
def _open_dest(dest: Path, is_zip: bool) -> Iterator[Callable[[str, bytes], None]]:
    """Yield ``write(name, data)``; on success the temp zip/folder is renamed to ``dest``, on failure (including
    SIGTERM/Ctrl-C under :func:`cleanup_on_signals`) deleted. Failed writes are one line naming ``dest``."""
    if is_zip:
        with atomic_path(dest, flag="--dest") as tmp:
            zf = zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED)

            def write(name: str, data: bytes) -> None:
                info = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
                info.compress_type = zipfile.ZIP_STORED
                info.external_attr = 0o644 << 16
                try:
                    zf.writestr(info, data)
                except OSError as e:
                    raise output_error(dest, e, "--dest") from None

            try:
                yield write
            except BaseException:
                with contextlib.suppress(Exception):  # the file is deleted anyway; a full disk would fail again
                    zf.close()
                raise
            zf.close()  # the central directory: a full disk here is reported by atomic_path
            _default_permissions(tmp, is_dir=False)
        return
    parent = dest.parent if str(dest.parent) else Path(".")
    try:
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=parent))
    except OSError as e:
        raise output_error(parent, e, "--dest", doing="cannot write here") from None
    try:
        def write(name: str, data: bytes) -> None:
            p = tmp_dir / name
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data)
            except OSError as e:
                raise output_error(dest, e, "--dest") from None

        yield write
        _default_permissions(tmp_dir, is_dir=True)
        try:
            if dest.is_dir():
                dest.rmdir()  # checked empty before we started
            os.replace(tmp_dir, dest)
        except OSError as e:
            raise output_error(dest, e, "--dest") from None
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise


def _check_resolution(resolution) -> None:
    """``--resolution`` must be a power of two from MIN_RESOLUTION to MAX_RESOLUTION, refused before any work."""
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)):
        raise StyleforgeError(f"--resolution: {resolution!r} is not a whole number; use a power of two such as 256")
    if resolution > MAX_RESOLUTION:
        raise StyleforgeError(
            f"--resolution: {resolution} is larger than {MAX_RESOLUTION}, the largest size this tool writes (the "
            "official models go up to 1024); use e.g. 1024")
    if resolution < MIN_RESOLUTION:
        raise StyleforgeError(
            f"--resolution: {resolution} is smaller than {MIN_RESOLUTION}, the smallest StyleGAN resolution; "
            f"use {MIN_RESOLUTION} or more")
    if not is_power_of_two(resolution):
        raise StyleforgeError(
            f"--resolution: {resolution} is not a power of two, which training needs; "
            f"use {_nearest_powers_of_two(resolution)}")


def _check_dest(source: Path, dest: Path, is_zip: bool) -> None:
    src, dst = source.resolve(), dest.resolve()
    if dst == src:
        raise StyleforgeError(f"{dest}: --dest is the same as --source; choose another --dest")
    if source.is_dir() and src in dst.parents:
        raise StyleforgeError(f"{dest}: --dest is inside --source {source}; choose a --dest outside the source folder")
    if is_zip:
        if dest.is_dir():
            raise StyleforgeError(f"{dest}: is a folder; give --dest a new .zip file name, or a folder name without .zip")
    else:
        if dest.exists() and not dest.is_dir():
            raise StyleforgeError(f"{dest}: exists and is a file; for a zip dataset end --dest with .zip, else choose a new folder")
        if dest.is_dir() and any(dest.iterdir()):
            raise StyleforgeError(f"{dest}: folder exists and is not empty; delete it or choose another --dest")
    parent = dest.parent if str(dest.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise output_error(parent, e, "--dest", doing="cannot create folder") from None


def convert_dataset(
    source: PathLike,
    dest: PathLike,
    resolution: Optional[int] = None,
    transform: Optional[str] = None,
    grayscale: Optional[bool] = None,
    max_images: Optional[int] = None,
    resize_filter: str = "lanczos",
    *,
    progress: bool = True,
) -> ConvertSummary:
    """Convert a folder (recursive) or zip of images into the official dataset layout at ``dest``.

    ``dest`` ending in ``.zip`` gives an uncompressed zip, anything else a folder (new or empty); both are
    written under a temporary name and renamed when complete.

    * ``resolution``: output side length, a power of two from 4 to :data:`MAX_RESOLUTION` (8192), as training
      needs. Without it, images keep their size (at most 8192), which must then be the same for all; a kept size
      that is not a power of two only gives a warning.
    * ``transform``: None (images must be square; they are only resized), ``'center-crop'`` (largest centred
      square), or ``'center-crop-wide'`` (full width scaled to ``resolution``, centred on a black square
      canvas; taller-than-wide images are centre-cropped to a square).
    * ``grayscale``: True -> L, False -> RGB, None -> L if every image is grayscale, else RGB. Alpha is dropped.
    * ``max_images``: use at most this many images (the first ones in sorted order).
    * Labels: a ``dataset.json`` with labels in the source wins; otherwise, if every image sits in a
      first-level subfolder and there are at least two, the sorted subfolder names become classes 0, 1, ...
    * Unreadable or corrupt image files are skipped and listed in the summary.
    """
    if transform is not None and transform not in TRANSFORMS:
        raise StyleforgeError(f"--transform: unknown transform {transform!r}; use {' or '.join(TRANSFORMS)}")
    if resize_filter not in RESIZE_FILTERS:
        raise StyleforgeError(f"--resize-filter: unknown filter {resize_filter!r}; use {' or '.join(RESIZE_FILTERS)}")
    if resolution is not None:
        _check_resolution(resolution)
    if max_images is not None and int(max_images) < 1:
        raise StyleforgeError(f"--max-images: {max_images!r} must be at least 1")
    resolution = int(resolution) if resolution is not None else None
    resample = RESIZE_FILTERS[resize_filter]
    source, dest = Path(source), Path(dest)
    files = _Files(source, "--source")
    is_zip = dest.suffix.lower() == ".zip"
    _check_dest(source, dest, is_zip)

    try:
        names = files.image_names()
        if not names:
            exts = ", ".join(e for e in (".png", ".jpg", ".jpeg", ".bmp", ".webp") if e in image_extensions())
            raise StyleforgeError(
                f"{source}: no image files found ({exts}, ... searched recursively); point --source at a folder or zip of images")

        # Labels: the source's dataset.json first, else class subfolders.
        label_map = _read_labels_json(files)
        label_source = "dataset.json" if label_map is not None else None
        class_names = None
        if label_map is None:
            classes = _folder_classes(names, min_classes=2)
            if classes is not None:
                class_names, label_map = classes
                label_source = "folders"

        # Pass 1: headers only (size, mode); unreadable files are skipped.
        skipped: List[Tuple[str, str]] = []
        infos: List[_Info] = []
        for name in tqdm(names, desc="scanning", unit="img", disable=not progress, leave=False):
            if max_images is not None and len(infos) >= max_images:
                break
            try:
                with files.open_image(name) as im:
                    infos.append(_Info(name, im.size[0], im.size[1], im.mode))
            except Exception as e:  # any decoder failure means "unreadable", never a crash
                skipped.append((name, _short_reason(e)))
        if not infos:
            raise StyleforgeError(
                f"{source}: none of the {len(names)} image file(s) could be read (e.g. {skipped[0][0]}: {skipped[0][1]}); "
                "check the files")

        # Decide the output size and mode before writing anything.
        size_of = {}
        for info in infos:
            size_of[info.name] = _output_size(info, transform, resolution, files)
        sizes = sorted(set(size_of.values()))
        if len(sizes) > 1:
            a = next(i for i in infos if size_of[i.name] == sizes[0])
            b = next(i for i in infos if size_of[i.name] == sizes[-1])
            raise StyleforgeError(
                f"{source}: images have different sizes ({files.display(a.name)} is {a.width}x{a.height}, "
                f"{files.display(b.name)} is {b.width}x{b.height}); pass --resolution N to resize them all "
                "(with --transform center-crop for non-square images)")
        size = sizes[0]
        if size > MAX_RESOLUTION:
            raise StyleforgeError(
                f"{source}: images are {size}x{size}, larger than the {MAX_RESOLUTION}x{MAX_RESOLUTION} this tool "
                "writes; pass --resolution N to scale them down (e.g. 1024)")
        if grayscale is None:
            mode = "L" if all(i.mode in _GRAY_MODES for i in infos) else "RGB"
        else:
            mode = "L" if grayscale else "RGB"

        # Pass 2: decode, transform, write.
        out_labels: List[Tuple[str, object]] = []
        missing_labels: List[str] = []
        count = 0
        with _open_dest(dest, is_zip) as write:
            for info in tqdm(infos, desc="converting", unit="img", disable=not progress):
                try:
                    with files.open_image(info.name) as im:
                        im.load()
                        img = _to_mode(im, mode)
                except Exception as e:  # truncated / corrupt data shows up only when decoding
                    skipped.append((info.name, _short_reason(e)))
                    continue
                img = _apply_transform(img, transform, size, resample)
                fname = archive_name(count)
                write(fname, _encode_png(img))
                count += 1
                if label_map is not None:
                    if info.name in label_map:
                        out_labels.append((fname, label_map[info.name]))
                    else:
                        missing_labels.append(info.name)
            if count == 0:
                raise StyleforgeError(
                    f"{source}: none of the image files could be decoded (e.g. {skipped[0][0]}: {skipped[0][1]}); "
                    "check the files")

            warnings: List[str] = []
            if label_map is not None and missing_labels:
                warnings.append(
                    f"{files.display(DATASET_JSON)} has no label for {len(missing_labels)} image(s) "
                    f"(e.g. {missing_labels[0]}); wrote the dataset without labels")
                label_map, label_source, class_names = None, None, None
            labels_json = None
            label_dim = 0
            if label_map is not None:
                labels_json = [[f, v] for f, v in out_labels]
                first = out_labels[0][1]
                if isinstance(first, list):
                    label_dim = len(first)
                else:
                    label_dim = len(class_names) if class_names else max(int(v) for _, v in out_labels) + 1
            write(DATASET_JSON, json.dumps({"labels": labels_json}).encode("utf-8"))
    finally:
        files.close()

    if not is_power_of_two(size):
        warnings.append(
            f"{size}x{size} is not a power of two; training needs one, so re-run with --resolution "
            f"{_nearest_powers_of_two(size)}")
    return ConvertSummary(
        dest=dest, num_images=count, num_found=len(names), resolution=size, num_channels=1 if mode == "L" else 3,
        label_source=label_source, label_dim=label_dim, class_names=class_names, skipped=skipped, warnings=warnings,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Reading.


class ImageDataset(torch.utils.data.Dataset):
    """Images of an official-layout dataset (zip or folder) as ``(uint8 [C, H, W] array, float32 label)``.

    * Any folder or zip of images works; files are listed recursively in sorted order. All images must be
      square, of one power-of-two size and one channel count (checked from the file headers up front).
    * Labels come from ``dataset.json`` when it has them; otherwise, with ``folder_labels=True``, from
      first-level class subfolders. Int labels are returned one-hot, float vectors as they are. Without labels
      (or with ``use_labels=False``) the label is an empty float32 array.
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
        folder_labels: bool = False,
    ):
        self.path = Path(path)
        self._files = _Files(self.path, "the dataset path")
        fix = "re-create it with scripts/dataset_tool.py"
        try:
            self._names = self._files.image_names()
            if not self._names:
                raise StyleforgeError(f"{self.path}: no images in this dataset; create one with scripts/dataset_tool.py")
            self._modes = self._scan_shapes(fix)
            shape = self._shape
            if shape[1] != shape[2]:
                raise StyleforgeError(
                    f"{self._files.display(self._names[0])} is {shape[2]}x{shape[1]}, not square; "
                    f"{fix} --transform center-crop")
            if not is_power_of_two(shape[1]):
                raise StyleforgeError(
                    f"{self.path}: images are {shape[1]}x{shape[1]}, but training needs a power-of-two size; "
                    f"{fix} --resolution {_nearest_powers_of_two(shape[1])}")
            if resolution is not None and int(resolution) != shape[1]:
                raise StyleforgeError(
                    f"{self.path}: images are {shape[1]}x{shape[1]}, not the requested {resolution}x{resolution}; "
                    f"{fix} --resolution {resolution}")
            raw = self._load_labels(folder_labels, fix)
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
        head = self._files.read_head(name, 33)
        png = _png_header(head)
        if png is not None and png[3] in _PNG_COLOR_MODES:
            return png[0], png[1], _PNG_COLOR_MODES[png[3]]
        with self._files.open_image(name) as im:
            return im.size[0], im.size[1], _decoded_mode(im.mode)

    def _scan_shapes(self, fix: str) -> List[str]:
        modes = []
        first = None
        for name in self._names:
            try:
                w, h, mode = self._probe(name)
            except StyleforgeError:
                raise
            except Exception as e:
                raise StyleforgeError(
                    f"{self._files.display(name)}: unreadable image ({_short_reason(e)}); {fix} (it skips bad files)") from None
            if first is None:
                first = (name, w, h, mode)
            elif (w, h) != first[1:3]:
                raise StyleforgeError(
                    f"{self.path}: images have different sizes ({first[0]} is {first[1]}x{first[2]}, {name} is {w}x{h}); "
                    f"{fix} --resolution N")
            elif len(mode) != len(first[3]):
                raise StyleforgeError(
                    f"{self.path}: images have different channel counts ({first[0]} is {first[3]}, {name} is {mode}); "
                    f"{fix} --rgb or --grayscale")
            modes.append(mode)
        self._shape = [len(first[3]), first[2], first[1]]
        return modes

    def _load_labels(self, folder_labels: bool, fix: str) -> Optional[np.ndarray]:
        label_map = _read_labels_json(self._files)
        where = self._files.display(DATASET_JSON)
        if label_map is None:
            if not folder_labels:
                return None
            classes = _folder_classes(self._names, min_classes=1)
            if classes is None:
                raise StyleforgeError(
                    f"{self.path}: folder labels need every image in a first-level class subfolder "
                    "(<class>/<image>); move the images or use labels from dataset.json")
            label_map = classes[1]
        values = []
        for name in self._names:
            if name not in label_map:
                raise StyleforgeError(f"{where}: no label for {name}; {fix}")
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
        mode = self._modes[raw_idx]
        try:
            data = self._files.read(name)
            png = _png_header(data[:33])
            if pyspng is not None and png is not None and png[2] == 8 and png[3] in (0, 2, 6):
                arr = pyspng.load(data)
            else:
                with PIL.Image.open(io.BytesIO(data)) as im:
                    arr = np.array(_to_mode(im, mode))  # a writable copy (torch warns on read-only arrays)
        except StyleforgeError:
            raise
        except Exception as e:
            raise StyleforgeError(
                f"{self._files.display(name)}: cannot decode image ({_short_reason(e)}); "
                "re-create the dataset with scripts/dataset_tool.py, which skips unreadable files") from None
        if arr.ndim == 2:
            arr = arr[:, :, np.newaxis]
        arr = arr.transpose(2, 0, 1)
        if list(arr.shape) != self._shape or arr.dtype != np.uint8:
            raise StyleforgeError(
                f"{self._files.display(name)}: decoded as {list(arr.shape)} {arr.dtype}, expected {self._shape} uint8; "
                "re-create the dataset with scripts/dataset_tool.py")
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
