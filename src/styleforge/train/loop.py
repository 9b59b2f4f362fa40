"""Training runs: :func:`train` (behind ``scripts/train.py`` / ``styleforge train``) with run folders, fine-tuning,
exact resume and multi-process training.

One call resolves the options (:mod:`.presets`; the model by name, :mod:`.registry`), picks or creates the run
folder ``<outdir>/<id:05d>-<desc>/`` (:mod:`.rundir`), optionally loads a network to fine-tune or a resume state
(:mod:`.state`), and runs a :class:`~styleforge.train.trainer.Trainer` until ``kimg`` thousand images have been
shown or a stop was requested (SIGTERM/SIGINT, or ``Trainer.stop.set()``), which finishes the current step, saves
the state and returns normally. Under torchrun every rank calls :func:`train`; ``gpus=N`` without it spawns the
ranks (:mod:`.distributed`). Progress and the log lines reach ``callback`` (:mod:`styleforge.utils.progress`) as
notes; nothing is printed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch

from ..errors import StyleforgeError, StyleforgeWarning
from ..utils.fileio import ensure_outdir, save_json
from ..utils.progress import Callback, reporter
from .distributed import DistInfo, error_fields, launched_by_torchrun, setup_distributed, spawn_training
from .presets import TrainingOptions, TrainSettings, resolve_options, with_model
from .registry import get_model
from .rundir import OUTDIR, find_auto_resume, make_run_dir, truncate_stats
from .state import STATE_NAME, is_state_file, load_state_file, stop_on_signals
from .trainer import Trainer


@dataclass
class TrainResult:
    run_dir: Optional[Path]
    options: TrainingOptions
    snapshot: Optional[Path] = None
    state: Optional[Path] = None
    cur_nimg: int = 0
    stopped: bool = False
    done: bool = False
    rank: int = 0  # this process's rank (torchrun): only rank 0 reports
    planned_run_dir: Optional[str] = None  # dry runs: the run folder a real run would use

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(options=self.options.to_dict(), **{k: str(d[k]) if d[k] else None for k in ("run_dir", "snapshot",
                                                                                              "state")})
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainResult":
        d = dict(d, options=TrainingOptions.from_dict(d["options"]))
        d.update({k: Path(d[k]) if d[k] else None for k in ("run_dir", "snapshot", "state")})
        return cls(**d)


def train(
    outdir: str,
    data: str,
    *,
    settings: Optional[TrainSettings] = None,
    gpus: Optional[int] = None,
    dry_run: bool = False,
    overrides: Optional[Dict[str, Any]] = None,
    callback: Optional[Callback] = None,
    step_callback: Optional[Callable[[Trainer], None]] = None,
    snapshot_callback: Optional[Callable[[Trainer, Path], None]] = None,
    handle_signals: bool = True,
    **fields: Any,
) -> TrainResult:
    """Train (or continue training) a model (StyleGAN2-ADA by default); see ``scripts/train.py --help``.

    The user's choices are a :class:`~styleforge.train.presets.TrainSettings` (``settings``) and/or its fields as
    keywords (``train(outdir, data, cfg="cpu", kimg=10)``), which replace those of ``settings``.
    ``overrides``: extra settings merged (deeply) into the resolved :class:`TrainingOptions` of a new run, e.g.
    ``{'G': {'synthesis': {'channel_max': 32}}}`` (tests and benchmarks use it for tiny networks).
    ``dry_run``: resolve and check everything, write nothing; the result has the options and the planned folder.
    ``callback`` receives the log lines as notes (rank 0). ``step_callback(trainer)`` runs after every step;
    calling ``trainer.stop.set()`` there is exactly what SIGTERM does.
    """
    s = with_model(dataclasses.replace(settings or TrainSettings(), **fields))
    s = dataclasses.replace(s, model_opts=get_model(s.model).resolve_options(s.model_opts))
    if s.workers is None:  # more loader processes than spare cores only slows training down
        s = dataclasses.replace(s, workers=max(min(3, (os.cpu_count() or 1) - 1), 0))
    if s.metrics:
        from ..metrics import check_metrics

        s = dataclasses.replace(s, metrics=check_metrics(list(s.metrics)))  # an unknown name lists the valid ones
    # the run's settings, passed on unchanged to _train (here, or in each spawned process)
    run_kw = dict(outdir=outdir, data=data, settings=s, overrides=overrides)
    if not launched_by_torchrun() and (gpus or 1) > 1:
        setup_distributed(gpus, s.device)  # the checks: CUDA with enough devices (CPU needs torchrun)
        # validate everything here first, so that bad input gives one line instead of one per process
        pre = _train(dist=DistInfo(world=gpus), callback=callback if dry_run else None, dry_run=True,
                     step_callback=None, snapshot_callback=None, handle_signals=False, **run_kw)
        if dry_run:
            return pre
        return TrainResult.from_dict(spawn_training(
            gpus, dict(run_kw, step_callback=step_callback, snapshot_callback=snapshot_callback), callback))
    prev_det = torch.are_deterministic_algorithms_enabled()
    # while rank 0 measures --metrics after a snapshot the other ranks wait in their next all-reduce: allow for it
    # (NCCL's default is 10 minutes; fid50k_full with a first pass over the reals can take longer)
    dist = setup_distributed(gpus, s.device, timeout=datetime.timedelta(hours=3) if s.metrics else None)
    try:
        if s.deterministic:
            # CUDA has no deterministic backward of grid_sample (ADA's warp): there the flag makes every other
            # kernel deterministic and warns about that one (bit-exact resume is a CPU promise, see README)
            torch.use_deterministic_algorithms(True, warn_only=dist.device.type == "cuda")
            torch.backends.cudnn.benchmark = False
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        elif dist.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        res = _train(dist=dist, callback=callback, dry_run=dry_run, step_callback=step_callback,
                     snapshot_callback=snapshot_callback, handle_signals=handle_signals, **run_kw)
        if dist.initialized_here and torch.distributed.is_initialized():
            torch.distributed.barrier()  # every rank is done communicating before the group is torn down
        return res
    finally:
        torch.use_deterministic_algorithms(prev_det)
        if dist.initialized_here and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _decide_resume(outdir: Path, data: str, s: TrainSettings) -> Dict[str, Any]:
    """What ``s.resume`` names: a state to continue (and its run folder) or a network to fine-tune."""
    from .. import zoo

    decision: Dict[str, Any] = {"error": None, "state": None, "network": None, "run_dir": None}
    if s.resume == "auto":
        d = find_auto_resume(outdir, data, s.cfg, s.model, s.model_opts)
        if d is not None:
            decision.update(state=str(d / STATE_NAME), run_dir=str(d))
    elif s.resume:
        rp = Path(s.resume)
        if rp.is_dir() and (rp / STATE_NAME).is_file():
            rp = rp / STATE_NAME
        if not rp.exists():
            rp = zoo.resolve(str(s.resume))
        decision["state" if is_state_file(rp) else "network"] = str(rp)
    return decision


def _on_main(dist: DistInfo, fn: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
    """``fn()`` on rank 0, its result on every rank; a StyleforgeError there is raised on every rank."""
    out: Dict[str, Any] = {"error": None}
    if dist.is_main:
        try:
            out = fn()
        except StyleforgeError as e:
            if dist.world == 1:
                raise
            out = {"error": error_fields(e)}
    out = dist.broadcast_object(out)
    if out["error"]:
        raise StyleforgeError(**out["error"])
    return out


def _train(outdir, data, settings: TrainSettings, dist: DistInfo, callback: Optional[Callback], *, overrides,
           step_callback, snapshot_callback, handle_signals, dry_run) -> TrainResult:
    from .. import zoo
    from ..data.dataset import open_dataset

    s = settings
    note = reporter(callback if dist.is_main else None).note
    outdir = Path(outdir)
    data_path = Path(data)
    data_abs = str(data_path.resolve()) if data_path.exists() else str(data_path)
    probe = open_dataset(data_abs, cond=True)  # labels are checked below, whatever cond says

    # Decide what to resume from (rank 0 decides; every process follows).
    decision = _on_main(dist, lambda: _decide_resume(outdir, data_abs, s))

    state = None
    bundle = None
    if decision["state"]:
        state = load_state_file(Path(decision["state"]), map_location=dist.device)
        opts = TrainingOptions.from_dict(json.loads(state["options"]))
        if opts.gpus != dist.world:
            if opts.batch % dist.world:
                raise StyleforgeError(f"the resumed run has batch {opts.batch}, not divisible by {dist.world} processes")
            opts.batch_gpu = min(opts.batch_gpu, opts.batch // dist.world)
            if (opts.batch // dist.world) % opts.batch_gpu:
                opts.batch_gpu = opts.batch // dist.world
            note(f"resuming a {opts.gpus}-process run with {dist.world}; the result will not be bit-identical")
            opts.gpus = dist.world
        g_cfg = opts.G
        _check_data_matches(g_cfg["img_resolution"], g_cfg["img_channels"], g_cfg.get("c_dim", 0), probe, opts.cond,
                            "the resumed network")
        opts.data = data_abs
        for k in ("kimg", "snap", "kimg_per_tick"):
            if getattr(s, k) is not None:
                setattr(opts, k, getattr(s, k))
                if k == "snap":
                    opts.image_snap = s.snap
        opts.workers, opts.device, opts.deterministic = s.workers, s.device, s.deterministic
        opts.fp16 = dist.device.type == "cuda" and not s.fp32
        opts.metrics = list(s.metrics or [])  # like kimg and snap: this command's choice
    else:
        opts = resolve_options(
            data=data_abs, dataset_name=probe.name, resolution=probe.resolution, num_channels=probe.num_channels,
            num_images=len(probe) * (2 if s.mirror else 1), label_dim=probe.label_dim, gpus=dist.world,
            fp16=dist.device.type == "cuda" and not s.fp32, settings=s,
            resume=s.resume if (s.resume == "auto" or decision["network"]) else None)
        if dist.device.type == "cpu" and opts.grid[0] * opts.grid[1] > 64:
            # the official grid (up to 32x32 images) takes minutes per snapshot on a CPU; 8x8 is plenty there
            opts.grid = (min(opts.grid[0], 8), min(opts.grid[1], 8))
        opts = get_model(opts.model).configure(opts)
        if overrides:
            opts = TrainingOptions.from_dict(_deep_update(opts.to_dict(), overrides))
        if decision["network"]:
            bundle = zoo.load_networks(decision["network"], roles=None)
            gen = bundle.networks.get("G") or bundle.networks.get("G_ema")
            if gen is None or (opts.model == "stylegan2" and not hasattr(gen, "mapping")):
                raise StyleforgeError(f"{decision['network']}: has no {opts.model} generator to fine-tune")
            _check_data_matches(gen.img_resolution, gen.img_channels, gen.c_dim, probe, opts.cond,
                                "the {resume} network")
            # Fine-tuning trains the file's architecture; the preset supplies the training hyper-parameters.
            opts.G = gen.config.to_dict()
            if "D" in bundle.networks:
                d_cfg = bundle.networks["D"].config.to_dict()
                if "mbstd_group_size" in d_cfg:
                    d_cfg["mbstd_group_size"] = opts.D.get("mbstd_group_size", d_cfg["mbstd_group_size"])
                opts.D = d_cfg
            else:
                opts.D = _deep_update(opts.D, {"img_resolution": gen.img_resolution, "img_channels": gen.img_channels,
                                               "c_dim": gen.c_dim})
    probe.close()

    if dry_run:
        where = decision["run_dir"] or str(outdir / f"NNNNN-{opts.desc}")
        return TrainResult(run_dir=None, options=opts, planned_run_dir=where, rank=dist.rank)

    # Metrics after each snapshot (rank 0): the detectors are loaded now, so a missing file stops before any work.
    if opts.metrics:
        snapshot_callback = _with_metrics(dist, opts, s, callback, snapshot_callback)

    # Run folder (rank 0 creates it; errors reach every process).
    def make() -> Dict[str, Any]:
        run_dir = decision["run_dir"] or str(make_run_dir(outdir, opts.desc))
        ensure_outdir(run_dir, **OUTDIR)
        return {"error": None, "run_dir": run_dir}

    run_dir = Path(_on_main(dist, make)["run_dir"])
    opts.run_dir = str(run_dir)
    if dist.is_main:
        if not (run_dir / "training_options.json").exists():
            save_json(run_dir / "training_options.json", opts.to_dict())
        if state is not None:
            truncate_stats(run_dir / "stats.jsonl", int(state["progress"]["cur_nimg"]) / 1000)

    trainer = Trainer(opts, dist, run_dir=run_dir, callback=callback, step_callback=step_callback,
                      snapshot_callback=snapshot_callback)
    if state is not None:
        trainer.log(StyleforgeWarning(
            f"resuming from {decision['state']} at {int(state['progress']['cur_nimg']) / 1000:g} kimg (all settings "
            "except {kimg}, {snap}, {kimg_per_tick}, {metrics}, {workers} and {device} come from the state)",
            also={k: k.replace("_", " ") for k in ("kimg", "snap", "kimg_per_tick", "metrics", "workers", "device")}))
        trainer.load_state_dict(state)
        del state
    elif bundle is not None:
        trainer.log(f"fine-tuning from {decision['network']}")
        trainer.load_networks_from(bundle)
    trainer.broadcast_weights()
    ctx = stop_on_signals(trainer.stop, trainer.log) if handle_signals else contextlib.nullcontext()
    with ctx:
        res = trainer.run()
    return TrainResult(run_dir=run_dir, options=opts, snapshot=res.get("snapshot"), state=res.get("state"),
                       cur_nimg=res.get("cur_nimg", trainer.cur_nimg), stopped=res.get("stopped", False),
                       done=res.get("done", False), rank=dist.rank)


def _with_metrics(dist: DistInfo, opts: TrainingOptions, s: TrainSettings, callback: Optional[Callback],
                  snapshot_callback: Optional[Callable[[Trainer, Path], None]]):
    """``snapshot_callback`` preceded, on rank 0, by the metrics hook (:mod:`.snapshot_metrics`)."""
    from .snapshot_metrics import SnapshotMetrics

    hooks = []

    def load() -> Dict[str, Any]:
        # seed 0, as calc_metrics uses by default: the logged value is what calc_metrics gives for the snapshot
        hooks.append(SnapshotMetrics(opts.metrics, opts.data, inception=s.inception, vgg16=s.vgg16,
                                     device=dist.device, callback=callback))
        return {"error": None}

    _on_main(dist, load)
    if not hooks:
        return snapshot_callback

    def both(trainer: Trainer, snapshot: Path) -> None:
        hooks[0](trainer, snapshot)
        if snapshot_callback is not None:
            snapshot_callback(trainer, snapshot)

    return both


def _check_data_matches(opts_res: int, opts_ch: int, c_dim: int, ds, cond: bool, what: str) -> None:
    """The dataset fits the networks (resolution, channels, labels), or one line naming the dataset setting."""
    data = {"param": "data", "label": "the dataset", "also": {"cond": "cond", "resume": "resume"}}
    if ds.resolution != opts_res:
        raise StyleforgeError(f"{{name}} is {ds.resolution}x{ds.resolution} but {what} is {opts_res}x{opts_res}; use a "
                              f"{opts_res}x{opts_res} dataset (the dataset tool at resolution {opts_res})", **data)
    if ds.num_channels != opts_ch:
        raise StyleforgeError(f"{{name}} has {ds.num_channels} channel(s) but {what} has {opts_ch}; re-create the "
                              f"dataset as {'grayscale' if opts_ch == 1 else 'RGB'} with the dataset tool", **data)
    labels = ds.label_dim if cond else 0
    if labels != c_dim:
        if c_dim and not cond:
            raise StyleforgeError(f"{what} is conditional ({c_dim} labels): pass {{cond}} with a labelled dataset",
                                  also=data["also"])
        raise StyleforgeError(f"{{name}} has {labels} label(s) per image but {what} expects {c_dim} (c_dim); use a "
                              "dataset with matching labels" + ("" if c_dim else " or drop {cond}"), **data)


def _deep_update(d: Dict[str, Any], u: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(d)
    for k, v in u.items():
        out[k] = _deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
