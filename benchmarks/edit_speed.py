#!/usr/bin/env python3
"""Editing speed: SeFa on an FFHQ-1024-sized generator, GANSpace over 100k samples, the SVM at 20 + 20 and
5k + 5k, and edit.py's images/s (rendering + strip, GIF and per-strength latents written).

Random weights of the full-size configs (benchmarks/fullsize.py) and the bundled faces32; fp32,
``torch.set_num_threads(--threads)``. Prints min and median seconds over ``--runs`` timed runs after a warm-up
(the machine is shared and noisy: compare minima).

    python benchmarks/edit_speed.py
    python benchmarks/edit_speed.py --only sefa,svm --runs 5
    python benchmarks/edit_speed.py --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))
from fullsize import full_size_generator  # noqa: E402

CASES = ("sefa", "ganspace", "svm", "edit")


def timed(fn, runs: int):
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def report(what: str, best: float, median: float, per=None):
    extra = ""
    if per is not None:
        n, unit = per
        extra = f"   {n / best:8.2f} / {n / median:8.2f} {unit}/s (best / median)"
    print(f"{what:48s} {best:9.4f} s best  {median:9.4f} s median{extra}", flush=True)


def bench_sefa(args, dev):
    from styleforge.directions.sefa import sefa

    G = full_size_generator("ffhq1024").to(dev)
    for layers in ("all", "0-1", "2-5", "6-13"):
        report(f"SeFa, FFHQ-1024 sized, layers {layers}, top 5", *timed(lambda: sefa(G, layers, 5), args.runs))


def bench_ganspace(args, dev):
    from styleforge.directions.ganspace import pca_w

    G = full_size_generator("ffhq1024").to(dev)
    n = args.samples
    report(f"GANSpace, {n} samples of an FFHQ-sized W, 80 comp.",
           *timed(lambda: pca_w(G, n, 80), max(1, args.runs // 2)), per=(n, "samples"))


def bench_svm(args, dev):
    import numpy as np

    from styleforge.directions.svm import learn_direction

    rs = np.random.RandomState(0)
    n_true = rs.randn(512)
    n_true /= np.linalg.norm(n_true)
    mu = rs.randn(512)
    for n in (20, 5000):
        # the tests' planted split: mean +- the direction, per-dimension noise 0.1 (held-out 30 %)
        pos = mu + n_true + 0.1 * rs.randn(n, 512)
        neg = mu - n_true + 0.1 * rs.randn(n, 512)
        res = learn_direction(pos, neg)
        best, med = timed(lambda: learn_direction(pos, neg), args.runs)
        report(f"SVM, {n} + {n} in 512-D (cosine {res.direction.vector @ n_true:.3f}, "
               f"val acc {res.val_accuracy:.2f})", best, med)


def bench_edit(args, dev):
    import torch

    from styleforge import zoo
    from styleforge.utils.perf import tune_cpu_allocator
    from styleforge.directions import Direction
    from styleforge.directions.edit import edit_latents
    from styleforge.directions.render import seeds_to_ws

    if dev.type == "cpu":
        tune_cpu_allocator()  # as the edit command does
    nets = {"faces32": zoo.load_generator(None, dev)[0], "paper256": full_size_generator("paper256").to(dev)}
    strengths = [-3, -2, -1, 0, 1, 2, 3, 4]
    for name, G in nets.items():
        ws = seeds_to_ws(G, range(2))
        d = Direction(torch.randn(G.w_dim).numpy())
        with tempfile.TemporaryDirectory() as tmp:
            best, med = timed(lambda: edit_latents(G, ws, d, strengths, tmp, layers="0-7"), args.runs)
        report(f"edit.py pipeline, {name}, 2 inputs x 8 strengths", best, med, per=(len(ws) * len(strengths), "img"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(CASES), help=f"comma list of {', '.join(CASES)}")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samples", type=int, default=100_000, help="GANSpace samples")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    import torch

    from styleforge.utils.runtime import resolve_device

    torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    print(f"torch {torch.__version__}, device {dev}, {args.threads} threads, {args.runs} runs", flush=True)
    for case in args.only.split(","):
        globals()[f"bench_{case.strip()}"](args, dev)


if __name__ == "__main__":
    main()
