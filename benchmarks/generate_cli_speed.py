#!/usr/bin/env python3
"""Whole-command timing of `scripts/generate.py` on full-size official-format pickles (load time included).

Builds (once, cached under --workdir) official-format pickles of the full-size paper256 config (256 px, channel_base
16384) and FFHQ-1024 (channel_base 32768), with random weights, written by the test writer in tests/official_format.py
(the official layout; protocol 3). Then times `python scripts/generate.py --network X --seeds ... --outdir ...` as a
subprocess, several runs, printing min and median wall seconds, and the pickle load time alone.

Official generate.py on this machine: 6.1 s for 16 seeds of paper256 (targets: official/ours >= 1.3 for paper256,
>= 1.5 for 2 seeds of FFHQ-1024).

    python benchmarks/generate_cli_speed.py --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {"paper256": (256, 16384, "0-15"), "ffhq1024": (1024, 32768, "0-1")}


def build_pickle(name: str, path: Path) -> None:
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "tests"))
    import torch
    from official_format import write_official_pickle

    from styleforge.networks import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig, SynthesisConfig

    res, base, _ = CASES[name]
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(img_resolution=res, synthesis=SynthesisConfig(
        channel_base=base, channel_max=512, num_fp16_res=4, conv_clamp=256))).eval()
    D = Discriminator(DiscriminatorConfig(img_resolution=res, channel_base=base, channel_max=512, num_fp16_res=4,
                                          conv_clamp=256)).eval()
    write_official_pickle(path, G=G, D=D, G_ema=G)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", choices=sorted(CASES))
    ap.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "styleforge-bench"))
    ap.add_argument("--batch-size", default=None, help="pass --batch-size to generate.py (default: its own, 8)")
    a = ap.parse_args()
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    for name, (res, base, seeds) in CASES.items():
        if a.only and a.only != name:
            continue
        pkl = work / f"{name}.pkl"
        if not pkl.exists():
            t = time.perf_counter()
            build_pickle(name, pkl)
            print(f"built {pkl} ({pkl.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t:.1f} s")
        load = subprocess.run([sys.executable, "-c", (
            "import time,sys; sys.path.insert(0, %r); t=time.perf_counter();"
            "from styleforge.networks.checkpoint import load_network; load_network(%r);"
            "print(time.perf_counter()-t)") % (str(ROOT / "src"), str(pkl))], capture_output=True, text=True, check=True)
        times = []
        for _ in range(a.runs):
            t = time.perf_counter()
            extra = ["--batch-size", a.batch_size] if a.batch_size else []
            subprocess.run([sys.executable, str(ROOT / "scripts" / "generate.py"), "--network", str(pkl), "--seeds", seeds,
                            "--outdir", str(work / f"out-{name}")] + extra, check=True, capture_output=True)
            times.append(time.perf_counter() - t)
        print(f"{name}: seeds {seeds}: whole command min {min(times):.2f} s, median {statistics.median(times):.2f} s "
              f"(import+load of the pickle alone: {float(load.stdout.strip()):.2f} s)")


if __name__ == "__main__":
    main()
