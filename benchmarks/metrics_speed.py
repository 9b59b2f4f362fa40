#!/usr/bin/env python3
"""Metrics speed and memory: images/s of feature extraction on CPU, and peak memory against the number of images.

1. ``extract``: images/s of ``det(images_uint8, return_features=True)`` (what FID and KID call per batch) with the
   library's tiny stand-in detector and with an Inception-sized TorchScript stand-in (the same kind of net with the
   library's ``INCEPTION_SCALE`` widths, near Inception-v3's 5.7 G multiply-adds per 299 px image; the count of its
   convolutions is printed). Inputs are
   uint8 batches at ``--res`` px; both detectors resize inside, as the official file does. Min and median over
   ``--runs`` timed runs after a warm-up (the machine is shared and noisy: compare minima).
2. ``memory``: peak RSS of a fresh process computing ``fidN`` / ``kidN`` (N generated images from a tiny 16 px
   generator, small stand-in detector, 24 real images), for several N. Streaming statistics (FID) and disk-backed
   features (KID) keep it flat in N; the 50k figure is measured when ``50k`` is in ``--sizes``, else the
   largest N's peak is the estimate.

    python benchmarks/metrics_speed.py
    python benchmarks/metrics_speed.py --only extract --runs 5 --batch 64
    python benchmarks/metrics_speed.py --only memory --sizes 1k,10k,50k --metrics fid,kid
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))



def conv_macs(widths, features, size) -> int:
    """Multiply-adds of the stand-in's 3x3 convolutions on one image (each stage after the first halves the size)."""
    macs, c, s = 0, 3, size
    for i, w in enumerate(tuple(widths) + (features,)):
        if i > 0:
            s //= 2
        macs += c * w * 9 * s * s
        c = w
    return macs


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM) in MiB."""
    with open("/proc/self/status") as f:
        return int(next(ln.split()[1] for ln in f if ln.startswith("VmHWM:"))) / 1024


def timed(fn, runs: int):
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def bench_extract(args, tmp: Path) -> None:
    import torch

    from styleforge.perceptual import load_detector, save_detector_standin
    from styleforge.perceptual.standins import INCEPTION_SCALE

    torch.set_num_threads(args.threads)
    x = torch.randint(0, 256, [args.batch, 3, args.res, args.res], dtype=torch.uint8)
    cases = [("small stand-in (library default)", {}),
             ("Inception-sized stand-in", INCEPTION_SCALE)]
    for what, kw in cases:
        det = load_detector("inception", save_detector_standin(tmp / f"det{len(kw)}.pt", **kw))
        macs = conv_macs(kw.get("widths", (8, 16, 32)), kw.get("features", 64), kw.get("size", 32))

        def run():
            with torch.no_grad():
                det(x, return_features=True)

        best, med = timed(run, args.runs)
        del det
        print(f"{what:36s} {macs / 1e6:8.1f} M MACs/img   {args.batch / best:9.1f} img/s best  "
              f"{args.batch / med:9.1f} img/s median  (batch {args.batch}, {args.res} px uint8 in, "
              f"{args.threads} threads; peak RSS so far {peak_rss_mib():.0f} MiB)", flush=True)


def _parse_size(s: str) -> int:
    s = s.strip().lower()
    return int(float(s[:-1]) * 1000) if s.endswith("k") else int(s)


CHILD = r"""
import json, sys, time
sys.path.insert(0, {src!r})
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads({threads})
from conftest import tiny_generator
from styleforge.metrics import MetricOptions, calc_metric
def hwm():  # this process's peak RSS in KiB (VmHWM; ru_maxrss would include the parent's peak before exec)
    return int(next(ln.split()[1] for ln in open("/proc/self/status") if ln.startswith("VmHWM:")))
before = hwm()
G = tiny_generator()
t0 = time.perf_counter()
res = calc_metric({name!r}, G, {data!r}, options=MetricOptions(inception={det!r}, batch_size=64,
                                                                cache_dir={cache!r}))
print(json.dumps(dict(name={name!r}, seconds=time.perf_counter() - t0, results=res.results,
                      rss_before_kib=before, peak_kib=hwm())))
"""


def bench_memory(args, tmp: Path) -> None:
    import numpy as np
    from PIL import Image

    from styleforge.perceptual import save_detector_standin

    data = tmp / "reals"
    data.mkdir()
    rs = np.random.RandomState(0)
    for i in range(24):
        Image.fromarray(rs.randint(0, 256, (16, 16, 3), dtype=np.uint8)).save(data / f"{i:03d}.png")
    det = save_detector_standin(tmp / "det.pt")
    sizes = [_parse_size(s) for s in args.sizes.split(",")]
    for metric in args.metrics.split(","):
        peaks = []
        for n in sizes:
            name = f"{metric}{n // 1000}k"
            code = CHILD.format(src=str(ROOT / "src"), tests=str(ROOT / "tests"), threads=args.threads, name=name,
                                data=str(data), det=str(det), cache=str(tmp / "cache"))
            r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            if r.returncode != 0:
                print(f"{name}: failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
                continue
            out = json.loads(r.stdout.strip().splitlines()[-1])
            peaks.append((n, out["peak_kib"]))
            print(f"{name:10s} {n:7d} images  {out['seconds']:7.1f} s ({n / out['seconds']:7.0f} img/s)  peak RSS "
                  f"{out['peak_kib'] / 1024:7.1f} MiB (after imports {out['rss_before_kib'] / 1024:6.1f} MiB)  "
                  f"{json.dumps(out['results'])}", flush=True)
        if len(peaks) >= 2:
            (n0, p0), (n1, p1) = peaks[0], peaks[-1]
            slope = (p1 - p0) / 1024 / max(n1 - n0, 1) * 1000
            est = p1 / 1024 + slope * (50000 - n1) / 1000 if n1 < 50000 else p1 / 1024
            print(f"{metric}: peak RSS grows {slope:+.3f} MiB per 1k images from {n0} to {n1}; at 50k: "
                  f"{est:.0f} MiB ({'measured' if n1 >= 50000 else 'extrapolated'})", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="extract,memory")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--res", type=int, default=256, help="input images (px) of the extraction benchmark")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", default="2k,10k,50k", help="image counts of the memory benchmark")
    ap.add_argument("--metrics", default="fid,kid", help="metric families of the memory benchmark")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        for case in args.only.split(","):
            {"extract": bench_extract, "memory": bench_memory}[case](args, Path(d))


if __name__ == "__main__":
    main()
