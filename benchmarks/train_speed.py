#!/usr/bin/env python3
"""Training speed on CPU: seconds per kimg, peak memory, and where the time goes.

Cases: the ``cpu`` preset on a 32 px dataset (its default batch 32) and ``paper256`` at batch 8 (full-size
paper256 networks, 256 px). Each case runs in its own subprocess (peak RSS per case) on a small dataset built in
a temporary folder from ``skimage.data.lfw_subset()`` faces, with ADA's pipe at a fixed p (default 0.2, a
typical value once ADA has kicked in) so that the augmentation cost is realistic.

Each timed run executes every phase once - Gmain, Greg (path length), Dmain, Dreg (R1) - plus the data
loading and the G_ema update, and weights them the way training does: Greg every 4th and Dreg every 16th step.
So ``s/kimg = (Gmain + Greg/4 + Dmain + Dreg/16 + data + ema) * 1000 / batch``. Inside the phases, timers around
G's forward, D's forward and the augmentation pipe split the time into G forward, D forward, ADA (forward) and
the rest (backward passes of both networks, optimiser steps). Prints min and median over ``--runs``; the
machine is shared, so compare minima.

    python benchmarks/train_speed.py                       # both cases, 3 runs each
    python benchmarks/train_speed.py --only cpu --runs 5 --threads 1
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
CASES = {"cpu": ("cpu", 32, None), "paper256": ("paper256", 256, 8)}  # name: (cfg, resolution, batch)


def _make_dataset(folder: Path, resolution: int) -> Path:
    import numpy as np
    import PIL.Image
    import skimage.data

    from styleforge.train.dataset_tool import convert_dataset

    faces = skimage.data.lfw_subset()[:100]
    src = folder / "faces"
    src.mkdir()
    for i, f in enumerate(faces):
        PIL.Image.fromarray((f * 255).astype(np.uint8)).convert("RGB").save(src / f"{i:03d}.png")
    return convert_dataset(src, folder / f"faces{resolution}.zip", resolution=resolution).dest


def run_case(name: str, runs: int, threads: int, p: float, device: str = "cpu", batch_override=None) -> dict:
    import resource

    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT / "src"))
    from styleforge.train.distributed import DistInfo
    from styleforge.train.presets import resolve_options
    from styleforge.train.trainer import Trainer

    torch.set_num_threads(threads)
    cfg, res, batch = CASES[name]
    batch = batch_override or batch
    with tempfile.TemporaryDirectory() as tmp:
        data = _make_dataset(Path(tmp), res)
        from styleforge.data.dataset import ImageDataset

        ds = ImageDataset(data)
        opts = resolve_options(data=str(data), dataset_name="faces", resolution=res, num_channels=3,
                               num_images=len(ds), label_dim=0, cfg=cfg, batch=batch, aug="fixed", p=p, workers=0,
                               device=device)
        tr = Trainer(opts, DistInfo(device=torch.device(device)))
        timers = {"G_fwd": 0.0, "D_fwd": 0.0, "ADA": 0.0}

        def timed(key, fn):
            def wrapper(*a, **k):
                t0 = time.perf_counter()
                out = fn(*a, **k)
                timers[key] += time.perf_counter() - t0
                return out
            return wrapper

        tr.loss.run_G = timed("G_fwd", tr.loss.run_G)
        tr.D.forward = timed("D_fwd", tr.D.forward)
        tr.augment_pipe.forward = timed("ADA", tr.augment_pipe.forward)
        weight = {"Gmain": 1.0, "Greg": 1 / opts.G_reg_interval, "Dmain": 1.0, "Dreg": 1 / opts.D_reg_interval}

        def sync():
            if tr.device.type == "cuda":
                torch.cuda.synchronize(tr.device)

        def one_run():
            for k in timers:
                timers[k] = 0.0
            t0 = time.perf_counter()
            real_img, real_c = tr._next_reals()
            z, c = tr._draw_latents()
            t_data = time.perf_counter() - t0
            out = {"data": t_data}
            sync()
            split = {k: 0.0 for k in timers}
            for i, ph in enumerate(tr.phases):
                before = dict(timers)
                t0 = time.perf_counter()
                tr._run_phase(ph, real_img, real_c, z[i], c[i])
                sync()
                out[ph.name] = time.perf_counter() - t0
                for k in timers:
                    split[k] += (timers[k] - before[k]) * weight[ph.name]
            t0 = time.perf_counter()
            with torch.no_grad():  # the G_ema update, as in Trainer.step
                for pe, pg in zip(tr.G_ema.parameters(), tr.G.parameters()):
                    pe.copy_(pg.detach().lerp(pe, 0.999))
            sync()
            out["ema"] = time.perf_counter() - t0
            step = out["data"] + out["ema"] + sum(out[k] * w for k, w in weight.items())
            out["step"] = step
            out["s_per_kimg"] = step * 1000 / opts.batch
            out["share"] = {
                "G forward": split["G_fwd"] / step,
                "D forward": split["D_fwd"] / step,
                "ADA (forward)": split["ADA"] / step,
                "backward + optimiser (all)": 1 - (split["G_fwd"] + split["D_fwd"] + split["ADA"]
                                                   + out["data"] + out["ema"]) / step,
                "data + ema": (out["data"] + out["ema"]) / step,
                "regularisers (Greg/4 + Dreg/16)": (out["Greg"] * weight["Greg"] + out["Dreg"] * weight["Dreg"]) / step,
            }
            return out

        one_run()  # warm-up
        results = [one_run() for _ in range(runs)]
    best = min(results, key=lambda r: r["step"])
    med = statistics.median(r["s_per_kimg"] for r in results)
    phases = {k: {"min": min(r[k] for r in results), "median": statistics.median(r[k] for r in results)}
              for k in ("Gmain", "Greg", "Dmain", "Dreg", "data", "ema")}
    share = {k: statistics.median(r["share"][k] for r in results) for k in best["share"]}
    return {
        "case": name, "cfg": cfg, "resolution": res, "batch": opts.batch, "batch_gpu": opts.batch_gpu,
        "threads": threads, "runs": runs, "augment_p": p,
        "G_params_M": round(sum(p.numel() for p in tr.G.parameters()) / 1e6, 2),
        "D_params_M": round(sum(p.numel() for p in tr.D.parameters()) / 1e6, 2),
        "s_per_kimg_min": round(best["s_per_kimg"], 1), "s_per_kimg_median": round(med, 1),
        "phase_seconds": {k: {kk: round(vv, 3) for kk, vv in v.items()} for k, v in phases.items()},
        "time_share_median": {k: round(v, 3) for k, v in share.items()},
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "np": np.__version__, "torch": torch.__version__,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=sorted(CASES), action="append", help="run only this case (repeatable)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--p", type=float, default=0.2, help="fixed augmentation probability while timing")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (timed with synchronisation)")
    ap.add_argument("--batch", type=int, default=None, help="override the case's batch")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.runs, args.threads, args.p, args.device, args.batch)))
        return
    out = []
    for name in args.only or list(CASES):
        cmd = [sys.executable, __file__, "--case", name, "--runs", str(args.runs), "--threads", str(args.threads),
               "--p", str(args.p), "--device", args.device] + (["--batch", str(args.batch)] if args.batch else [])
        t0 = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{name}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        r["wall_s"] = round(time.time() - t0, 1)
        out.append(r)
        ph = r["phase_seconds"]
        print(f"{name:9s} batch {r['batch']:3d}  s/kimg min {r['s_per_kimg_min']:8.1f}  median {r['s_per_kimg_median']:8.1f}"
              f"  peak RSS {r['peak_rss_mib']:7.0f} MiB  (G {r['G_params_M']}M, D {r['D_params_M']}M params, "
              f"{r['threads']} threads)")
        print("          phase seconds (min/median): " + ", ".join(
            f"{k} {v['min']:.2f}/{v['median']:.2f}" for k, v in ph.items()))
        print("          time share (median): " + ", ".join(f"{k} {v:.0%}" for k, v in r["time_share_median"].items()))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
