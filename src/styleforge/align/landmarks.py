"""Face detection + 68-point landmarks behind one small interface.

``get_detector(name).detect(image)`` returns a list of :class:`Face` (box, score, landmarks68), the most
prominent face first (largest ``score x box area``). Backends:

* ``dlib`` (default): dlib's HOG face detector and the 68-point shape predictor shipped in the
  ``face-recognition-models`` package (found without importing it, so no ``pkg_resources`` is needed).
  Install with ``pip install 'styleforge[align]'``.
* ``face-alignment``: the S3FD detector + 2D-FAN of the ``face-alignment`` package. It needs two weight
  files in ``$TORCH_HOME/hub/checkpoints``; offline, the error names them, the folder and the URLs.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import StyleforgeError

__all__ = ["Face", "LandmarkDetector", "DlibDetector", "FaceAlignmentDetector", "get_detector", "DETECTORS"]

ALIGN_EXTRA = "pip install 'styleforge[align]'"
FAN_EXTRA = "pip install 'styleforge[align-fan]'"

DLIB_68_FILE = "shape_predictor_68_face_landmarks.dat"
DLIB_68_URL = "http://dlib.net/files/shape_predictor_68_face_landmarks.dat.bz2"

# Used only if the installed face-alignment does not expose its URL tables (they are read from the package).
_FAN_DEFAULT_URLS = {
    "s3fd": "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
    "2DFAN-4": "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar",
}


@dataclass
class Face:
    """One detected face: ``box`` (x0, y0, x1, y1) in pixels, detector ``score``, ``landmarks68`` [68, 2] (x, y)."""

    box: Tuple[float, float, float, float]
    score: float
    landmarks68: np.ndarray

    @property
    def area(self) -> float:
        return max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0)

    @property
    def prominence(self) -> float:
        """The ranking key: confidence times box area (the main subject's face comes first)."""
        return max(float(self.score), 1e-3) * self.area


def _rank(faces: List[Face]) -> List[Face]:
    return sorted(faces, key=lambda f: f.prominence, reverse=True)


def _rgb_uint8(image) -> np.ndarray:
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, :3]
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"image must be HxWx3 uint8, got shape {list(np.shape(image))}")
    return np.ascontiguousarray(a)


class LandmarkDetector:
    """Interface: ``detect(image HxWx3 uint8 RGB) -> list of Face``, most prominent first."""

    name = "base"

    def detect(self, image: np.ndarray) -> List[Face]:  # pragma: no cover - interface
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------------------------------
# dlib


def _package_dir(module: str) -> Optional[Path]:
    """Folder of an installed package, without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    locs = list(spec.submodule_search_locations or [])
    if locs:
        return Path(locs[0])
    return Path(spec.origin).parent if spec.origin else None


def dlib_model_path(filename: str = DLIB_68_FILE) -> Path:
    """Path of a dlib model: from face-recognition-models, else the styleforge cache; one-line error otherwise."""
    from ..utils.cache import cache_dir

    env = os.environ.get("STYLEFORGE_DLIB_68") if filename == DLIB_68_FILE else None
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise StyleforgeError(f"STYLEFORGE_DLIB_68={env}: no such file; point it at {DLIB_68_FILE}")
        return p
    pkg = _package_dir("face_recognition_models")
    if pkg is not None and (pkg / "models" / filename).is_file():
        return pkg / "models" / filename
    cached = cache_dir() / filename
    if cached.is_file():
        return cached
    raise StyleforgeError(
        f"dlib landmark model {filename} not found: {ALIGN_EXTRA} (installs face-recognition-models), "
        f"or put the file (unpacked from {DLIB_68_URL}) at {cached}"
    )


class DlibDetector(LandmarkDetector):
    """dlib HOG face detector + 68-point shape predictor.

    ``upsample``: times the (possibly reduced) photo is doubled before detection (1 finds faces down to
    ~40 px). ``max_side``: photos larger than this are reduced for *detection* only; the landmarks are
    always predicted on the full-resolution photo. ``min_score``: dlib's detection threshold (0 = its default).
    """

    name = "dlib"

    def __init__(self, upsample: int = 1, max_side: Optional[int] = 1024, min_score: float = 0.0,
                 predictor_path: Optional[str] = None):
        try:
            import dlib
        except ImportError:
            raise StyleforgeError(f"the dlib face detector is not installed: {ALIGN_EXTRA}") from None
        self._dlib = dlib
        path = Path(predictor_path) if predictor_path else dlib_model_path(DLIB_68_FILE)
        if not path.is_file():
            raise StyleforgeError(f"{path}: no such dlib shape predictor file ({DLIB_68_FILE})")
        self.detector = dlib.get_frontal_face_detector()
        try:
            self.predictor = dlib.shape_predictor(str(path))
        except RuntimeError as e:
            raise StyleforgeError(f"{path}: not a usable dlib shape predictor ({str(e).strip()[:100]})") from None
        self.upsample = int(upsample)
        self.max_side = max_side
        self.min_score = float(min_score)

    def detect(self, image: np.ndarray) -> List[Face]:
        img = _rgb_uint8(image)
        h, w = img.shape[:2]
        scale = 1.0
        small = img
        if self.max_side and max(h, w) > self.max_side:
            import PIL.Image

            scale = self.max_side / max(h, w)
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            small = np.asarray(PIL.Image.fromarray(img).resize(size, PIL.Image.Resampling.BILINEAR, reducing_gap=2.0))
            scale = (size[0] / w + size[1] / h) / 2
        rects, scores, _ = self.detector.run(small, self.upsample, self.min_score)
        faces = []
        for r, s in zip(rects, scores):
            box = (r.left() / scale, r.top() / scale, (r.right() + 1) / scale, (r.bottom() + 1) / scale)
            full = self._dlib.rectangle(int(round(box[0])), int(round(box[1])),
                                        int(round(box[2])) - 1, int(round(box[3])) - 1)
            shape = self.predictor(img, full)
            lm = np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)], dtype=np.float64)
            if lm.shape != (68, 2):
                raise StyleforgeError(f"the dlib shape predictor gives {lm.shape[0]} points; a 68-point model is needed")
            faces.append(Face(box=tuple(float(v) for v in box), score=float(s), landmarks68=lm))
        return _rank(faces)


# ---------------------------------------------------------------------------------------------------------------------
# face-alignment (1adrianb)


def _fan_urls() -> Dict[str, str]:
    urls = dict(_FAN_DEFAULT_URLS)
    try:
        from face_alignment import api as fa_api

        urls["2DFAN-4"] = fa_api.models_urls.get("2DFAN-4", urls["2DFAN-4"])
    except Exception:  # pragma: no cover - depends on the installed version
        pass
    try:
        from face_alignment.detection.sfd import sfd_detector

        urls["s3fd"] = sfd_detector.models_urls.get("s3fd", urls["s3fd"])
    except Exception:  # pragma: no cover
        pass
    return urls


def fan_urls() -> Dict[str, str]:
    """The URLs of face-alignment's weight files (``s3fd``, ``2DFAN-4``), as the installed package names them."""
    return _fan_urls()


def fan_checkpoint_dir() -> Path:
    """Where face-alignment (through torch.hub) looks for its weights: ``$TORCH_HOME/hub/checkpoints``."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def fan_missing_weights(urls: Optional[Dict[str, str]] = None) -> List[Tuple[str, str]]:
    """(file name, URL) of each face-alignment weight file not yet in :func:`fan_checkpoint_dir`."""
    urls = urls or dict(_FAN_DEFAULT_URLS)
    folder = fan_checkpoint_dir()
    missing = []
    for key in ("s3fd", "2DFAN-4"):
        url = urls[key]
        name = url.rsplit("/", 1)[-1]
        if not (folder / name).is_file():
            missing.append((name, url))
    return missing


def fan_missing_error(missing: List[Tuple[str, str]]) -> StyleforgeError:
    """The error for face-alignment weight files that are not there: which file goes where, from which URL."""
    files = ", ".join(f"{n} ({u})" for n, u in missing)
    return StyleforgeError(f"face-alignment weights not found: download {files} and put them in "
                           f"{fan_checkpoint_dir()} (set TORCH_HOME to use another folder; 'styleforge fetch "
                           "landmarks' does that), or use {detector} dlib",
                           also={"detector": "the detector"})


class FaceAlignmentDetector(LandmarkDetector):
    """face-alignment's S3FD detector + 2D-FAN 68-point landmarks, on CPU unless ``device`` says otherwise.

    Never downloads implicitly: missing weights are a one-line error naming the files, the folder and the URLs
    (pass ``allow_download=True`` to let face-alignment fetch them).
    """

    name = "face-alignment"

    def __init__(self, device: str = "cpu", min_score: float = 0.5, allow_download: bool = False):
        if _package_dir("face_alignment") is None:
            raise StyleforgeError(f"the face-alignment detector is not installed: {FAN_EXTRA} (or: pip install face-alignment)")
        try:
            import face_alignment
        except ImportError as e:
            raise StyleforgeError(
                f"face-alignment is installed but cannot be imported ({e}); reinstall it: {FAN_EXTRA}"
            ) from None
        missing = fan_missing_weights(_fan_urls())
        if missing and not allow_download:
            raise fan_missing_error(missing)
        lt = getattr(face_alignment.LandmarksType, "TWO_D", None) or getattr(face_alignment.LandmarksType, "_2D")
        kwargs = dict(device=device, flip_input=False, face_detector="sfd",
                      face_detector_kwargs={"filter_threshold": float(min_score)})
        try:
            self.fa = face_alignment.FaceAlignment(lt, compile=False, **kwargs)
        except TypeError:  # versions before 1.5 have no compile argument
            self.fa = face_alignment.FaceAlignment(lt, **kwargs)
        except Exception as e:  # a corrupt or wrong weight file, or a failed download
            folder = fan_checkpoint_dir()
            raise StyleforgeError(
                f"face-alignment could not load its weights from {folder} ({type(e).__name__}: {str(e).strip()[:100]}); "
                f"delete the damaged file(s) there and download them again"
            ) from None

    def detect(self, image: np.ndarray) -> List[Face]:
        img = _rgb_uint8(image)
        res = self.fa.get_landmarks_from_image(img, return_bboxes=True)
        landmarks, _, boxes = res if isinstance(res, tuple) else (res, None, None)
        faces = []
        for i, lm in enumerate(landmarks or []):
            lm = np.asarray(lm, dtype=np.float64)[:, :2]
            if boxes is not None and i < len(boxes):
                b = np.asarray(boxes[i], dtype=np.float64)
                box, score = tuple(float(v) for v in b[:4]), float(b[4]) if b.shape[0] > 4 else 1.0
            else:
                lo, hi = lm.min(axis=0), lm.max(axis=0)
                box, score = (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])), 1.0
            faces.append(Face(box=box, score=score, landmarks68=lm))
        return _rank(faces)


DETECTORS = {"dlib": DlibDetector, "face-alignment": FaceAlignmentDetector}


@functools.lru_cache(maxsize=4)
def _cached(name: str, items: Tuple) -> LandmarkDetector:
    return DETECTORS[name](**dict(items))


def get_detector(name: str = "dlib", **kwargs) -> LandmarkDetector:
    """A (cached) detector by name: ``dlib`` or ``face-alignment``. Loading the models takes about a second."""
    key = (name or "dlib").lower().replace("_", "-")
    if key == "fan":
        key = "face-alignment"
    if key not in DETECTORS:
        raise StyleforgeError(f"unknown; use {' or '.join(DETECTORS)}", param="detector", value=repr(name))
    return _cached(key, tuple(sorted(kwargs.items())))
