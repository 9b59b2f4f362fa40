#!/usr/bin/env python3
"""Projection quality check: project N of a network's own samples and report PSNR (target: >= 25 dB in W+).

Samples are seeds ``--first-seed`` .. +N-1 rendered with noise const at ``--trunc`` and saved as
``generate.py`` saves them (x*127.5+128, uint8); each is projected with the official algorithm (``--space``,
``--num-steps``, ``--seed``) and re-rendered as proj.png is (the network's own noise maps). Reported per
sample: PSNR of that rendering, PSNR with the optimised noise maps, SSIM and the start PSNR (w_avg). The
loss is the projector's default (vgg16.pt if present, else the discriminator; the pixel loss when the file
has no D), or ``--loss``.

    python benchmarks/project_psnr.py                                   # bundled default network, 8 samples
    python benchmarks/project_psnr.py --network ffhq.pkl --num 4 --num-steps 1000 --batch-size 2
    python benchmarks/project_psnr.py --num 2 --num-steps 50 --space w  # quick smoke run

Exit status 0 when the mean PSNR reaches ``--threshold`` (default 25 dB), else 1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--network", default=None, help="network file (default: styleforge.assets.default_network_path())")
    ap.add_argument("--num", type=int, default=8, help="number of samples to project")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--trunc", type=float, default=1.0, help="truncation psi of the samples")
    ap.add_argument("--space", choices=["w", "w+"], default="w+")
    ap.add_argument("--num-steps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=303, help="projector seed")
    ap.add_argument("--loss", choices=["vgg", "discriminator", "pixel"], default=None)
    ap.add_argument("--vgg", default=None, help="path of vgg16.pt")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--threshold", type=float, default=25.0)
    ap.add_argument("--json", default=None, help="also write the results to this file")
    a = ap.parse_args()

    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT / "src"))
    from styleforge import zoo
    from styleforge.errors import StyleforgeError
    from styleforge.images import uint8_as_generate as generate_uint8
    from styleforge.images import uint8_as_projector as to_uint8
    from styleforge.latents import seed_to_z
    from styleforge.perceptual import PixelLoss, psnr, ssim
    from styleforge.project.batch import build_feature_net, load_networks_for
    from styleforge.project.projector import compute_w_stats, project, synthesize
    from styleforge.utils.perf import tune_cpu_allocator

    if a.threads:
        torch.set_num_threads(a.threads)
    tune_cpu_allocator()
    net_path = zoo.resolve(a.network)
    G, D = load_networks_for(net_path, need_D=a.loss in (None, "discriminator"), device=torch.device("cpu"))
    try:
        fnet = build_feature_net(a.loss, D, a.vgg)
    except StyleforgeError as e:
        if a.loss is not None:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"note: {e}; using the pixel loss", file=sys.stderr)
        fnet = PixelLoss()
    seeds = list(range(a.first_seed, a.first_seed + a.num))
    z = torch.from_numpy(np.stack([seed_to_z(s, G.z_dim) for s in seeds]))
    with torch.no_grad():
        targets = generate_uint8(G.synthesis(G.mapping(z, None, truncation_psi=a.trunc), noise_mode="const"))
    stats = compute_w_stats(G)
    start = to_uint8(synthesize(G, stats.w_avg.reshape(1, 1, -1).repeat(1, G.num_ws, 1)))[0]
    print(f"network {net_path} ({G.img_resolution}px, num_ws {G.num_ws}); loss {fnet.describe()}; space {a.space}; "
          f"{a.num_steps} steps; {len(seeds)} samples", flush=True)
    print(f"{'seed':>6s} {'psnr':>7s} {'psnr_optnoise':>13s} {'ssim':>6s} {'start':>6s} {'s/step':>7s}", flush=True)
    rows = []
    t_all = time.perf_counter()
    for b in range(0, len(seeds), a.batch_size):
        idx = list(range(b, min(b + a.batch_size, len(seeds))))
        tgt = torch.from_numpy(targets[idx]).permute(0, 3, 1, 2).float()
        r = project(G, tgt, fnet, seeds=a.seed, num_steps=a.num_steps, space=a.space, stats=stats)
        out = to_uint8(synthesize(G, r.w))
        out_n = to_uint8(synthesize(G, r.w, r.noise)) if r.noise else out
        for j, i in enumerate(idx):
            row = {
                "seed": seeds[i],
                "psnr": psnr(out[j], targets[i]),
                "psnr_optimised_noise": psnr(out_n[j], targets[i]),
                "ssim": float(ssim(torch.tensor(out[j], dtype=torch.float64).permute(2, 0, 1)[None],
                                   torch.tensor(targets[i], dtype=torch.float64).permute(2, 0, 1)[None])[0]),
                "psnr_start": psnr(start, targets[i]),
                "s_per_step": r.seconds / r.num_steps / len(idx),
            }
            rows.append(row)
            print(f"{row['seed']:6d} {row['psnr']:7.2f} {row['psnr_optimised_noise']:13.2f} {row['ssim']:6.3f} "
                  f"{row['psnr_start']:6.2f} {row['s_per_step']:7.3f}", flush=True)
    mean = statistics.mean(r["psnr"] for r in rows)
    ok = mean >= a.threshold
    print(f"mean PSNR {mean:.2f} dB (optimised noise {statistics.mean(r['psnr_optimised_noise'] for r in rows):.2f}); "
          f"threshold {a.threshold} dB: {'PASS' if ok else 'FAIL'}; {time.perf_counter() - t_all:.0f}s")
    if a.json:
        Path(a.json).write_text(json.dumps({
            "network": str(net_path), "space": a.space, "num_steps": a.num_steps, "loss": fnet.describe(),
            "trunc": a.trunc, "rows": rows, "mean_psnr": mean, "threshold": a.threshold, "pass": ok,
        }, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
