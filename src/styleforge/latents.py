"""Latents: seeds to z, class labels, and latent files.

- :func:`seed_to_z`: z for a seed exactly as the official scripts draw it, so a seed gives the official image.
- :func:`class_label`: the one-hot label of a conditional network, with the checks users need.
- :func:`load_ws`: latents from an ``.npz`` with ``w`` [N, num_ws, w_dim] (what ``generate.py --projected-w``,
  the projector and the editing tools read and write); large files are written with
  :func:`styleforge.utils.fileio.npz_stream`.
- :func:`check_truncation`: truncation psi must be finite.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from .errors import StyleforgeError, StyleforgeWarning


def seed_to_z(seed: int, z_dim: int) -> np.ndarray:
    """The official latent for ``seed``: ``RandomState(seed).randn(1, z_dim)`` (float64), as a [z_dim] row."""
    return np.random.RandomState(seed).randn(1, z_dim)[0]


def class_label(G, class_idx: Optional[int], device) -> Optional[torch.Tensor]:
    """One-hot [1, c_dim] label for a conditional network ``G``; None for an unconditional one (a class given
    to it is ignored with a warning)."""
    c_dim = getattr(G, "c_dim", 0)
    if c_dim == 0:
        if class_idx is not None:
            warnings.warn(StyleforgeWarning("{name} is ignored: the network is unconditional", param="class_idx",
                                            label="the class"))
        return None
    if class_idx is None:
        raise StyleforgeError(f"the network is conditional ({c_dim} classes): pass {{name}} 0..{c_dim - 1}",
                              param="class_idx", label="class")
    if not 0 <= class_idx < c_dim:
        raise StyleforgeError(f"out of range: the network has classes 0..{c_dim - 1}", param="class_idx",
                              label="class", value=class_idx)
    c = torch.zeros([1, c_dim], device=device)
    c[0, class_idx] = 1
    return c


def load_ws(path: Union[str, os.PathLike], num_ws: int, w_dim: int) -> np.ndarray:
    """Read latents from an npz with key ``w`` shaped [N, num_ws, w_dim] (a [N, w_dim] array is broadcast).
    Rows holding NaN or infinite values are refused (they would only make black images)."""
    path = Path(path)
    if not path.is_file():
        raise StyleforgeError(f"{path}: no such latent file (expected an .npz with key 'w')")
    try:
        with np.load(path) as data:
            if "w" not in data:
                raise StyleforgeError(f"{path}: has no array 'w' (keys: {list(data.keys())}); save latents as w=[N, num_ws, w_dim]")
            w = np.asarray(data["w"], dtype=np.float32)
    except StyleforgeError:
        raise
    except Exception as e:
        raise StyleforgeError(f"{path}: not a readable .npz file ({type(e).__name__}); re-create it") from None
    if w.ndim == 2 and w.shape[1] == w_dim:
        w = np.repeat(w[:, None, :], num_ws, axis=1)
    if w.ndim != 3 or w.shape[1:] != (num_ws, w_dim):
        raise StyleforgeError(f"{path}: 'w' has shape {list(w.shape)}, this network needs [N, {num_ws}, {w_dim}]")
    bad = np.flatnonzero(~np.isfinite(w).all(axis=(1, 2)))
    if len(bad):
        rows = ", ".join(map(str, bad[:5])) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise StyleforgeError(f"{path}: row(s) {rows} of 'w' hold NaN or infinite values; re-create the file")
    return w


def check_truncation(psi: float) -> float:
    """Truncation psi must be a finite number (NaN or inf would only make black images)."""
    if not math.isfinite(psi):
        raise StyleforgeError("must be a finite number, e.g. 0.7 (1 = no truncation)", param="truncation_psi",
                              label="truncation psi", value=psi)
    return psi
