"""``train_baseline``: train one baseline by name on MNIST, a zip or a folder, in epochs, on the shared trainer.

One call prepares the data (``data="mnist"``: :func:`.mnist.mnist_dataset`), checks the model against it (name,
labels, resolution: one-line StyleforgeErrors), and runs :func:`styleforge.train.loop.train` with the model, one tick
per epoch and no augmentation. The run folder is the trainer's (``<outdir>/<id>-<desc>/``): per-epoch sample grids
``fakes<kimg>.png`` and their GIF ``fakes.gif``, ``stats.jsonl`` (TensorBoard events when tensorboard is
installed; otherwise the run says so in one note), snapshots and ``resume-state.pt`` (SIGTERM saves;
``resume="auto"`` continues exactly); this module adds
``losses.png`` (G and D loss per epoch, when matplotlib is installed) and ``G.safetensors`` (the generator alone,
for ``generate.py --network``) at every snapshot.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from ..errors import StyleforgeError
from ..utils.fileio import atomic_path
from ..utils.progress import Callback, reporter
from . import BASELINE_NAMES

GENERATOR_NAME = "G.safetensors"


@dataclass
class BaselineResult:
    run_dir: Optional[Path]
    generator: Optional[Path]  # G.safetensors of the last snapshot
    snapshot: Optional[Path]
    state: Optional[Path]
    cur_nimg: int
    epochs: float  # epochs trained so far
    stopped: bool
    done: bool


def _check_model(model: str) -> None:
    if model not in BASELINE_NAMES:
        raise StyleforgeError(f"{{name}} {model!r} is unknown; use one of {', '.join(BASELINE_NAMES)}",
                              param="model", value=model)


def prepare_data(data: str, model: str, resolution: Optional[int], cond: bool):
    """(dataset path, resolution, number of images, whether conditional) for a run, with one-line errors."""
    from ..data.dataset import open_dataset
    from .models import BASELINES, check_resolution

    conditional = cond or BASELINES[model].conditional
    if str(data).lower() == "mnist":
        res = int(resolution) if resolution is not None else 32
        check_resolution(model, res)
        from .mnist import mnist_dataset

        path = str(mnist_dataset(res))
    else:
        if not Path(data).exists():
            raise StyleforgeError(f"{data}: no such dataset; give mnist, a zip or a folder of images", param="data")
        path = str(Path(data).resolve())
    ds = open_dataset(path, cond=True)  # labels from dataset.json or an ImageFolder's class subfolders
    try:
        if resolution is not None and ds.resolution != int(resolution):
            check_resolution(model, int(resolution))
            raise StyleforgeError(f"{{name}} has {ds.resolution}x{ds.resolution} images, not {resolution}x{resolution};"
                                  f" make a {resolution} px copy with the dataset tool or drop {{resolution}}",
                                  param="data", label="the dataset", also={"resolution": "resolution"})
        check_resolution(model, ds.resolution)
        if conditional and ds.label_dim == 0:
            why = f"{model} is conditional" if BASELINES[model].conditional else "{cond} asks for labels"
            raise StyleforgeError(f"{why} but {{name}} has no labels; use a labelled dataset (dataset.json "
                                  f"'labels', e.g. --data mnist)" + ("" if BASELINES[model].conditional else
                                                                     " or drop {cond}"),
                                  param="data", label="the dataset", also={"cond": "cond"})
        return path, ds.resolution, len(ds), conditional
    finally:
        ds.close()


def tensorboard_missing() -> Optional[str]:
    """The one line a run prints when TensorBoard scalars are off because tensorboard is not installed (else None)."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except Exception:  # noqa: BLE001 - ImportError, or a broken install
        return ("TensorBoard scalars are off: tensorboard is not installed (pip install tensorboard); "
                "stats.jsonl and losses.png have the same numbers")
    return None


def plot_losses(run_dir: Path) -> Optional[Path]:
    """``losses.png``: G and D loss per tick (epoch) from ``stats.jsonl``; None without matplotlib or stats."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines() if line.strip()]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for key, label in (("Loss/G/loss", "G"), ("Loss/D/loss", "D"), ("Loss/D/gp", "D gradient penalty")):
        pts = [(r["Progress/kimg"]["mean"], r[key]["mean"]) for r in rows if key in r]
        if pts:
            ax.plot(*zip(*pts), marker="o", markersize=3, label=label)
    ax.set_xlabel("thousands of images shown")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = run_dir / "losses.png"
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return out


def train_baseline(
    model: str,
    data: str,
    outdir: str,
    *,
    epochs: float = 20,
    resolution: Optional[int] = None,
    cond: bool = False,
    batch: int = 64,
    seed: int = 0,
    lr_G: Optional[float] = None,
    lr_D: Optional[float] = None,
    n_critic: Optional[int] = None,
    spectral_norm: bool = False,
    feature_matching: bool = False,
    ema_kimg: float = 0.0,
    snap: int = 1,
    resume: Optional[str] = None,
    workers: int = 1,
    device: str = "auto",
    deterministic: bool = False,
    callback: Optional[Callback] = None,
    step_callback: Optional[Callable[[Any], None]] = None,
) -> BaselineResult:
    """Train baseline ``model`` for ``epochs`` passes over ``data`` (``mnist``, a zip or a folder).

    ``lr_G`` / ``lr_D`` (TTUR), ``n_critic``, ``spectral_norm`` (D) and ``feature_matching`` replace the model's
    recipe (:mod:`.models`) for a new run; a resumed run keeps its own. ``snap``: snapshot (network, state,
    ``G.safetensors``, ``losses.png``) every ``snap`` epochs; sample grids every epoch... see the module docstring.
    """
    from ..networks.checkpoint import save_networks
    from ..train.loop import train

    _check_model(model)
    if not (isinstance(epochs, (int, float)) and math.isfinite(epochs) and epochs > 0):
        raise StyleforgeError("must be > 0", param="epochs", value=epochs)
    if spectral_norm and model == "progan":
        raise StyleforgeError("progan's D has equalised learning rate, not spectral normalisation; drop {name}",
                              param="spectral_norm")
    path, res, n, conditional = prepare_data(data, model, resolution, cond)
    model_opts: Dict[str, Any] = {"feature_matching": bool(feature_matching)}
    for k, v in (("lr_G", lr_G), ("lr_D", lr_D), ("n_critic", n_critic)):
        if v is not None:
            if not v > 0:
                raise StyleforgeError("must be > 0", param=k, value=v)
            model_opts[k] = v
    overrides: Dict[str, Any] = {"model_opts": model_opts, "ema_kimg": float(ema_kimg),
                                 "grid": [10, 10] if conditional else [8, 8]}
    if spectral_norm:
        overrides["D"] = {"spectral_norm": True}
    note = reporter(callback).note
    missing = tensorboard_missing()
    if missing:
        note(missing)

    def on_snapshot(trainer, snapshot: Path) -> None:
        save_networks(trainer.run_dir / GENERATOR_NAME, {"G_ema": trainer.G_ema},
                      extra={"model": trainer.opts.model, "source": snapshot.name,
                             "epochs": trainer.cur_nimg / len(trainer.dataset)})
        plot_losses(trainer.run_dir)

    res_ = train(outdir=outdir, data=path, cfg="cpu", model=model, batch=batch, kimg=epochs * n / 1000,
                 kimg_per_tick=n / 1000, snap=snap, cond=conditional, aug="noaug", resume=resume, seed=seed,
                 workers=workers, device=device, deterministic=deterministic, overrides=overrides,
                 callback=callback, step_callback=step_callback, snapshot_callback=on_snapshot)
    gen = res_.run_dir / GENERATOR_NAME if res_.run_dir is not None else None
    if gen is not None and not gen.is_file():
        gen = None
    if res_.stopped and res_.run_dir is not None:
        plot_losses(res_.run_dir)
    if gen is not None:
        note(f"generator: {gen}")
    return BaselineResult(run_dir=res_.run_dir, generator=gen, snapshot=res_.snapshot, state=res_.state,
                          cur_nimg=res_.cur_nimg, epochs=res_.cur_nimg / n, stopped=res_.stopped, done=res_.done)
