#!/usr/bin/env python3
"""FFHQ alignment speed on CPU: aligned photos per second on astronaut-sized (512x512) photos.

Builds ``--photos`` variants of ``skimage.data.astronaut()`` (mirrored, shifted, re-lit) in a temporary folder
and times ``align_images`` over the whole folder (read + dlib detection + alignment + PNG/JSON writing), plus
detection alone and alignment alone. Each case runs ``--runs`` times after a warm-up; prints photos/s from the
fastest run and from the median run. The machine is shared and noisy, so compare the best figures.

    python benchmarks/align_speed.py
    python benchmarks/align_speed.py --runs 5 --photos 8 --sizes 256,1024
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def make_photos(n: int) -> list:
    from skimage import data

    base = data.astronaut()
    out = []
    for i in range(n):
        img = base[:, ::-1] if i % 2 else base
        dy, dx = (i * 7) % 40 - 20, (i * 13) % 40 - 20
        img = np.roll(img, (dy, dx), axis=(0, 1))
        img = np.clip(img.astype(np.float32) * (0.85 + 0.05 * (i % 5)), 0, 255).astype(np.uint8)
        out.append(np.ascontiguousarray(img))
    return out


def timed(fn, runs: int):
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=6, help="photos per run")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sizes", default="256,1024", help="output sizes to time")
    a = ap.parse_args()

    from PIL import Image

    from styleforge.align import align_face, align_images, get_detector
    from styleforge.align.batch import default_transform_size

    t0 = time.perf_counter()
    det = get_detector("dlib")
    print(f"dlib model load: {time.perf_counter() - t0:.2f} s (once per process, not in the figures below)")
    photos = make_photos(a.photos)
    n = len(photos)
    faces = [det.detect(p)[0] for p in photos]

    rows = []
    bmin, bmed = timed(lambda: [det.detect(p) for p in photos], a.runs)
    rows.append(("detect only (dlib HOG + 68 points)", "-", bmin, bmed))
    sizes = [int(s) for s in a.sizes.split(",") if s.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        for i, p in enumerate(photos):
            Image.fromarray(p).save(src / f"p{i:02d}.png")
        for size in sizes:
            cases = [(default_transform_size(size), "")]
            if default_transform_size(size) != 4096:
                cases.append((4096, " (FFHQ canvas)"))
            for ts, note in cases:
                bmin, bmed = timed(lambda: [align_face(p, f.landmarks68, size, ts) for p, f in zip(photos, faces)], a.runs)
                rows.append((f"align only, {size}px, canvas {ts}{note}", size, bmin, bmed))
            k = [0]

            def batch():
                k[0] += 1
                align_images(src, Path(tmp) / f"out{size}_{k[0]}", size=size, detector=det, skip_existing=False)

            bmin, bmed = timed(batch, a.runs)
            rows.append((f"align_images end to end, {size}px", size, bmin, bmed))

    print(f"{n} photos of 512x512 per run, {a.runs} timed runs after a warm-up")
    print(f"{'case':48s} {'photos/s best':>13s} {'photos/s median':>15s} {'s/photo best':>12s}")
    for name, _, tmin, tmed in rows:
        print(f"{name:48s} {n / tmin:13.2f} {n / tmed:15.2f} {tmin / n:12.3f}")


if __name__ == "__main__":
    main()
