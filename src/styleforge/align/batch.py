"""Batch FFHQ alignment: folders and files of photos in, ``<name>.png`` + ``<name>.json`` per face out.

Folders are searched recursively (hidden files and the output folder are skipped) and their sub-folder layout is
kept in the output. For each photo the most prominent face is aligned (``all_faces``: every face scoring enough,
written as ``<name>_01.png``, ``<name>_02.png``, ... in order of prominence). The JSON next to each PNG holds the
source, detector box and score, the 68 landmarks and the crop quad. A photo is finished once its JSON exists; such
photos are skipped on the next run (resume). Photos without a face and unreadable files give a warning (a note to
the callback) and are skipped.

``all_faces`` keeps the detections that score at least ``min_score``, each dropped one with a warning; if none
scores enough, the most prominent face is kept, which is what the default mode writes. The default
(:data:`DEFAULT_MIN_SCORE`, 0.3) comes from dlib's HOG scores on scikit-image's photos: the astronaut's face 1.16
(1.11 mirrored), the mission patch on her suit 0.12 (0.13 mirrored; 20 other photos give no detection at all),
the 91 detected faces of ``lfw_subset`` (25 px thumbnails, upscaled 4x) 0.03-2.30, median 1.03, 7 of them below 0.3.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import StyleforgeError, StyleforgeWarning
from ..images import find_images, read_image, unique_keys
from ..utils.fileio import atomic_path, ensure_outdir, finished_record, save_image
from ..utils.progress import Callback, Reporter, reporter
from ..utils.runtime import check_shard, shard_items

PathLike = Union[str, os.PathLike]

__all__ = ["AlignResult", "align_images", "list_sources", "load_photo", "default_transform_size", "DEFAULT_MIN_SCORE",
           "MAX_SIZE"]

DEFAULT_MIN_SCORE = 0.3  # --all-faces: weaker detections are dropped (see the module docstring for the numbers)
MAX_SIZE = 4096  # --size bound: 4x FFHQ's 1024; the supersampling canvas is at least this many pixels a side


@dataclass
class AlignResult:
    outdir: Path
    shard: Tuple[int, int] = (0, 1)
    images: int = 0                                               # photos in this shard
    written: List[Path] = field(default_factory=list)             # aligned PNGs written by this run
    aligned: List[str] = field(default_factory=list)              # photos aligned by this run
    skipped: List[str] = field(default_factory=list)              # photos already done (resume)
    no_face: List[str] = field(default_factory=list)
    failed: List[Tuple[str, str]] = field(default_factory=list)   # (photo, reason): unreadable or not alignable
    ignored: int = 0                                              # non-image files in the source folders

    @property
    def counts(self) -> Dict[str, int]:
        return {
            "images": self.images, "aligned": len(self.aligned), "faces": len(self.written),
            "skipped": len(self.skipped), "no_face": len(self.no_face), "failed": len(self.failed),
            "ignored": self.ignored,
        }

    def summary(self) -> str:
        c = self.counts
        shard = "" if self.shard == (0, 1) else f" (shard {self.shard[0]}/{self.shard[1]})"
        msg = f"aligned {c['aligned']} of {c['images']} photo(s){shard}: {c['faces']} face image(s) in {self.outdir}"
        extra = []
        if c["skipped"]:
            extra.append(f"{c['skipped']} already done")
        if c["no_face"]:
            extra.append(f"{c['no_face']} without a face")
        if c["failed"]:
            extra.append(f"{c['failed']} unreadable or failed")
        if c["ignored"]:
            extra.append(f"{c['ignored']} non-image file(s) ignored")
        return msg + (f"; {', '.join(extra)}" if extra else "")


def list_sources(sources: Iterable[PathLike], exclude: Optional[PathLike] = None) -> Tuple[List[Tuple[Path, str]], int]:
    """``(photo path, output key)`` pairs in a stable order, and the number of non-image files skipped.

    A folder contributes every image file below it (:func:`~styleforge.images.find_images`: by extension, sorted;
    hidden entries and ``exclude`` are skipped), keyed by its path relative to the folder without the extension.
    A file given directly is always tried, keyed by its stem. Keys that collide (``a.jpg`` and ``a.png``) get the
    extension appended.
    """
    items: List[Tuple[Path, str]] = []
    seen = set()
    ignored = 0
    for src in sources:
        src = Path(src).expanduser()
        if src.is_dir():
            found, others = find_images(src.resolve(), exclude)
            ignored += others
        elif src.exists():
            found = [(src.resolve(), src.stem)]
        else:
            raise StyleforgeError(f"{src}: no such file or folder ({{name}})", param="sources", label="source")
        for p, key in found:
            if p not in seen:
                seen.add(p)
                items.append((p, key))
    return unique_keys(items), ignored


def load_photo(path: PathLike) -> np.ndarray:
    """Read a photo as HxWx3 uint8 RGB with :func:`~styleforge.images.read_image` (EXIF orientation applied, so
    phone photos are upright; 16-bit and float images scaled to 8 bits)."""
    return np.asarray(read_image(path, "RGB"), dtype=np.uint8)


def default_transform_size(size: int) -> int:
    """Supersampling canvas: 4x the output up to FFHQ's 4096 (identical to FFHQ at 1024, much faster below)."""
    return max(int(size), min(4 * int(size), 4096))


def _short(e: BaseException) -> str:
    s = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return s[:150]


def _outputs(outdir: Path, key: str, all_faces: bool, n: int) -> List[Tuple[Path, Path]]:
    if not all_faces:
        return [(outdir / f"{key}.png", outdir / f"{key}.json")]
    return [(outdir / f"{key}_{i:02d}.png", outdir / f"{key}_{i:02d}.json") for i in range(1, n + 1)]


def _finished(outdir: Path, key: str, all_faces: bool) -> Optional[Dict]:
    """The JSON of a photo whose outputs are all there (a finished photo), else None."""
    png, js = _outputs(outdir, key, all_faces, 1)[0]
    meta = finished_record(js, png)
    if meta is None:
        return None
    try:
        n = int(meta.get("faces_written", 1)) if all_faces else 1
    except (ValueError, TypeError):
        return None
    if not all(p.is_file() and j.is_file() for p, j in _outputs(outdir, key, all_faces, n)):
        return None
    return meta


def _round(a, nd: int = 2):
    return np.round(np.asarray(a, dtype=np.float64), nd).tolist()


def _save_json(path: Path, obj: Dict) -> None:
    """Atomic JSON with one top-level key per line and compact values (68 landmarks stay readable)."""
    body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v, separators=(', ', ': '))}" for k, v in obj.items())
    with atomic_path(path) as tmp:
        tmp.write_text("{\n" + body + "\n}\n")


def _unreadable_reason(e: BaseException, path: Path) -> str:
    import PIL

    if isinstance(e, PIL.UnidentifiedImageError):
        return "unknown or damaged image format"
    return _short(e).replace(f"'{path}'", "").replace(str(path), "").strip(" :") or type(e).__name__


def _choose(faces: list, all_faces: bool, min_score: float, path: Path, rep: Reporter) -> list:
    """The faces to write: the most prominent one, or with ``all_faces`` those scoring at least ``min_score``
    (else the most prominent one); one warning per dropped detection."""
    if not all_faces:
        return faces[:1]
    kept = [f for f in faces if f.score >= min_score] or faces[:1]
    for f in faces:
        if not any(f is k for k in kept):
            x0, y0, x1, y1 = (round(v) for v in f.box)
            rep.note(StyleforgeWarning(f"{path}: dropped a detection at ({x0},{y0})-({x1},{y1}) with score "
                                       f"{f.score:.2f} < {{name}} {min_score:g}", param="min_score"), "warning")
    return kept


def _align_one(path: Path, key: str, det, det_name: str, res: AlignResult, outdir: Path, size: int, tsize: int,
               all_faces: bool, min_score: float, padding: bool, rep: Reporter) -> None:
    """Detect, align and save the face(s) of one photo, recording the outcome in ``res``."""
    from .ffhq import align_face

    try:
        img = load_photo(path)
    except Exception as e:  # any decoder error means "not a readable image"
        reason = _unreadable_reason(e, path)
        res.failed.append((str(path), reason))
        rep.note(f"{path}: not a readable image ({reason}); skipped", "warning")
        return
    try:
        faces = det.detect(img)
    except (ValueError, RuntimeError, MemoryError) as e:
        res.failed.append((str(path), _short(e)))
        rep.note(f"{path}: face detection failed ({_short(e)}); skipped", "warning")
        return
    if not faces:
        res.no_face.append(str(path))
        rep.note(f"{path}: no face found; skipped", "warning")
        return
    chosen = _choose(faces, all_faces, min_score, path, rep)
    ok = 0
    for i, (face, (png, js)) in enumerate(zip(chosen, _outputs(outdir, key, all_faces, len(chosen)))):
        try:
            aligned, info = align_face(img, face.landmarks68, output_size=size, transform_size=tsize,
                                       enable_padding=padding)
        except (ValueError, MemoryError) as e:
            rep.note(f"{path}: face {i + 1} could not be aligned ({_short(e)}); skipped", "warning")
            continue
        png.parent.mkdir(parents=True, exist_ok=True)
        save_image(aligned, png)
        _save_json(js, {
            "source": str(path),
            "image": png.name,
            "face": i + 1,
            "faces_found": len(faces),
            "faces_written": len(chosen),
            "detector": det_name,
            "box": _round(face.box),
            "score": round(float(face.score), 4),
            "landmarks": _round(face.landmarks68),
            "quad": _round(info["quad"], 3),
            "qsize": round(info["qsize"], 3),
            "eye_left": _round(info["eye_left"], 3),
            "eye_right": _round(info["eye_right"], 3),
            "mouth_left": _round(info["mouth_left"], 3),
            "mouth_right": _round(info["mouth_right"], 3),
            "aligned_points": {k: _round(v, 2) for k, v in info["aligned_points"].items()},
            "size": size,
            "padding": bool(padding),
            "source_size": [int(img.shape[1]), int(img.shape[0])],
        })
        res.written.append(png)
        ok += 1
    if ok:
        res.aligned.append(str(path))
    else:
        res.failed.append((str(path), "no face could be aligned"))


def align_images(
    sources: Union[PathLike, Sequence[PathLike]],
    outdir: PathLike,
    size: int = 1024,
    all_faces: bool = False,
    min_score: float = DEFAULT_MIN_SCORE,
    padding: bool = True,
    detector: Union[str, object] = "dlib",
    shard: Tuple[int, int] = (0, 1),
    skip_existing: bool = True,
    transform_size: Optional[int] = None,
    callback: Optional[Callback] = None,
) -> AlignResult:
    """FFHQ-align the faces in ``sources`` (folders and/or files) into ``outdir``; see the module docstring.

    ``detector`` is a name (``dlib``, ``face-alignment``) or an object with ``detect(image) -> [Face]``.
    ``min_score`` applies with ``all_faces`` only (see the module docstring). ``size`` is 8 to :data:`MAX_SIZE`.
    Progress (stage ``align``, one advance per photo) and warnings (no face, unreadable file, a dropped
    detection) go to ``callback``. Returns an :class:`AlignResult` (``.counts``, ``.summary()``). Raises
    :class:`StyleforgeError` if no images are found or if images were found but none could be aligned (and none
    was already done).
    """
    from .landmarks import get_detector

    rep = reporter(callback)
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    sources = list(sources)
    if not sources:
        raise StyleforgeError("no {name} given: pass folders or image files", param="sources")
    shard = check_shard(shard)
    size = int(size)
    if size < 8:
        raise StyleforgeError("too small; use e.g. 256, 512 or 1024", param="size", value=size)
    if size > MAX_SIZE:
        raise StyleforgeError(
            f"{{name}} {size}: too large; at most {MAX_SIZE}, 4x FFHQ's 1024 px (each face is resampled on a canvas "
            "of size x size pixels, so memory and time grow with the square of {name}); use e.g. 1024", param="size")
    tsize = int(transform_size) if transform_size else default_transform_size(size)
    outdir_p = Path(outdir).expanduser()
    items, ignored = list_sources(sources, exclude=outdir_p)
    if not items:
        what = ", ".join(str(s) for s in sources)
        extra = f" ({ignored} non-image file(s) there)" if ignored else ""
        raise StyleforgeError(f"no images found in {what}{extra}")
    outdir_p = ensure_outdir(outdir_p, param="outdir")
    res = AlignResult(outdir=outdir_p, shard=shard, ignored=ignored)
    mine = shard_items(items, shard)
    res.images = len(mine)
    if not mine:
        rep.note(f"shard {shard[0]}/{shard[1]} has no images ({len(items)} in total)", "warning")
        return res

    todo = []
    for path, key in mine:
        meta = _finished(outdir_p, key, all_faces) if skip_existing else None
        if meta is None:
            todo.append((path, key))
            continue
        if meta.get("size", size) != size:
            raise StyleforgeError(
                f"{outdir_p} already holds {meta.get('size')}px faces ({meta.get('image', key)}); "
                f"use another {{outdir}} for {{size}} {size}, or {{skip_existing}}",
                also={"outdir": "output folder", "size": "size", "skip_existing": "redo them (skip_existing=False)"},
            )
        res.skipped.append(str(path))

    det = (get_detector(detector) if isinstance(detector, str) else detector) if todo else None
    det_name = getattr(det, "name", None) or (detector if isinstance(detector, str) else type(detector).__name__)
    if todo:
        with rep.stage("align", total=len(todo), unit="img") as advance:
            for path, key in todo:
                _align_one(path, key, det, det_name, res, outdir_p, size, tsize, all_faces, min_score, padding, rep)
                advance(1, faces=len(res.written))
    if not res.aligned and not res.skipped:
        parts = []
        if res.no_face:
            parts.append(f"{len(res.no_face)} without a face")
        if res.failed:
            parts.append(f"{len(res.failed)} unreadable or failed")
        raise StyleforgeError(f"no face aligned: {res.images} photo(s) tried, {', '.join(parts)} (see the warnings above)")
    return res
