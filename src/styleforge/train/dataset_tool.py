"""The dataset tool: convert a folder or zip of images into the official StyleGAN2-ADA layout (``dataset_tool``).

:func:`convert_dataset` (behind ``scripts/dataset_tool.py`` / ``styleforge dataset``) turns an image folder (class
subfolders become labels) or a zip into the layout :mod:`styleforge.data` reads, written atomically, skipping
unreadable files and reporting them. Errors and warnings name the settings they are about (``dest``,
``resolution``...), which the command shows as its flags.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple, Union

import numpy as np
import PIL.Image

from ..data.files import (
    DATASET_JSON, GRAY_MODES, Files, archive_name, image_extensions, is_power_of_two, nearest_powers_of_two,
    short_reason,
)
from ..data.labels import folder_classes, read_labels_json
from ..errors import StyleforgeError, StyleforgeWarning
from ..images import read_image
from ..utils.fileio import atomic_path, output_error
from ..utils.progress import Callback, reporter

PathLike = Union[str, os.PathLike]

TRANSFORMS = ("center-crop", "center-crop-wide")
RESIZE_FILTERS = {"box": PIL.Image.BOX, "lanczos": PIL.Image.LANCZOS}
# Largest output side. StyleGAN2-ADA's largest configs are 1024 px, datasets of 2048/4096 px exist, and 8192 px
# is the largest power of two whose images PIL reads back (16384^2 = 268 M pixels is over its decompression-bomb
# limit of 2 x 89.5 M); one 8192 px RGB image is already 192 MiB decoded.
MAX_RESOLUTION = 8192
MIN_RESOLUTION = 4  # the smallest StyleGAN block
# The settings the messages name, in words (the commands show their flags instead).
DEST = {"param": "dest", "label": "destination"}
LABELS = {"dest": "destination", "source": "source", "transform": "transform", "resolution": "resolution"}


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
    warnings: List[StyleforgeWarning] = field(default_factory=list)  # each names the setting it is about

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


def _output_size(info: _Info, transform: Optional[str], resolution: Optional[int], source: Files) -> int:
    """Side length of the square output for one image, or a one-line error if it cannot be square."""
    w, h = info.width, info.height
    if transform == "center-crop":
        return resolution or min(w, h)
    if transform == "center-crop-wide":
        return resolution or w
    if w != h:
        raise StyleforgeError(
            f"{source.display(info.name)} is {w}x{h}, not square; pass {{transform}} center-crop "
            "(or center-crop-wide to keep the full width)", also=LABELS)
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
        with atomic_path(dest, **DEST) as tmp:
            zf = zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED)

            def write(name: str, data: bytes) -> None:
                info = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
                info.compress_type = zipfile.ZIP_STORED
                info.external_attr = 0o644 << 16
                try:
                    zf.writestr(info, data)
                except OSError as e:
                    raise output_error(dest, e, **DEST) from None

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
        raise output_error(parent, e, doing="cannot write here", **DEST) from None
    try:
        def write(name: str, data: bytes) -> None:
            p = tmp_dir / name
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data)
            except OSError as e:
                raise output_error(dest, e, **DEST) from None

        yield write
        _default_permissions(tmp_dir, is_dir=True)
        try:
            if dest.is_dir():
                dest.rmdir()  # checked empty before we started
            os.replace(tmp_dir, dest)
        except OSError as e:
            raise output_error(dest, e, **DEST) from None
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise


def _check_resolution(resolution) -> None:
    """``resolution`` must be a power of two from MIN_RESOLUTION to MAX_RESOLUTION, refused before any work."""
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)):
        raise StyleforgeError(f"{resolution!r} is not a whole number; use a power of two such as 256",
                              param="resolution")
    if resolution > MAX_RESOLUTION:
        raise StyleforgeError(
            f"{resolution} is larger than {MAX_RESOLUTION}, the largest size this tool writes (the "
            "official models go up to 1024); use e.g. 1024", param="resolution")
    if resolution < MIN_RESOLUTION:
        raise StyleforgeError(
            f"{resolution} is smaller than {MIN_RESOLUTION}, the smallest StyleGAN resolution; "
            f"use {MIN_RESOLUTION} or more", param="resolution")
    if not is_power_of_two(resolution):
        raise StyleforgeError(
            f"{resolution} is not a power of two, which training needs; "
            f"use {nearest_powers_of_two(resolution)}", param="resolution")


def _check_dest(source: Path, dest: Path, is_zip: bool) -> None:
    src, dst = source.resolve(), dest.resolve()
    if dst == src:
        raise StyleforgeError(f"{dest}: {{dest}} is the same as {{source}}; choose another {{dest}}", also=LABELS)
    if source.is_dir() and src in dst.parents:
        raise StyleforgeError(f"{dest}: {{dest}} is inside {{source}} {source}; choose a {{dest}} outside the source "
                              "folder", also=LABELS)
    if is_zip:
        if dest.is_dir():
            raise StyleforgeError(f"{dest}: is a folder; give {{dest}} a new .zip file name, or a folder name "
                                  "without .zip", also=LABELS)
    else:
        if dest.exists() and not dest.is_dir():
            raise StyleforgeError(f"{dest}: exists and is a file; for a zip dataset end {{dest}} with .zip, else "
                                  "choose a new folder", also=LABELS)
        if dest.is_dir() and any(dest.iterdir()):
            raise StyleforgeError(f"{dest}: folder exists and is not empty; delete it or choose another {{dest}}",
                                  also=LABELS)
    parent = dest.parent if str(dest.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise output_error(parent, e, doing="cannot create folder", **DEST) from None


def convert_dataset(
    source: PathLike,
    dest: PathLike,
    resolution: Optional[int] = None,
    transform: Optional[str] = None,
    grayscale: Optional[bool] = None,
    max_images: Optional[int] = None,
    resize_filter: str = "lanczos",
    *,
    callback: Optional[Callback] = None,
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

    Progress goes to ``callback`` (:mod:`styleforge.utils.progress`: the stages ``scanning`` and ``converting``).
    """
    if transform is not None and transform not in TRANSFORMS:
        raise StyleforgeError(f"unknown transform {transform!r}; use {' or '.join(TRANSFORMS)}", param="transform")
    if resize_filter not in RESIZE_FILTERS:
        raise StyleforgeError(f"unknown filter {resize_filter!r}; use {' or '.join(RESIZE_FILTERS)}",
                              param="resize_filter")
    if resolution is not None:
        _check_resolution(resolution)
    if max_images is not None and int(max_images) < 1:
        raise StyleforgeError(f"{max_images!r} must be at least 1", param="max_images")
    resolution = int(resolution) if resolution is not None else None
    resample = RESIZE_FILTERS[resize_filter]
    source, dest = Path(source), Path(dest)
    files = Files(source, "source", "source")
    rep = reporter(callback)
    is_zip = dest.suffix.lower() == ".zip"
    _check_dest(source, dest, is_zip)

    try:
        names = files.image_names()
        if not names:
            exts = ", ".join(e for e in (".png", ".jpg", ".jpeg", ".bmp", ".webp") if e in image_extensions())
            raise StyleforgeError(
                f"{source}: no image files found ({exts}, ... searched recursively); point {{source}} at a folder or "
                "zip of images", also=LABELS)

        # Labels: the source's dataset.json first, else class subfolders.
        label_map = read_labels_json(files)
        label_source = "dataset.json" if label_map is not None else None
        class_names = None
        if label_map is None:
            classes = folder_classes(names, min_classes=2)
            if classes is not None:
                class_names, label_map = classes
                label_source = "folders"

        # Pass 1: headers only (size, mode); unreadable files are skipped.
        skipped: List[Tuple[str, str]] = []
        infos: List[_Info] = []
        with rep.stage("scanning", total=len(names), unit="img") as advance:
            for name in names:
                if max_images is not None and len(infos) >= max_images:
                    break
                try:
                    with files.open_image(name) as im:
                        infos.append(_Info(name, im.size[0], im.size[1], im.mode))
                except Exception as e:  # any decoder failure means "unreadable", never a crash
                    skipped.append((name, short_reason(e)))
                advance()
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
                f"{files.display(b.name)} is {b.width}x{b.height}); pass {{resolution}} N to resize them all "
                "(with {transform} center-crop for non-square images)", also=LABELS)
        size = sizes[0]
        if size > MAX_RESOLUTION:
            raise StyleforgeError(
                f"{source}: images are {size}x{size}, larger than the {MAX_RESOLUTION}x{MAX_RESOLUTION} this tool "
                "writes; pass {resolution} N to scale them down (e.g. 1024)", also=LABELS)
        if grayscale is None:
            mode = "L" if all(i.mode in GRAY_MODES for i in infos) else "RGB"
        else:
            mode = "L" if grayscale else "RGB"

        # Pass 2: decode, transform, write.
        out_labels: List[Tuple[str, object]] = []
        missing_labels: List[str] = []
        count = 0
        with _open_dest(dest, is_zip) as write, rep.stage("converting", total=len(infos), unit="img") as advance:
            for info in infos:
                advance()
                try:  # as stored (no EXIF rotation: the headers above gave the sizes), as the official tool reads
                    img = read_image(files.source(info.name), mode, exif=False)
                except Exception as e:  # truncated / corrupt data shows up only when decoding
                    skipped.append((info.name, short_reason(e)))
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

            warnings: List[StyleforgeWarning] = []
            if label_map is not None and missing_labels:
                warnings.append(StyleforgeWarning(
                    f"{files.display(DATASET_JSON)} has no label for {len(missing_labels)} image(s) "
                    f"(e.g. {missing_labels[0]}); wrote the dataset without labels"))
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
        warnings.append(StyleforgeWarning(
            f"{size}x{size} is not a power of two; training needs one, so re-run with {{resolution}} "
            f"{nearest_powers_of_two(size)}", also=LABELS))
    return ConvertSummary(
        dest=dest, num_images=count, num_found=len(names), resolution=size, num_channels=1 if mode == "L" else 3,
        label_source=label_source, label_dim=label_dim, class_names=class_names, skipped=skipped, warnings=warnings,
    )
