#!/usr/bin/env python3
"""One prepared check for a machine with a CUDA GPU: parity with the official outputs, and speed.

Sections (each guarded: a failing one is reported and the next runs; each writes into one JSON file):

- ``env``: torch, GPU and CPU model.
- ``parity``: the official-format fixtures (``--fixtures``, default ``../shared/fixtures/official``) on CUDA
  (fp32 with TF32 off and on, and the ``fp16=True`` path against the official mixed-precision outputs) and on
  this machine's CPU (the cross-CPU spread the parity tests' tolerances are set from).
- ``generate``: images/s of the full-size paper256 and FFHQ-1024 generators (random weights) on CUDA, fp32 and
  fp16, batch 1/8/32, min and median of ``--runs`` timed runs after a warm-up.
- ``project``: projector seconds per step on CUDA (VGG16-shaped TorchScript stand-in, as project_speed.py).
- ``train``: one training step of the official training-step fixture on CUDA (losses and gradients against the
  official CPU numbers), and seconds per kimg of the paper256 configuration on CUDA.

    python benchmarks/gpu_check.py --out gpu_check.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

RESULTS: dict = {}


def section(name):
    def deco(fn):
        def run(*a, **k):
            t0 = time.time()
            try:
                RESULTS[name] = fn(*a, **k)
            except Exception as e:  # report and go on: one broken section must not cost the others
                RESULTS[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
            RESULTS.setdefault(name, {})
            if isinstance(RESULTS[name], dict):
                RESULTS[name]["section_seconds"] = round(time.time() - t0, 1)
            print(f"== {name}: {time.time() - t0:.1f} s", flush=True)
            print(json.dumps(RESULTS[name], indent=1)[:4000], flush=True)
        return run
    return deco


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _timeit(fn, dev, runs, warmup=2):
    for _ in range(warmup):
        fn()
    _sync(dev)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        _sync(dev)
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


@section("env")
def env():
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                flags = " ".join(f for f in line.split() if f.startswith(("avx512_fp16", "amx", "avx512f", "avx2")))
                break
    except OSError:
        pass
    return {
        "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu": cpu, "cpu_flags": flags, "cpu_count": os.cpu_count(), "numpy": np.__version__,
    }


def _parity_one(path: Path, folder: Path, dev: torch.device) -> dict:
    from styleforge.networks.checkpoint import load_networks

    bundle = load_networks(path)
    G = bundle.networks["G_ema"].to(dev)
    D = bundle.networks["D"].to(dev)
    L = lambda f: torch.from_numpy(np.load(folder / f)).to(dev)  # noqa: E731
    z, c = L("z.npy"), L("c.npy")
    out = {}
    with torch.no_grad():
        ws = torch.cat([G.mapping(z[i: i + 1], c[i: i + 1]) for i in range(len(z))])
        out["ws_max_abs"] = (ws - L("ws_psi1.0.npy")).abs().max().item()
        for psi in (1.0, 0.7):
            img = torch.cat([G(z[i: i + 1], c[i: i + 1], truncation_psi=psi, noise_mode="const") for i in range(len(z))])
            out[f"img_fp32_psi{psi}_max_abs"] = (img - L(f"img_fp32_psi{psi}_const.npy")).abs().max().item()
        out["img_fp32_batch8_max_abs"] = (G(z, c) - L("img_fp32_psi1.0_const_batch8.npy")).abs().max().item()
        out["d_logits_max_abs"] = (D(L("d_input_random.npy"), c) - L("d_logits_fp32_random.npy")).abs().max().item()
        if (folder / "img_mixed_psi1.0_const.npy").exists():
            mixed, fp32 = L("img_mixed_psi1.0_const.npy"), L("img_fp32_psi1.0_const.npy")
            img = torch.cat([G(z[i: i + 1], c[i: i + 1], fp16=True) for i in range(len(z))]).float()
            err, drift = (img - mixed).abs(), (mixed - fp32).abs()
            out["fp16_max_abs"] = err.max().item()
            out["fp16_mean_abs"] = err.mean().item()
            out["official_fp16_drift_max"] = drift.max().item()
            out["official_fp16_drift_mean"] = drift.mean().item()
    return out


@section("parity")
def parity(folders):
    pkls = [p for f in folders for p in sorted(Path(f).glob("*.pkl")) if (p.parent / p.stem / "z.npy").exists()]
    res = {}
    devs = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for dev in devs:
        for tf32 in ([False, True] if dev.type == "cuda" else [False]):
            torch.backends.cudnn.allow_tf32 = tf32
            torch.backends.cuda.matmul.allow_tf32 = tf32
            key = f"{dev.type}" + ("_tf32" if tf32 else "")
            res[key] = {p.stem: _parity_one(p, p.parent / p.stem, dev) for p in pkls}
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    return res


@section("generate")
def generate(runs: int):
    from fullsize import full_size_generator

    dev = torch.device("cuda")
    res = []
    for name in ("paper256", "ffhq1024"):
        # fp16 in the 4 highest resolutions with conv_clamp 256, as the official configs (fp16=False: all fp32)
        G = full_size_generator(name, num_fp16_res=4, conv_clamp=256).to(dev)
        for batch in (1, 8, 32):
            for fp16 in (False, True):
                z = torch.randn(batch, G.z_dim, device=dev)
                with torch.no_grad():
                    mn, md = _timeit(lambda G=G, z=z, fp16=fp16: G(z, fp16=fp16), dev, runs)
                res.append({"config": name, "batch": batch, "fp16": fp16,
                            "img_per_s_best": round(batch / mn, 1), "img_per_s_median": round(batch / md, 1)})
                print(res[-1], flush=True)
        res.append({"config": name, "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)})
        del G
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return {"rows": res}


@section("generate_cli")
def generate_cli(folders):
    import subprocess

    out = {}
    pkl = next(iter(sorted(p for f in folders for p in Path(f).glob("*.pkl"))), None)
    if pkl is None:
        return {"skipped": "no fixture pickle"}
    with tempfile.TemporaryDirectory() as tmp:
        for dev in ("cuda", "cpu"):
            t0 = time.time()
            p = subprocess.run([sys.executable, str(ROOT / "scripts" / "generate.py"), "--network", str(pkl),
                                "--seeds", "0-63", "--outdir", f"{tmp}/{dev}", "--device", dev]
                               + (["--class", "1"] if "cond" in pkl.name else []),
                               capture_output=True, text=True)
            out[dev] = {"rc": p.returncode, "wall_s": round(time.time() - t0, 2), "tail": p.stderr[-500:]}
        a = np.stack([np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(f"{tmp}/cuda/seed{s:04d}.png"))
                      for s in range(64)]).astype(int)
        b = np.stack([np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(f"{tmp}/cpu/seed{s:04d}.png"))
                      for s in range(64)]).astype(int)
        out["png_cuda_vs_cpu"] = {"max_levels": int(np.abs(a - b).max()), "frac_differing": float((a != b).mean())}
    out["network"] = pkl.name
    return out


@section("project")
def project_speed(steps: int):
    from fullsize import CONFIGS, full_size_generator
    from styleforge.perceptual import VGG16_LAYOUT, VGG16LPIPS, RandomConvFeatures
    from styleforge.project.projector import compute_w_stats, project

    dev = torch.device("cuda")
    rows = []
    for name in ("paper256", "ffhq1024"):
        G = full_size_generator(name).to(dev)
        with tempfile.TemporaryDirectory() as tmp:
            path = RandomConvFeatures(VGG16_LAYOUT).save_torchscript(Path(tmp) / "vgg16.pt")
            vgg = VGG16LPIPS(path).to(dev)
        res = CONFIGS[name][0]
        targets = torch.randint(0, 256, (1, 3, res, res), device=dev).float()
        t0 = time.time()
        stats = compute_w_stats(G)
        t_stats = time.time() - t0
        r = project(G, targets, vgg, num_steps=5 + steps, space="w", stats=stats)
        times = r.step_seconds[5:]
        rows.append({"config": name, "s_per_step_min": round(min(times), 4),
                     "s_per_step_median": round(statistics.median(times), 4), "w_stats_s": round(t_stats, 2),
                     "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)})
        print(rows[-1], flush=True)
        del G, vgg
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return {"rows": rows}


@section("train")
def train_check(runs: int):
    """Training speed on CUDA through the same code train_speed.py times (paper256, batch 32, fp32)."""
    import subprocess

    out = {}
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_speed.py"), "--only", "paper256",
                        "--runs", str(runs), "--device", "cuda", "--batch", "32", "--threads", "8",
                        "--json", "/tmp/train_speed.json"], capture_output=True, text=True)
    out["train_speed_rc"] = p.returncode
    out["train_speed_tail"] = (p.stdout + p.stderr)[-1500:]
    if Path("/tmp/train_speed.json").exists():
        out["train_speed"] = json.loads(Path("/tmp/train_speed.json").read_text())
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fixtures", type=Path, action="append",
                    help="folder of official-format fixtures (repeatable; default ../shared/fixtures/official)")
    ap.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--only", action="append", help="run only these sections")
    a = ap.parse_args()
    a.fixtures = a.fixtures or [ROOT.parent / "shared" / "fixtures" / "official"]
    todo = a.only or ["env", "parity", "generate", "generate_cli", "project", "train"]
    steps = {
        "env": lambda: env(), "parity": lambda: parity(a.fixtures), "generate": lambda: generate(a.runs),
        "generate_cli": lambda: generate_cli(a.fixtures), "project": lambda: project_speed(a.steps),
        "train": lambda: train_check(3),
    }
    for name in todo:
        steps[name]()
        a.out.write_text(json.dumps(RESULTS, indent=1))


if __name__ == "__main__":
    main()
