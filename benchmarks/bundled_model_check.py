#!/usr/bin/env python3
"""Measure a face generator the way issue 3 asks: face rate, diversity and memorisation on 200 samples.

Samples are brought to 25x25 grayscale (the size of scikit-image's ``lfw_subset`` faces) and compared to the
100 real faces the bundled model is trained on:

1. face rate: a HOG + logistic-regression face / non-face classifier rates the share of samples that are faces.
   Negatives are lfw_subset's 100 non-faces plus white noise and smooth random blobs (a faces-vs-non-faces
   classifier alone would call pure noise a face). Its cross-validated accuracy is printed too.
2. diversity: mean pairwise L2 distance of the samples divided by that of the real faces (>= 0.6 wanted).
3. near-copies: share of samples closer to some training face than half the real faces' median
   nearest-neighbour distance (<= 10 % wanted).

    python benchmarks/bundled_model_check.py                       # the bundled default model
    python benchmarks/bundled_model_check.py --network run/network-snapshot-000200.safetensors --json out.json
    python benchmarks/bundled_model_check.py --real                # the check applied to real faces (sanity)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def hog_features(imgs: np.ndarray) -> np.ndarray:
    from skimage.feature import hog

    return np.stack([hog(im, orientations=9, pixels_per_cell=(5, 5), cells_per_block=(2, 2)) for im in imgs])


def negatives(rng: np.random.RandomState, nonfaces: np.ndarray, n: int = 100) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    noise = rng.rand(n, 25, 25)
    blobs = np.stack([gaussian_filter(rng.rand(25, 25), sigma=rng.uniform(1.5, 4.0)) for _ in range(n)])
    blobs = (blobs - blobs.min(axis=(1, 2), keepdims=True)) / np.ptp(blobs, axis=(1, 2), keepdims=True)
    return np.concatenate([nonfaces, noise, blobs])


def face_classifier(faces: np.ndarray, nonfaces: np.ndarray, seed: int = 0):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.RandomState(seed)
    pos = np.concatenate([faces, faces[:, :, ::-1]])  # mirrored faces are faces
    neg = negatives(rng, nonfaces)
    X = hog_features(np.concatenate([pos, neg]))
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    acc = cross_val_score(clf, X, y, cv=5).mean()
    clf.fit(X, y)
    return clf, float(acc)


def to_gray25(imgs_uint8: np.ndarray) -> np.ndarray:
    """[N, H, W, C] uint8 -> [N, 25, 25] float in [0, 1] (luma, area-style resize)."""
    from PIL import Image

    out = []
    for im in imgs_uint8:
        pil = Image.fromarray(im[:, :, 0] if im.shape[2] == 1 else im).convert("L")
        out.append(np.asarray(pil.resize((25, 25), Image.BOX), dtype=np.float64) / 255.0)
    return np.stack(out)


def sample_network(network, n: int, trunc: float) -> np.ndarray:
    import torch

    from styleforge.images import uint8_as_generate as to_uint8
    from styleforge.latents import seed_to_z
    from styleforge.zoo import load_generator

    G, _ = load_generator(network, "cpu")
    imgs = []
    with torch.no_grad():
        for s0 in range(0, n, 25):
            seeds = range(s0, min(n, s0 + 25))
            z = torch.from_numpy(np.stack([seed_to_z(s, G.z_dim) for s in seeds]))
            c = None
            if G.c_dim:
                raise SystemExit("this check is for unconditional face models")
            imgs.append(to_uint8(G(z, c, truncation_psi=trunc)))
    return np.concatenate(imgs)


def mean_pairwise(x: np.ndarray) -> float:
    from scipy.spatial.distance import pdist

    return float(pdist(x.reshape(len(x), -1)).mean())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--network", default=None, help="network file (default: the bundled default model)")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--trunc", type=float, default=1.0)
    ap.add_argument("--real", action="store_true", help="run the measurements on the real faces instead")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    a = ap.parse_args()

    from scipy.spatial.distance import cdist
    from skimage.data import lfw_subset

    data = lfw_subset()
    faces, nonfaces = data[:100], data[100:]
    clf, cv_acc = face_classifier(faces, nonfaces)
    if a.real:
        samples = faces
    else:
        samples = to_gray25(sample_network(a.network, a.n, a.trunc))
    face_rate = float(clf.predict(hog_features(samples)).mean())
    diversity = mean_pairwise(samples) / mean_pairwise(faces)
    d_real = cdist(faces.reshape(100, -1), faces.reshape(100, -1))
    np.fill_diagonal(d_real, np.inf)
    nn_median = float(np.median(d_real.min(axis=1)))
    d = cdist(samples.reshape(len(samples), -1), faces.reshape(100, -1)).min(axis=1)
    if a.real:  # a real face's nearest *other* face
        d = d_real.min(axis=1)
    near_copy = float((d < 0.5 * nn_median).mean())
    out = {
        "network": a.network or "bundled default", "samples": int(len(samples)), "trunc": a.trunc,
        "classifier_cv_accuracy": round(cv_acc, 4),
        "face_rate": round(face_rate, 4), "face_rate_target": ">= 0.80",
        "diversity_ratio": round(diversity, 4), "diversity_target": ">= 0.60",
        "near_copy_rate": round(near_copy, 4), "near_copy_target": "<= 0.10",
        "passes": bool(face_rate >= 0.8 and diversity >= 0.6 and near_copy <= 0.1),
    }
    print(json.dumps(out, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
