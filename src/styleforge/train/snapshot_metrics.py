"""Metrics during training (``train.py --metrics fid5k,...``): after each network snapshot, the requested metrics of
``G_ema`` against the training data (no x-flips, as the official code measures), each appended to
``<run dir>/metric-<name>.jsonl`` in the official format, logged, and written to TensorBoard as ``Metrics/<key>``.

Only rank 0 measures (the snapshot is written there; the other ranks wait at their next step). The detectors are
loaded once, when the run starts, so a missing detector file stops the run before any training; a metric that
fails later (e.g. a data set too small for it) is logged as a warning and training goes on.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..errors import StyleforgeError, StyleforgeWarning


def detector_kinds(names: Sequence[str]) -> List[str]:
    """The detectors the metrics ``names`` need: ``inception`` (FID, KID, IS) and/or ``vgg16`` (PR, PPL)."""
    from ..metrics import metric_spec

    kinds: List[str] = []
    for n in names:
        kind = "vgg16" if metric_spec(n).kind in ("pr", "ppl") else "inception"
        if kind not in kinds:
            kinds.append(kind)
    return kinds


class SnapshotMetrics:
    """The snapshot hook: ``hook(trainer, snapshot_path)`` measures ``names`` on ``trainer.G_ema`` against ``data``.

    ``inception`` / ``vgg16``: detector files (None: the official files from the cache, downloaded only when
    allowed); ``callback`` receives the detector loading and download notes.
    """

    def __init__(self, names: Sequence[str], data: str, *, inception: Optional[str] = None,
                 vgg16: Optional[str] = None, allow_download: Optional[bool] = None, device="cpu",
                 seed: int = 0, callback=None):
        from ..metrics import MetricOptions, check_metrics, load_detector

        self.names = check_metrics(list(names))
        self.data = str(data)
        self.options = MetricOptions(inception=inception, vgg16=vgg16, allow_download=allow_download,
                                     device=torch.device(device), seed=seed)
        self.detectors: Dict[str, torch.nn.Module] = {
            kind: load_detector(kind, getattr(self.options, kind), allow_download=allow_download,
                                device=self.options.device, callback=callback)
            for kind in detector_kinds(self.names)}

    def __call__(self, trainer, snapshot: Path) -> None:
        # the training's random streams are left as they were: a run with --metrics trains exactly as one without,
        # and a resumed run (its state was saved before this hook ran) continues bit for bit
        np_state, py_state = np.random.get_state(), random.getstate()
        devices = [trainer.device] if trainer.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                self._measure(trainer, snapshot)
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)

    def _measure(self, trainer, snapshot: Path) -> None:
        from ..metrics import append_jsonl, calc_metric

        kimg = trainer.cur_nimg // 1000
        for name in self.names:
            try:
                res = calc_metric(name, trainer.G_ema, self.data, options=self.options, detectors=self.detectors,
                                  callback=trainer.log.report, snapshot=Path(snapshot).name)
            except StyleforgeError as e:
                trainer.log(StyleforgeWarning(f"{name} of {Path(snapshot).name} failed: {e}; training goes on"))
                continue
            if trainer.run_dir is not None:
                append_jsonl(res, trainer.run_dir)
            trainer.log(f"{name} of {res.snapshot}: " + "  ".join(f"{k} {v:.6g}" for k, v in res.results.items())
                        + f" ({res.total_time:.1f} s)")
            if trainer.tensorboard is not None:
                trainer.tensorboard.scalars({f"Metrics/{k}": {"mean": float(v)} for k, v in res.results.items()},
                                            kimg)
