"""A run's folder and what is written into it: ``<outdir>/<id:05d>-<desc>/`` with ``log.txt``, ``stats.jsonl``,
TensorBoard events, the ``reals.png`` / ``fakes*.png`` grids and ``fakes.gif``.

Only rank 0 writes. Log lines go to ``log.txt`` and, as notes, to the caller's progress callback
(:mod:`styleforge.utils.progress`); nothing here prints.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from ..errors import StyleforgeError
from ..images import make_grid, read_image, uint8_as_training
from ..utils.fileio import atomic_path, ensure_outdir
from ..utils.progress import Callback, Message, reporter
from ..video import write_gif
from .state import STATE_NAME

try:
    import resource
except ImportError:  # Windows
    resource = None

_RUN_DIR = re.compile(r"^(\d+)-")
OUTDIR = {"param": "outdir", "label": "output folder"}


def run_dirs(outdir: Path) -> List[Path]:
    """The run folders of ``outdir`` (``NNNNN-...``), oldest first."""
    if not outdir.is_dir():
        return []
    dirs = [d for d in outdir.iterdir() if d.is_dir() and _RUN_DIR.match(d.name)]
    return sorted(dirs, key=lambda d: int(_RUN_DIR.match(d.name).group(1)))


def find_auto_resume(outdir: Path, data: str, cfg: str, model: str = "stylegan2",
                     model_opts: Optional[Dict[str, Any]] = None) -> Optional[Path]:
    """The newest run folder of ``outdir`` that trained ``model`` on ``data`` with ``cfg`` (and the model options
    ``model_opts``, e.g. SEGAN's mode) and has a resume state."""
    for d in reversed(run_dirs(outdir)):
        try:
            o = json.loads((d / "training_options.json").read_text())
        except (OSError, ValueError):
            continue
        if (o.get("data") == data and o.get("cfg") == cfg and o.get("model", "stylegan2") == model
                and all((o.get("model_opts") or {}).get(k) == v for k, v in (model_opts or {}).items())
                and (d / STATE_NAME).is_file()):
            return d
    return None


def make_run_dir(outdir: Path, desc: str) -> Path:
    """A new ``<outdir>/<next id:05d>-<desc>`` (``outdir`` created if needed)."""
    ensure_outdir(outdir, **OUTDIR)
    while True:
        ids = [int(_RUN_DIR.match(d.name).group(1)) for d in run_dirs(outdir)]
        run_dir = outdir / f"{max(ids, default=-1) + 1:05d}-{desc}"
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            continue
        except OSError as e:
            raise StyleforgeError(f"{outdir}: cannot create a run folder ({e.strerror}); choose another {{outdir}}",
                                  also={"outdir": OUTDIR["label"]}) from None


class RunLog:
    """The run's log: each message is sent to ``callback`` as a note and appended to ``path`` (``log.txt``, opened
    with the first message; a :class:`~styleforge.errors.StyleforgeWarning` is written with its settings' labels).
    Disabled (``enabled=False``, ranks other than 0) it does nothing."""

    def __init__(self, enabled: bool, callback: Optional[Callback] = None, path: Optional[Path] = None):
        self.enabled = enabled
        self.report = reporter(callback)
        self.path = path
        self.file = None

    def __call__(self, msg: Message) -> None:
        if not self.enabled:
            return
        self.report.note(msg)
        if self.path is not None:
            if self.file is None:
                self.file = open(self.path, "a", buffering=1)
            self.file.write(f"{msg}\n")

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def truncate_stats(path: Path, kimg: float) -> None:
    """Drop stats.jsonl lines written after the resumed point (a hard kill loses them from the state)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["Progress/kimg"]["mean"] > kimg + 1e-9:
                continue
        except (ValueError, KeyError, TypeError):
            pass
        keep.append(line)
    with atomic_path(path) as tmp:
        tmp.write_text("".join(x + "\n" for x in keep))


def append_stats(path: Path, stats: Dict[str, Any]) -> None:
    """One line of stats.jsonl: ``{name: {num, mean, std}, ..., timestamp}``."""
    with open(path, "a") as f:
        f.write(json.dumps({**stats, "timestamp": time.time()}) + "\n")


class TensorBoard:
    """TensorBoard events in ``run_dir``, when ``torch.utils.tensorboard`` is importable (else nothing)."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self._writer = None  # None: not tried yet; False: unavailable

    def _get(self):
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.run_dir))
            except Exception:  # noqa: BLE001 - tensorboard is optional
                self._writer = False
        return self._writer or None

    def scalars(self, stats: Dict[str, Any], step: int) -> None:
        tb = self._get()
        if tb is not None:
            for k, v in stats.items():
                tb.add_scalar(k, v["mean"], global_step=step)
            tb.flush()

    def image(self, tag: str, grid: np.ndarray, step: int) -> None:
        tb = self._get()
        if tb is not None:
            tb.add_image(tag, grid, global_step=step, dataformats="HWC")

    def close(self) -> None:
        if self._writer:
            self._writer.close()
        self._writer = None


def grid_uint8(images: torch.Tensor, cols: int) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> HWC uint8 grid, converted as the official training loop converts."""
    return make_grid(list(uint8_as_training(images)), cols=cols)


def grid_indices(labels: np.ndarray, cols: int, rows: int, seed: int) -> List[int]:
    """Dataset items for the snapshot grid, as the official loop picks them: a seeded shuffle; with labels
    ([N, label_dim], label_dim > 0) one class per row, in sorted label order."""
    rnd = np.random.RandomState(seed)
    n = len(labels)
    if labels.ndim != 2 or labels.shape[1] == 0:
        return list(np.resize(rnd.permutation(n), cols * rows))
    keys = [tuple(row) for row in labels.tolist()]
    groups: Dict[tuple, List[int]] = {}
    for i in rnd.permutation(n):
        groups.setdefault(keys[i], []).append(int(i))
    order = sorted(groups)
    idx = []
    for y in range(rows):
        members = groups[order[y % len(order)]]
        idx += [members[x % len(members)] for x in range(cols)]
    return idx


def write_fakes_gif(run_dir: Path) -> Optional[Path]:
    """fakes.gif from fakes_init.png and every fakesNNNNNN.png, in training order (frames at most 1024 px)."""
    frames = sorted(run_dir.glob("fakes[0-9]*.png"))
    if (run_dir / "fakes_init.png").exists():
        frames.insert(0, run_dir / "fakes_init.png")
    if len(frames) < 2:
        return None
    return write_gif([read_image(f, "RGB") for f in frames], run_dir / "fakes.gif", fps=1000 / 300, max_side=1024)


def peak_memory_gb(device: torch.device) -> Dict[str, float]:
    out = {}
    if resource is not None:
        out["Resources/peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if device.type == "cuda":
        out["Resources/peak_gpu_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def fmt_time(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {(s // 60) % 60:02d}m"
    return f"{s // 86400}d {(s // 3600) % 24:02d}h"


def tick_line(stats: Dict[str, Any], tick: int, nimg: int) -> str:
    """The log line of one tick (the official loop's, plus the losses)."""
    def m(k):
        return stats[k]["mean"] if k in stats else float("nan")

    parts = [f"tick {tick:<5d}", f"kimg {nimg / 1000:<8.3f}", f"time {fmt_time(m('Timing/total_sec')):<9s}",
             f"sec/tick {m('Timing/sec_per_tick'):<7.1f}", f"sec/kimg {m('Timing/sec_per_kimg'):<7.1f}",
             f"maint {m('Timing/maintenance_sec'):<5.1f}", f"rss {m('Resources/peak_rss_gb'):.2f}G"]
    if "Resources/peak_gpu_mem_gb" in stats:
        parts.append(f"gpumem {m('Resources/peak_gpu_mem_gb'):.2f}G")
    parts.append(f"augment {m('Progress/augment'):.3f}")
    parts.append(f"G {m('Loss/G/loss'):.3f} D {m('Loss/D/loss'):.3f}")
    if "Loss/r1_penalty" in stats:
        parts.append(f"r1 {m('Loss/r1_penalty'):.3g}")
    if "Loss/pl_penalty" in stats:
        parts.append(f"pl {m('Loss/pl_penalty'):.3g}")
    return "  ".join(parts)
