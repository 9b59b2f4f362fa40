"""Learn a direction with a linear SVM (InterFaceGAN's method, on scikit-learn): the unit normal of the hyperplane
that separates positive from negative latents.

Where the labelled latents come from:

- two sets of latents, e.g. two folders of ``projected_w.npz`` (:func:`load_latent_folder`);
- latents with scores (a file of scores, or a scoring function run on their images): the highest and lowest
  scoring are the positives and negatives (:func:`split_by_score`);
- random samples of the network, scored by a user's function (:func:`sample_and_score`).

The classifier is ``sklearn.svm.SVC(kernel="linear")`` (InterFaceGAN's), on W (one w per latent) or flattened W+.
Each side is split into training and held-out validation latents (``val_fraction``, 0.3 by default: 14 + 14 and
6 + 6 at 20 + 20 photos; InterFaceGAN's default 2 % ratio would select nothing there), with a seeded shuffle, so
the result is reproducible. Needs ``pip install 'styleforge[edit]'``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Tuple, Union

import numpy as np
import torch

from ..errors import StyleforgeError
from ..latents import load_ws
from ..utils.progress import Callback, reporter
from .direction import Direction
from .render import check_latents, seeds_to_ws, synthesize

PathLike = Union[str, os.PathLike]
SPACES = ("w", "w+")
INSTALL = "pip install 'styleforge[edit]'"


def require_sklearn():
    """``sklearn.svm``, or a one-line error naming the extra to install."""
    try:
        import sklearn.svm
    except ImportError:
        raise StyleforgeError(f"learning a direction needs scikit-learn: {INSTALL}") from None
    return sklearn.svm


# ---------------------------------------------------------------------------------------------------------------------
# Labelled latents

def load_latent_folder(folder: PathLike, num_ws: int, w_dim: int, param: Optional[str] = None
                       ) -> Tuple[np.ndarray, List[Path]]:
    """Every latent of every ``.npz`` with a ``w`` under ``folder`` (recursively, sorted; ``w`` [N, num_ws, w_dim],
    e.g. the projector's ``projected_w.npz``; other .npz files, such as ``projected_noise.npz``, are passed over):
    [M, num_ws, w_dim] and the files."""
    folder = Path(folder)
    if not folder.is_dir():
        raise StyleforgeError(f"{folder}: no such folder", param=param)
    files = sorted(p for p in folder.rglob("*.npz") if p.is_file() and _has_w(p))
    if not files:
        raise StyleforgeError(f"{folder}: holds no latent files (.npz with 'w', e.g. projected_w.npz)", param=param)
    return np.concatenate([load_ws(p, num_ws, w_dim) for p in files]), files


def _has_w(path: Path) -> bool:
    """Whether an .npz holds an array ``w`` (unreadable files count as yes, so that reading them says why)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return "w" in data.files
    except Exception:
        return True


def split_by_score(ws: np.ndarray, scores: np.ndarray, chosen: Union[int, float, None] = None
                   ) -> Tuple[np.ndarray, np.ndarray]:
    """(positives, negatives): the ``chosen`` highest and lowest scoring latents. ``chosen``: a count, or a ratio
    in (0, 0.5] of the latents; None: 2 % (InterFaceGAN's default) but at least 20 a side (at most half the
    latents each)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    n = len(ws)
    if len(scores) != n:
        raise StyleforgeError(f"{len(scores)} scores for {n} latents; give one score per latent", param="scores")
    if not np.isfinite(scores).all():
        raise StyleforgeError("scores hold NaN or infinite values", param="scores")
    if chosen is None:
        k = max(int(n * 0.02), 20)
    elif 0 < chosen <= 0.5 and not float(chosen).is_integer():
        k = int(n * chosen)
    elif float(chosen).is_integer() and chosen >= 1:
        k = int(chosen)
    else:
        raise StyleforgeError("use a count (e.g. 20) or a ratio in (0, 0.5] (e.g. 0.02)", param="chosen",
                              value=chosen)
    k = min(k, n // 2)
    if k < 2:
        raise StyleforgeError(f"{n} scored latents give {k} a side; need at least 2 a side (score more latents, "
                              "e.g. 40 or more, or choose more of them)")
    order = np.argsort(-scores, kind="stable")
    return ws[order[:k]], ws[order[n - k:]]


def load_scoring_function(spec: str) -> Callable:
    """A user's scoring function from ``package.module:function`` (imported) or ``path/to/file.py:function``
    (``:function`` optional, default ``score``). It is called with a batch of images, [B, H, W, C] uint8 (as
    ``generate.py`` writes them), and returns B numbers, higher = more of the attribute. It is the user's own
    code, run because they asked for it; nothing is unpickled."""
    spec = str(spec).strip()
    path_part, _, fn_name = spec.rpartition(":") if ":" in spec else (spec, "", "")
    if path_part.endswith(".py") or os.sep in path_part or "/" in path_part:
        path = Path(path_part)
        if not path.is_file():
            raise StyleforgeError(f"{path}: no such Python file", param="score_fn", label="scoring function")
        name = f"_styleforge_score_{abs(hash(str(path.resolve())))}"
        mod_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[name] = module
        try:
            mod_spec.loader.exec_module(module)
        except Exception as e:
            sys.modules.pop(name, None)
            raise StyleforgeError(f"{path} failed to load ({type(e).__name__}: {_short(e)})", param="score_fn",
                                  label="scoring function") from None
        fn_name = fn_name or "score"
    else:
        if not fn_name:
            raise StyleforgeError("give module:function, e.g. mypkg.scores:smile, or file.py[:function]",
                                  param="score_fn", label="scoring function", value=spec)
        try:
            module = importlib.import_module(path_part)
        except Exception as e:
            raise StyleforgeError(f"cannot import {path_part} ({type(e).__name__}: {_short(e)})", param="score_fn",
                                  label="scoring function") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise StyleforgeError(f"{path_part} has no function {fn_name!r}", param="score_fn", label="scoring function")
    fn.__styleforge_name__ = f"{path_part}:{fn_name}"
    return fn


def _short(e: BaseException) -> str:
    return " ".join(str(e).split())[:160] or type(e).__name__


def score_images(fn: Callable, images: np.ndarray) -> np.ndarray:
    """``fn(images)`` as a float array [B], with a one-line error when it raises or returns something else."""
    name = getattr(fn, "__styleforge_name__", getattr(fn, "__name__", "the scoring function"))
    try:
        out = fn(images)
        scores = np.asarray(out.detach().cpu() if isinstance(out, torch.Tensor) else out, dtype=np.float64).reshape(-1)
    except Exception as e:
        raise StyleforgeError(f"{name} raised {type(e).__name__}: {_short(e)}", param="score_fn",
                              label="scoring function") from None
    if len(scores) != len(images):
        raise StyleforgeError(f"{name} returned {len(scores)} score(s) for {len(images)} images; return one number "
                              "per image", param="score_fn", label="scoring function")
    if not np.isfinite(scores).all():
        raise StyleforgeError(f"{name} returned NaN or infinite scores", param="score_fn", label="scoring function")
    return scores


def score_latents(G: torch.nn.Module, ws, fn: Callable, batch_size: int = 8, callback: Optional[Callback] = None
                  ) -> np.ndarray:
    """Scores [N] of the images of latents ``ws`` [N, num_ws, w_dim] by ``fn`` (see :func:`load_scoring_function`)."""
    check_latents(ws, G)
    out = []
    with reporter(callback).stage("score", total=len(ws), unit="img") as advance:
        for i in range(0, len(ws), batch_size):
            chunk = ws[i: i + batch_size]
            out.append(score_images(fn, synthesize(G, chunk, batch_size=batch_size)))
            advance(len(chunk))
    return np.concatenate(out) if out else np.zeros(0)


def sample_and_score(G: torch.nn.Module, num_samples: int, fn: Callable, seed: int = 0, truncation_psi: float = 1.0,
                     class_idx: Optional[int] = None, batch_size: int = 8, callback: Optional[Callback] = None
                     ) -> Tuple[np.ndarray, np.ndarray]:
    """``num_samples`` random latents (seeds ``seed``, ``seed + 1``, ...) and their scores by ``fn``."""
    if num_samples < 4:
        raise StyleforgeError("need at least 4 samples (2 a side)", param="samples", value=num_samples)
    ws = seeds_to_ws(G, range(seed, seed + num_samples), truncation_psi, class_idx).cpu().numpy()
    return ws, score_latents(G, ws, fn, batch_size, callback)


# ---------------------------------------------------------------------------------------------------------------------
# The SVM

@dataclass
class SVMResult:
    direction: Direction
    space: str
    train_accuracy: float
    val_accuracy: Optional[float]
    n_train: Tuple[int, int]  # positives, negatives
    n_val: Tuple[int, int]

    def summary(self) -> str:
        val = (f"held-out accuracy {self.val_accuracy:.3f} on {self.n_val[0]} + {self.n_val[1]}"
               if self.val_accuracy is not None else "no held-out latents")
        return (f"{self.space} direction from {self.n_train[0]} + {self.n_train[1]} latents: training accuracy "
                f"{self.train_accuracy:.3f}, {val}")


def _features(ws: np.ndarray, space: str, param: str) -> np.ndarray:
    ws = np.asarray(ws, dtype=np.float64)
    if ws.ndim == 2:
        ws = ws[:, None, :]
    if space == "w":
        if not np.array_equal(ws, np.broadcast_to(ws[:, :1], ws.shape)):
            raise StyleforgeError(f"the {param} W+ latents (their layers differ) cannot train a W direction; use "
                                  "w+ (or project in W)", param="space", value="w")
        return ws[:, 0]
    return ws.reshape(len(ws), -1)


def latent_space(*sets: np.ndarray) -> str:
    """``w`` when every latent has the same w in every layer (W projections, seeds), else ``w+``."""
    for ws in sets:
        ws = np.asarray(ws)
        if ws.ndim == 3 and not np.array_equal(ws, np.broadcast_to(ws[:, :1], ws.shape)):
            return "w+"
    return "w"


def learn_direction(positives, negatives, space: Optional[str] = None, val_fraction: float = 0.3, seed: int = 0,
                    C: float = 1.0, name: str = "") -> SVMResult:
    """A linear SVM between ``positives`` and ``negatives`` ([N, num_ws, w_dim] or [N, w_dim]); the unit normal
    of its hyperplane as a :class:`Direction` (W: [w_dim]; W+: [num_ws, w_dim]) pointing to the positives, with the
    training and held-out validation accuracies. ``space``: ``w``, ``w+`` or None (W when every latent has the
    same w in every layer)."""
    svm = require_sklearn()
    pos, neg = np.asarray(positives), np.asarray(negatives)
    for arr, what in ((pos, "positive"), (neg, "negative")):
        if len(arr) < 2:
            raise StyleforgeError(f"{len(arr)} {what} latent(s): need at least 2 a side (one to train on, one to "
                                  "validate; 20 + 20 or more for a useful direction)", param=what)
    if pos.shape[1:] != neg.shape[1:]:
        raise StyleforgeError(f"positive latents are {list(pos.shape[1:])}, negative {list(neg.shape[1:])}: "
                              "they come from different networks", param="negative")
    if not 0 <= val_fraction < 1:
        raise StyleforgeError("must be in [0, 1), e.g. 0.3", param="val_fraction", value=val_fraction)
    space = space or latent_space(pos, neg)
    if space not in SPACES:
        raise StyleforgeError("use w or w+", param="space", value=repr(space))
    Xp, Xn = _features(pos, space, "positive"), _features(neg, space, "negative")
    rng = np.random.RandomState(seed)
    splits = []
    for X in (Xp, Xn):
        idx = rng.permutation(len(X))
        n_val = min(max(int(round(len(X) * val_fraction)), 1 if val_fraction > 0 else 0), len(X) - 1)
        splits.append((X[idx[n_val:]], X[idx[:n_val]]))
    (tp, vp), (tn, vn) = splits
    X = np.concatenate([tp, tn])
    y = np.r_[np.ones(len(tp)), np.zeros(len(tn))]
    clf = svm.SVC(kernel="linear", C=C).fit(X, y)
    normal = np.asarray(clf.coef_, dtype=np.float64).reshape(-1).copy()
    if not np.isfinite(normal).all() or not normal.any():
        raise StyleforgeError("the SVM found no separating direction (are the two sides the same latents?)",
                              param="negative")
    normal /= np.linalg.norm(normal)
    train_acc = float((clf.predict(X) == y).mean())
    val_acc = None
    if len(vp) + len(vn):
        Xv = np.concatenate([vp, vn])
        val_acc = float((clf.predict(Xv) == np.r_[np.ones(len(vp)), np.zeros(len(vn))]).mean())
    vector = normal if space == "w" else normal.reshape(pos.shape[-2] if pos.ndim == 3 else 1, -1)
    meta = {"space": space, "train_accuracy": train_acc, "val_accuracy": val_acc, "n_train": [len(tp), len(tn)],
            "n_val": [len(vp), len(vn)], "svm": {"kernel": "linear", "C": C}, "val_fraction": val_fraction,
            "seed": seed}
    d = Direction(vector.astype(np.float32), name=name, origin="svm", meta=meta)
    return SVMResult(d, space, train_acc, val_acc, (len(tp), len(tn)), (len(vp), len(vn)))
