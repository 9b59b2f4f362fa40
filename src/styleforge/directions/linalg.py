"""The symmetric eigensolver SeFa and GANSpace share."""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch


def eigh_descending(m: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(eigenvalues descending, unit eigenvectors as rows) of a symmetric matrix, real and orthonormal; each
    vector's sign fixed so that its largest entry is positive (reproducible directions).

    Solved by torch in float64 on one CPU thread: a w_dim x w_dim problem gains nothing from threads, and LAPACK
    threads competing with torch's still-spinning OpenMP workers made a 512 x 512 solve take 0.3-4 s instead of
    0.03 s on a 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        vals, vecs = torch.linalg.eigh(torch.as_tensor(np.asarray(m, dtype=np.float64)))
    finally:
        torch.set_num_threads(n)
    vals, vecs = vals.numpy()[::-1], vecs.numpy()[:, ::-1].T  # eigh: ascending, vectors in columns
    signs = np.sign(vecs[np.arange(len(vecs)), np.abs(vecs).argmax(axis=1)])
    return vals.copy(), (vecs * signs[:, None]).copy()
