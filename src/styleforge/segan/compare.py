"""Compare the four SEGAN modes: each trained for the same length on the same data with the same settings, then
FID and PPL of every mode (at the final snapshot, and optionally along training), as a table and curves.

The training is :func:`styleforge.train.loop.train` with ``cfg="segan"`` and ``--resume auto`` semantics, one run
folder per mode under ``<outdir>/runs`` (``<data>-segan-mode<k>...``): a killed comparison continues where it
stopped, and runs made earlier with ``train.py --outdir <outdir>/runs --cfg segan --mode k --resume auto`` are
picked up. Each metric value is appended to ``<outdir>/metrics.jsonl`` as soon as it is known (keyed by mode,
snapshot and metric), so a rerun measures only what is missing.

The metrics are the package's own (:func:`styleforge.metrics.calc_metric`): FID/KID/PR/IS with whatever
``inception`` detector the options or ``detectors`` give, PPL with the VGG16 LPIPS distance, or with ``distance``
when the caller supplies one (e.g. :func:`feature_distance` of a small detector when no VGG16 file exists; the
report then says so).

Outputs in ``outdir``: ``compare.json`` (settings, per-mode rows, wall times, per-snapshot values),
``compare.md`` (the table), ``curves.png`` (G/D loss, orthogonality term and the first metric against kimg,
one line per mode; needs matplotlib), ``samples.png`` (one row of fakes per mode, same seeds).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..errors import StyleforgeError
from ..utils.fileio import atomic_path, ensure_outdir, save_image, save_json
from ..utils.progress import Callback, reporter
from .networks import MODES

PathLike = Union[str, os.PathLike]
Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_SNAPSHOT = re.compile(r"network-snapshot-(\d+)\.safetensors$")


@dataclass(frozen=True)
class CompareConfig:
    """What is compared. ``train``: extra :class:`~styleforge.train.presets.TrainSettings` fields for every mode
    (``cmax``, ``batch``, ``kimg_per_tick``, ``snap``, ``workers``...); ``every_snapshot``: the metrics of every
    snapshot (curves), not only the last."""

    modes: Tuple[int, ...] = MODES
    kimg: float = 200.0
    metrics: Tuple[str, ...] = ("fid50k_full", "ppl2_wend")
    every_snapshot: bool = False
    seed: int = 0
    train: Dict[str, Any] = field(default_factory=dict)

    def validate(self) -> "CompareConfig":
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise StyleforgeError("modes must be among 0, 1, 2, 3", param="modes", value=",".join(map(str, self.modes)))
        if not (math.isfinite(self.kimg) and self.kimg > 0):
            raise StyleforgeError("must be > 0", param="kimg", value=self.kimg)
        from ..metrics import check_metrics

        check_metrics(list(self.metrics))
        return self


def feature_distance(detector: torch.nn.Module) -> Distance:
    """A PPL distance from a feature detector with the Inception file's call signature: the squared distance of the
    L2-normalised features (``return_features=True``) of the two images, per sample. For networks and data where
    the VGG16 LPIPS file is missing or meaningless (a small digit detector on MNIST)."""

    def distance(img0: torch.Tensor, img1: torch.Tensor) -> torch.Tensor:
        f = detector(torch.cat([img0, img1]), return_features=True).to(torch.float64)
        f = f / f.norm(dim=1, keepdim=True).clamp_min(1e-12)
        f0, f1 = f.chunk(2)
        return (f0 - f1).square().sum(dim=1)

    return distance


def snapshots(run_dir: Path) -> List[Tuple[float, Path]]:
    """(kimg, file) of the run's network snapshots, in order."""
    out = []
    for p in run_dir.glob("network-snapshot-*.safetensors"):
        m = _SNAPSHOT.search(p.name)
        if m:
            out.append((int(m.group(1)), p))
    return sorted(out)


def train_modes(data: PathLike, outdir: PathLike, cfg: CompareConfig, callback: Optional[Callback] = None
                ) -> Dict[int, Path]:
    """Train (or continue) one run per mode; {mode: run folder}."""
    from ..train.loop import train

    runs = {}
    rep = reporter(callback)
    for m in cfg.modes:
        rep.note(f"SEGAN mode {m}: training to {cfg.kimg:g} kimg (resumes a stopped run)")
        res = train(outdir=str(Path(outdir) / "runs"), data=str(data), cfg="segan", model_opts={"mode": m},
                    kimg=cfg.kimg, resume="auto", seed=cfg.seed, callback=callback, **cfg.train)
        if res.stopped:
            raise StyleforgeError(f"training of mode {m} was stopped; run the comparison again to continue")
        runs[m] = res.run_dir
    return runs


def _read_jsonl(path: Path) -> List[Dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _append_jsonl(path: Path, row: Dict[str, Any]) -> None:
    rows = _read_jsonl(path) + [row]
    with atomic_path(path) as tmp:
        Path(tmp).write_text("".join(json.dumps(r) + "\n" for r in rows))


def evaluate_modes(runs: Dict[int, Path], data: PathLike, outdir: PathLike, cfg: CompareConfig, *, options=None,
                   detectors: Optional[Dict[str, torch.nn.Module]] = None, distance: Optional[Distance] = None,
                   callback: Optional[Callback] = None) -> List[Dict[str, Any]]:
    """The metrics of each run's last snapshot (every snapshot with ``cfg.every_snapshot``), read from or added to
    ``<outdir>/metrics.jsonl``; returns all its rows."""
    from .. import zoo
    from ..metrics import MetricOptions, calc_metric

    options = options or MetricOptions(seed=cfg.seed)
    detectors = detectors if detectors is not None else {}
    log = Path(outdir) / "metrics.jsonl"
    rep = reporter(callback)
    done = {(r["mode"], r["snapshot"], r["metric"]) for r in _read_jsonl(log)}
    for m, run in runs.items():
        snaps = snapshots(Path(run))
        if not snaps:
            raise StyleforgeError(f"{run}: no network snapshot to evaluate")
        for kimg, snap in (snaps if cfg.every_snapshot else snaps[-1:]):
            todo = [name for name in cfg.metrics if (m, snap.name, name) not in done]
            if not todo:
                continue
            G, _ = zoo.load_generator(str(snap), device=options.device)
            for name in todo:
                rep.note(f"mode {m}, {snap.name}: {name}")
                is_ppl = name.startswith("ppl")
                res = calc_metric(name, G, None if is_ppl else str(data), options=options, detectors=detectors,
                                  distance=distance if is_ppl else None, callback=callback, snapshot=str(snap))
                value = res.results[name] if name in res.results else next(iter(res.results.values()))
                _append_jsonl(log, {"mode": m, "run": Path(run).name, "snapshot": snap.name, "kimg": kimg,
                                    "metric": name, "value": float(value), "results": res.results,
                                    "detector": res.detector, "resize": res.resize,
                                    "ppl_distance": ("custom" if distance is not None else "lpips") if is_ppl else None,
                                    "time": res.total_time})
                done.add((m, snap.name, name))
    return _read_jsonl(log)


def run_summary(run: Path) -> Dict[str, Any]:
    """kimg, wall time and final losses of a run, from its ``stats.jsonl``."""
    rows = _read_jsonl(Path(run) / "stats.jsonl")
    if not rows:
        return {}
    last = rows[-1]
    get = lambda k: last.get(k, {}).get("mean")  # noqa: E731
    return {"kimg": get("Progress/kimg"), "wall_time_s": get("Timing/total_sec"),
            "sec_per_kimg": float(np.median([r["Timing/sec_per_kimg"]["mean"] for r in rows[1:]] or [np.nan])),
            "G_loss": get("Loss/G/loss"), "D_loss": get("Loss/D/loss"), "orth": get("Loss/G/orth")}


def write_report(runs: Dict[int, Path], rows: List[Dict[str, Any]], outdir: PathLike, cfg: CompareConfig,
                 data: PathLike, note: str = "") -> Dict[str, Path]:
    """``compare.json``, ``compare.md``, ``curves.png`` (when matplotlib is installed), ``samples.png``."""
    out = ensure_outdir(outdir)
    table = []
    for m, run in runs.items():
        last = snapshots(Path(run))[-1][1].name
        vals = {r["metric"]: r["value"] for r in rows if r["mode"] == m and r["snapshot"] == last}
        table.append({"mode": m, "run": Path(run).name, "snapshot": last, **run_summary(Path(run)), **vals})
    opts = json.loads((Path(next(iter(runs.values()))) / "training_options.json").read_text())
    settings = {"data": str(data), "kimg": cfg.kimg, "metrics": list(cfg.metrics), "seed": cfg.seed,
                "resolution": opts["resolution"], "batch": opts["batch"], "lrate": opts["lrate"],
                "gamma": opts["gamma"], "z_dim": opts["G"]["z_dim"], "w_dim": opts["G"]["w_dim"],
                "channel_base": opts["G"]["synthesis"]["channel_base"],
                "channel_max": opts["G"]["synthesis"]["channel_max"], "orth_weight": opts["model_opts"]["orth_weight"],
                "train_overrides": cfg.train, "note": note}
    files = {"json": save_json(out / "compare.json", {"settings": settings, "table": table, "metrics": rows})}
    head = ["mode", *cfg.metrics, "kimg", "wall time", "s/kimg", "G loss", "D loss", "orth"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    fmt = lambda v, f="{:.2f}": "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f.format(v)  # noqa
    for r in table:
        wall = r.get("wall_time_s")
        lines.append("| " + " | ".join([str(r["mode"]), *(fmt(r.get(k)) for k in cfg.metrics), fmt(r.get("kimg"), "{:g}"),
                                         fmt(wall / 60 if wall else None, "{:.1f} min"), fmt(r.get("sec_per_kimg"), "{:.0f}"),
                                         fmt(r.get("G_loss"), "{:.3f}"), fmt(r.get("D_loss"), "{:.3f}"),
                                         fmt(r.get("orth"), "{:.2e}")]) + " |")
    md = [f"# SEGAN modes compared on {Path(str(data)).name}", "",
          "Settings: " + ", ".join(f"{k} {v}" for k, v in settings.items() if k not in ("note", "train_overrides")
                                   and v is not None) + (f"; overrides {cfg.train}" if cfg.train else ""), ""]
    if note:
        md += [note, ""]
    md += lines + [""]
    with atomic_path(out / "compare.md") as tmp:
        Path(tmp).write_text("\n".join(md))
    files["md"] = out / "compare.md"
    curves = _plot_curves(runs, rows, cfg, out / "curves.png")
    if curves is not None:
        files["curves"] = curves
    files["samples"] = _samples(runs, out / "samples.png", cfg.seed)
    return files


def _plot_curves(runs, rows, cfg: CompareConfig, path: Path) -> Optional[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    keys = [("Loss/G/loss", "G loss"), ("Loss/D/loss", "D loss"), ("Loss/G/orth", "orthogonality term")]
    metric = cfg.metrics[0] if cfg.metrics else None
    fig, axes = plt.subplots(1, len(keys) + (metric is not None), figsize=(4.2 * (len(keys) + 1), 3.4))
    for m, run in runs.items():
        st = _read_jsonl(Path(run) / "stats.jsonl")
        kimg = [r["Progress/kimg"]["mean"] for r in st]
        for ax, (k, title) in zip(axes, keys):
            ax.plot(kimg, [r.get(k, {}).get("mean", np.nan) for r in st], label=f"mode {m}")
            ax.set_title(title)
            ax.set_xlabel("kimg")
        if metric is not None:
            pts = sorted((r["kimg"], r["value"]) for r in rows if r["mode"] == m and r["metric"] == metric)
            if pts:
                axes[-1].plot(*zip(*pts), marker="o", label=f"mode {m}")
            axes[-1].set_title(metric)
            axes[-1].set_xlabel("kimg")
    axes[2].set_yscale("symlog", linthresh=1e-6)
    axes[0].legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return path


def _samples(runs, path: Path, seed: int, n: int = 12) -> Path:
    """One row per mode: the last snapshot's G_ema on the same z (seed), const noise."""
    from .. import zoo
    from ..images import make_grid, uint8_as_generate

    rows = []
    for m, run in runs.items():
        G, _ = zoo.load_generator(str(snapshots(Path(run))[-1][1]))
        z = torch.randn([n, G.z_dim], generator=torch.Generator().manual_seed(seed))
        c = None
        if G.c_dim:
            c = torch.nn.functional.one_hot(torch.arange(n) % G.c_dim, G.c_dim).float()
        with torch.no_grad():
            rows.extend(uint8_as_generate(G(z, c, noise_mode="const")))
    return save_image(make_grid(rows, cols=n), path)


def compare_modes(data: PathLike, outdir: PathLike, cfg: CompareConfig = CompareConfig(), *, options=None,
                  detectors=None, distance: Optional[Distance] = None, note: str = "",
                  callback: Optional[Callback] = None) -> Dict[str, Any]:
    """Train every mode (:func:`train_modes`), measure them (:func:`evaluate_modes`), write the report
    (:func:`write_report`); returns ``{"runs", "rows", "files", "wall_time_s"}``."""
    cfg.validate()
    t0 = time.time()
    runs = train_modes(data, outdir, cfg, callback)
    rows = evaluate_modes(runs, data, outdir, cfg, options=options, detectors=detectors, distance=distance,
                          callback=callback)
    files = write_report(runs, rows, outdir, cfg, data, note)
    return {"runs": runs, "rows": rows, "files": files, "wall_time_s": time.time() - t0, "config": asdict(cfg)}
