#!/usr/bin/env python3
"""Generator speed on CPU: images/s and peak memory at the full-size paper256 and FFHQ-1024 configs.

Each configuration runs in its own subprocess (so peak RSS is per configuration), fp32, random weights,
noise const, ``torch.set_num_threads(--threads)``, glibc allocator tuned as generate.py does it on CPU
(``--no-malloc-tuning``: glibc defaults, 1.3x slower at 1024 px). Prints min and median seconds per batch
over ``--runs`` timed runs after a warm-up; the machine is shared and noisy, so compare minima.

    python benchmarks/generate_speed.py                 # all three configs
    python benchmarks/generate_speed.py --only paper256 --batch 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from fullsize import CONFIGS, full_size_generator  # noqa: E402
DEFAULT_CASES = [("paper256", 1), ("paper256", 8), ("ffhq1024", 1)]


def run_case(name: str, batch: int, runs: int, threads: int, fused, malloc_tuning: bool = True) -> dict:
    import resource

    import torch

    sys.path.insert(0, str(ROOT / "src"))
    from styleforge.utils.perf import tune_cpu_allocator

    if malloc_tuning:  # what generate.py does on CPU
        tune_cpu_allocator()
    torch.set_num_threads(threads)
    G = full_size_generator(name)
    z = torch.randn(batch, G.z_dim)
    times = []
    with torch.no_grad():
        G(z, fused_modconv=fused)  # warm-up
        for _ in range(runs):
            t0 = time.perf_counter()
            G(z, fused_modconv=fused)
            times.append(time.perf_counter() - t0)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "config": name, "batch": batch, "threads": threads, "runs": runs,
        "min_s": min(times), "median_s": statistics.median(times),
        "img_per_s_best": batch / min(times), "img_per_s_median": batch / statistics.median(times),
        "peak_rss_mib": round(peak_mib, 1),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=sorted(CONFIGS))
    ap.add_argument("--batch", type=int)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fused", choices=["auto", "yes", "no"], default="auto")
    ap.add_argument("--no-malloc-tuning", action="store_true",
                    help="leave glibc's allocator alone (see styleforge.utils.perf.tune_cpu_allocator)")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    a = ap.parse_args()
    fused = {"auto": None, "yes": True, "no": False}[a.fused]
    if a.case:
        name, batch = a.case.split(":")
        print(json.dumps(run_case(name, int(batch), a.runs, a.threads, fused, not a.no_malloc_tuning)))
        return
    cases = [(n, b) for n, b in DEFAULT_CASES if (a.only in (None, n)) and (a.batch in (None, b))]
    if a.only and a.batch and not cases:
        cases = [(a.only, a.batch)]
    print(f"{'config':10s} {'batch':>5s} {'img/s best':>10s} {'img/s median':>12s} {'peak MiB':>9s}")
    for name, batch in cases:
        runs = a.runs if name != "ffhq1024" else max(3, a.runs - 2)
        out = subprocess.run(
            [sys.executable, __file__, "--case", f"{name}:{batch}", "--runs", str(runs), "--threads", str(a.threads),
             "--fused", a.fused] + (["--no-malloc-tuning"] if a.no_malloc_tuning else []),
            capture_output=True, text=True, check=True,
        ).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        print(f"{name:10s} {batch:5d} {r['img_per_s_best']:10.2f} {r['img_per_s_median']:12.2f} {r['peak_rss_mib']:9.0f}")


if __name__ == "__main__":
    main()
