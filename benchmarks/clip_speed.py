#!/usr/bin/env python3
"""Seconds per step of text-guided optimisation at 256 px: a paper256-shaped generator (benchmarks/fullsize.py) and a
full ViT-B/32 CLIP (151 M parameters), both randomly initialised, fp32.

One step is what ``clip_generate.py`` runs 300 times: synthesis of one W+ latent, CLIP's differentiable
preprocessing (256 -> 224 bicubic, normalisation), the image tower, the backward pass through both, an Adam step.
Also timed alone: CLIP's image tower forward + backward at 224 px (what CLIP adds to each step). Prints min and
median over ``--steps`` timed steps after ``--warmup`` (the machine is shared and noisy: compare minima).

    python benchmarks/clip_speed.py                    # CPU, torch's default threads
    python benchmarks/clip_speed.py --threads 2 --json clip_speed.json
    python benchmarks/clip_speed.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))
from fullsize import full_size_generator  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()

    import torch

    from styleforge.perceptual.clip import CLIP, MODEL_CONFIGS
    from styleforge.textguide import optimize_latents, start_latents
    from styleforge.utils.runtime import resolve_device

    if a.threads:
        torch.set_num_threads(a.threads)
    dev = resolve_device(a.device)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    G = full_size_generator("paper256").to(dev)
    torch.manual_seed(0)
    clip = CLIP(MODEL_CONFIGS["ViT-B-32-quickgelu"]).to(dev).eval().requires_grad_(False)

    # CLIP alone: image tower forward + backward to a 224 px input
    x = torch.randn(1, 3, 224, 224, device=dev)
    clip_times = []
    for i in range(a.warmup + a.steps):
        xi = x.clone().requires_grad_(True)
        sync()
        t0 = time.perf_counter()
        clip.encode_image(xi, normalize=True).sum().backward()
        sync()
        if i >= a.warmup:
            clip_times.append(time.perf_counter() - t0)

    res = optimize_latents(G, clip, "a blond kid with green eyes", start_latents(G),
                           num_steps=a.warmup + a.steps, frame_every=0)
    step_times = res.step_seconds[a.warmup:]
    row = {
        "device": str(dev), "threads": torch.get_num_threads(), "resolution": G.img_resolution,
        "clip": "ViT-B-32 (random init)", "clip_params": sum(p.numel() for p in clip.parameters()),
        "s_per_step_min": round(min(step_times), 3), "s_per_step_median": round(statistics.median(step_times), 3),
        "clip_fwd_bwd_min": round(min(clip_times), 3), "clip_fwd_bwd_median": round(statistics.median(clip_times), 3),
        "steps_timed": len(step_times),
    }
    print(json.dumps(row))
    if a.json:
        Path(a.json).write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
