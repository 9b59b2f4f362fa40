"""``calc_metrics``: FID, KID, precision/recall, IS and PPL of one network against a real data set (official flags).

Each result prints as one JSON line, as the official calc_metrics.py prints it, and is appended to
``metric-<name>.jsonl`` next to the network when it sits in a run folder (one with ``training_options.json``), or
in ``--outdir``. The flags shared with ``evaluate`` (metrics, detectors, sampling) are defined here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import click

from .edit import network_option
from .options import command, device_option, user_errors

RUN_OPTIONS = "training_options.json"  # what makes a folder a run folder (train writes it; so does the official code)


def split_metrics(value: str) -> List[str]:
    """``fid50k_full,kid50k_full`` -> the names, checked by the library (an unknown name lists the valid ones)."""
    from ..metrics import check_metrics

    return check_metrics([m.strip() for m in str(value).split(",") if m.strip()])


def load_detectors(names: Sequence[str], options, callback=None) -> Dict[str, "object"]:
    """Each detector the metrics need, loaded once (a missing or unusable file is one error line, before any work)."""
    from ..metrics import load_detector
    from ..train.snapshot_metrics import detector_kinds

    return {kind: load_detector(kind, getattr(options, kind), allow_download=options.allow_download,
                                device=options.device, callback=callback)
            for kind in detector_kinds(names)}


def metric_options(resize, inception, vgg16, allow_download, device, seed, batch, truncation_psi):
    """The library's MetricOptions from the shared flags (``device`` resolved: auto -> CUDA, MPS or CPU)."""
    import math

    from ..errors import StyleforgeError
    from ..metrics import MetricOptions
    from ..utils.runtime import resolve_device

    if not math.isfinite(truncation_psi):
        raise StyleforgeError("use a finite number (1: no truncation)", param="truncation_psi",
                              value=truncation_psi, label="truncation")
    return MetricOptions(resize=resize, inception=inception, vgg16=vgg16, allow_download=allow_download,
                         batch_size=batch, device=resolve_device(device), seed=seed, truncation_psi=truncation_psi)


def result_line(result) -> str:
    """One result as the official calc_metrics.py prints it: its jsonl record on one line."""
    return json.dumps(result.as_json())


def metric_flags(fn):
    """The flags ``calc_metrics`` and ``evaluate`` share: what to compute, the detectors, sampling, device."""
    for opt in reversed([
        click.option("--resize", type=click.Choice(["legacy", "clean"]), default="legacy", show_default=True,
                     help="legacy: the detector resizes (official numbers); clean: PIL bicubic to 299 px first "
                          "(clean-fid). Recorded with each result."),
        click.option("--inception", metavar="PATH|URL",
                     help="Inception detector (inception-2015-12-05.pt, TorchScript) for FID, KID and IS. "
                          "Default: the official file from the cache (downloaded only with --allow-download)."),
        click.option("--vgg16", metavar="PATH|URL",
                     help="VGG16 detector (vgg16.pt, TorchScript) for precision/recall and PPL. Default: the "
                          "official file from the cache (downloaded only with --allow-download)."),
        click.option("--allow-download", is_flag=True, default=None,
                     help="Allow downloading networks and detector files that are not in the cache."),
        device_option,
        click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Seed of the generated images and of the subsets drawn: a rerun gives the same number."),
        click.option("--batch", type=click.IntRange(min=1), default=64, show_default=True,
                     help="Images per detector batch (and generator batch)."),
        click.option("--trunc", "truncation_psi", type=float, default=1.0, show_default=True,
                     help="Truncation psi of the generated images (1: none, as the official metrics)."),
    ]):
        fn = opt(fn)
    return fn


def find_run_dir(network_file: Optional[Path]) -> Optional[Path]:
    """The run folder a network file sits in (its folder holds training_options.json), else None."""
    if network_file is None:
        return None
    folder = Path(network_file).resolve().parent
    return folder if (folder / RUN_OPTIONS).is_file() else None


def training_data(extra: dict, run_dir: Optional[Path]) -> Optional[str]:
    """The data set a network was trained on: the snapshot's ``training_set_kwargs.path`` (official pickles and our
    snapshots store it), else the run folder's ``training_options.json`` ``data``."""
    path = ((extra or {}).get("training_set_kwargs") or {}).get("path")
    if not path and run_dir is not None:
        try:
            path = json.loads((run_dir / RUN_OPTIONS).read_text()).get("data")
        except (OSError, ValueError, AttributeError):
            path = None
    return str(path) if path else None


@command()
@network_option
@click.option("--data", type=click.Path(), default=None, metavar="PATH",
              help="Real images (dataset zip or folder). Default: the data set the network was trained on, as its "
                   "snapshot or run folder names it.")
@click.option("--metrics", "metrics", default="fid50k_full", show_default=True, metavar="LIST",
              help="Comma-separated metric names (fid50k_full, kid50k_full, pr50k3_full, is50k, ppl2_wend, ... and "
                   "the smaller fid5k, kid5k, ...).")
@metric_flags
@click.option("--outdir", type=click.Path(file_okay=False), default=None,
              help="Append metric-<name>.jsonl here. Default: the network's run folder, if it sits in one.")
@click.option("--shard", default=None, metavar="i/n",
              help="Compute shard i of n of the --metrics list (default: from SLURM array vars).")
@user_errors
def calc_metrics_cmd(network, data, metrics, resize, inception, vgg16, allow_download, device, seed, batch,
                     truncation_psi, outdir, shard):
    """Compute quality metrics of a network against real images (official calc_metrics.py flags).

    \b
    Examples:
      calc_metrics.py --network ffhq.pkl --data ffhq.zip --metrics fid50k_full,kid50k_full,pr50k3_full,ppl2_wend,is50k
      calc_metrics.py --network runs/00003-x/network-snapshot-000400.safetensors --metrics fid5k --resize clean
      calc_metrics.py --network faces32 --data faces/ --metrics fid5k --inception inception-2015-12-05.pt

    Each result prints as one JSON line and is appended to metric-<name>.jsonl in the network's run folder (or
    --outdir). Real-image statistics are cached, so a second run on the same data is quicker. With --shard i/n
    (or in a SLURM array) only the i-th of n slices of the metric list is computed: each metric's result does not
    depend on which others run with it.
    """
    from .. import zoo
    from ..errors import StyleforgeError
    from ..metrics import append_jsonl, calc_metric, metric_spec
    from ..utils.fileio import ensure_outdir
    from ..utils.perf import tune_cpu_allocator
    from ..utils.runtime import check_outdir, parse_shard, shard_items
    from .progress import cli_callback

    names = list(shard_items(split_metrics(metrics), parse_shard(shard)))
    if not names:
        click.echo("nothing to compute: this shard has no metrics", err=True)
        return
    callback = cli_callback()
    if outdir is not None:
        check_outdir(outdir)
    options = metric_options(resize, inception, vgg16, allow_download, device, seed, batch, truncation_psi)
    if options.device.type == "cpu":
        tune_cpu_allocator()
    detectors = load_detectors(names, options, callback)
    bundle = zoo.load_networks(network, ("G",), options.device, allow_download, callback)
    G = bundle.networks["G"].eval().requires_grad_(False)
    run_dir = find_run_dir(bundle.path)
    if data is None:
        data = training_data(bundle.extra, run_dir)
        if data is None and (G.c_dim or any(metric_spec(n).needs_reals for n in names)):
            raise StyleforgeError(f"{bundle.path.name} does not say which data set it was trained on; give the real "
                                  "images with {name} (a dataset zip or folder)", param="data")
        if data is not None and not Path(data).exists():
            raise StyleforgeError(f"{data}, the data set {bundle.path.name} was trained on, is not there; give the "
                                  "real images with {name}", param="data")
    target = Path(outdir) if outdir is not None else run_dir
    for name in names:
        res = calc_metric(name, G, data, options=options, detectors=detectors, callback=callback,
                          snapshot=bundle.path.name)
        click.echo(result_line(res))
        if target is not None:
            ensure_outdir(target, param="outdir")
            append_jsonl(res, target)
