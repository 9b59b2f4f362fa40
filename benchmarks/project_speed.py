#!/usr/bin/env python3
"""Projector speed on CPU: seconds per optimisation step and peak memory, full-size generators.

Each case runs in its own subprocess (so peak RSS is per case): a paper256 or FFHQ-1024 generator with random
weights (fp32, 8-layer mapping, channel_max 512, architecture skip) and a VGG16-shaped random conv net as the
perceptual loss (13 3x3 convs, 64-512 channels, LPIPS-style taps, on 256x256 input: the cost of NVIDIA's
vgg16.pt without needing the file), saved as a TorchScript file with vgg16.pt's call signature and loaded
through the same class as the real file (``--vgg-runtime eager``, the default: the graph walked eagerly with
styleforge's convolutions; ``torchscript``: the TorchScript runtime), ``torch.set_num_threads(--threads)``. ``--warmup`` untimed steps
(3: while the heap still grows, the first steps at 1024 px take 2x longer; a real projection runs 1,000
steps), then ``--steps`` timed steps of :func:`styleforge.project.projector.project`; the W statistics
(10,000 mappings) are timed separately. The machine is shared and noisy, so compare the minima.

    python benchmarks/project_speed.py                      # default cases
    python benchmarks/project_speed.py --only paper256 --batch 4 --space w+
    python benchmarks/project_speed.py --no-malloc-tuning     # glibc defaults (slower at 1024 px)
    python benchmarks/project_speed.py --vgg-runtime torchscript  # the VGG graph as shipped
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
DEFAULT_CASES = [("paper256", 1), ("paper256", 4), ("ffhq1024", 1), ("ffhq1024", 2)]
OFFICIAL_S_PER_STEP = {"paper256": 1.14, "ffhq1024": 7.2}  # official projector.py on this machine, batch 1


def run_case(name: str, batch: int, steps: int, threads: int, space: str, malloc_tuning: bool = True,
             warmup: int = 3, vgg_runtime: str = "eager") -> dict:
    import resource
    import tempfile

    import torch

    sys.path.insert(0, str(ROOT / "src"))
    from styleforge.perceptual import VGG16_LAYOUT, VGG16LPIPS, RandomConvFeatures
    from styleforge.project.projector import compute_w_stats, project
    from styleforge.utils.perf import tune_cpu_allocator

    tuned = tune_cpu_allocator() if malloc_tuning else False
    torch.set_num_threads(threads)
    res = CONFIGS[name][0]
    G = full_size_generator(name)
    with tempfile.TemporaryDirectory() as tmp:
        path = RandomConvFeatures(VGG16_LAYOUT).save_torchscript(Path(tmp) / "vgg16.pt")
        vgg = VGG16LPIPS(path, eager=vgg_runtime == "eager")
    assert vgg.runs_eager == (vgg_runtime == "eager"), vgg.net
    targets = torch.randint(0, 256, (batch, 3, res, res)).float()
    stats = compute_w_stats(G)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    r = project(G, targets, vgg, num_steps=warmup + steps, space=space, stats=stats)
    total = time.perf_counter() - t0
    times = r.step_seconds[warmup:]
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "config": name, "batch": batch, "space": space, "threads": threads, "steps": steps, "malloc_tuned": tuned,
        "vgg": vgg.describe(),
        "min_s_per_step": min(times), "median_s_per_step": statistics.median(times),
        "min_s_per_step_per_target": min(times) / batch,
        "w_stats_s": stats.seconds, "total_s": total,
        "peak_rss_mib": round(peak_mib, 1), "rss_before_projection_mib": round(rss_before, 1),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=sorted(CONFIGS))
    ap.add_argument("--batch", type=int)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (the heap grows during the first 2-3)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--space", choices=["w", "w+"], default="w")
    ap.add_argument("--no-malloc-tuning", action="store_true",
                    help="leave glibc's allocator alone (see styleforge.utils.perf.tune_cpu_allocator)")
    ap.add_argument("--vgg-runtime", choices=["eager", "torchscript"], default="eager",
                    help="how the VGG16 TorchScript file runs (see styleforge.perceptual.scripted)")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.case:
        name, batch = a.case.split(":")
        print(json.dumps(run_case(name, int(batch), a.steps, a.threads, a.space, not a.no_malloc_tuning, a.warmup,
                                  a.vgg_runtime)))
        return
    cases = [(n, b) for n, b in DEFAULT_CASES if (a.only in (None, n)) and (a.batch in (None, b))]
    if a.only and a.batch and not cases:
        cases = [(a.only, a.batch)]
    print(f"perceptual net: VGG16-shaped TorchScript stand-in, --vgg-runtime {a.vgg_runtime}")
    print(f"{'config':10s} {'batch':>5s} {'space':>5s} {'s/step min':>10s} {'s/step med':>10s} "
          f"{'s/step/target':>13s} {'official':>8s} {'w_stats s':>9s} {'peak MiB':>9s}")
    for name, batch in cases:
        out = subprocess.run(
            [sys.executable, __file__, "--case", f"{name}:{batch}", "--steps", str(a.steps), "--warmup", str(a.warmup), "--threads",
             str(a.threads), "--space", a.space, "--vgg-runtime", a.vgg_runtime]
            + (["--no-malloc-tuning"] if a.no_malloc_tuning else []),
            capture_output=True, text=True, check=True,
        ).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        print(f"{name:10s} {batch:5d} {a.space:>5s} {r['min_s_per_step']:10.2f} {r['median_s_per_step']:10.2f} "
              f"{r['min_s_per_step_per_target']:13.2f} {OFFICIAL_S_PER_STEP[name]:8.2f} {r['w_stats_s']:9.1f} "
              f"{r['peak_rss_mib']:9.0f}", flush=True)


if __name__ == "__main__":
    main()
