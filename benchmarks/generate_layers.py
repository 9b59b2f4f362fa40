#!/usr/bin/env python3
"""Per-layer generator time on CPU (min over runs): where a full-size paper256 / FFHQ-1024 image spends its time.

Whole-network timings on a shared 2-core machine swing by 10-15 % between runs; per-layer minima are steadier
and show which layer a change helps. Forward hooks time every SynthesisLayer and ToRGBLayer of G (fp32, batch 1,
noise const, allocator tuned as generate.py does); ``--compare winograd|winograd4|prepad`` also times each
layer with that fast path switched off, alternating runs.

    python benchmarks/generate_layers.py                          # paper256
    python benchmarks/generate_layers.py --only ffhq1024 --compare prepad
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from fullsize import CONFIGS, full_size_generator  # noqa: E402

# name -> (module constant that switches the path off when set to the value)
SWITCHES = {"winograd": ("WINOGRAD_MAX_PIXELS", 0), "winograd4": ("WINOGRAD4_MAX_PIXELS", 0),
            "prepad": ("PREPAD_MIN_PIXELS", 1 << 40)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=sorted(CONFIGS), default="paper256")
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compare", choices=sorted(SWITCHES))
    a = ap.parse_args()

    import torch

    sys.path.insert(0, str(ROOT / "src"))
    from styleforge.networks import ops
    from styleforge.networks.layers import SynthesisLayer, ToRGBLayer
    from styleforge.utils.perf import tune_cpu_allocator

    tune_cpu_allocator()
    torch.set_num_threads(a.threads)
    G = full_size_generator(a.only)
    z = torch.randn(1, G.z_dim)
    times = collections.defaultdict(lambda: collections.defaultdict(list))
    mode = ["on"]
    started = {}

    def pre(m, inp):
        started[m] = time.perf_counter()

    def post(m, inp, out):
        times[names[m]][mode[0]].append(time.perf_counter() - started[m])

    names = {}
    for name, m in G.named_modules():
        if isinstance(m, (SynthesisLayer, ToRGBLayer)):
            names[m] = name.replace("synthesis.", "")
            m.register_forward_pre_hook(pre)
            m.register_forward_hook(post)
    modes = ["on", "off"] if a.compare else ["on"]
    const, off_value = SWITCHES[a.compare] if a.compare else (None, None)
    on_value = getattr(ops, const) if const else None
    with torch.no_grad():
        for _ in range(a.runs):
            for md in modes:
                if const:
                    setattr(ops, const, on_value if md == "on" else off_value)
                mode[0] = "warm"
                G(z)
                mode[0] = md
                G(z)
    header = f"{'layer':14s} {'ms (min)':>9s}" + (f" {a.compare + ' off':>14s}" if a.compare else "")
    print(header)
    total = collections.Counter()
    for name, by_mode in times.items():
        row = f"{name:14s}"
        for md in modes:
            t = min(by_mode[md]) * 1e3
            total[md] += t
            row += f" {t:9.2f}" if md == "on" else f" {t:14.2f}"
        print(row)
    print(f"{'sum':14s} {total['on']:9.1f}" + (f" {total['off']:14.1f}" if a.compare else ""))


if __name__ == "__main__":
    main()
