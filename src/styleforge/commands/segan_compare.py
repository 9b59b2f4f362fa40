"""``segan-compare``: train the SEGAN modes on the same data and tabulate FID / PPL, with curves."""

from __future__ import annotations

import click

from .calc_metrics import metric_flags, metric_options
from .options import IntListParam, command, user_errors


@command()
@click.option("--data", required=True, type=click.Path(), metavar="PATH", help="Training data (zip or folder).")
@click.option("--outdir", required=True, type=click.Path(file_okay=False),
              help="runs/ (one run per mode), metrics.jsonl, compare.md, compare.json, curves.png, samples.png.")
@click.option("--kimg", type=float, default=200, show_default=True, help="Training length of every mode.")
@click.option("--modes", type=IntListParam("modes", max_value=3), default="0-3", show_default=True,
              help="Modes to compare (0 plain StyleGAN2, 1 feature-map subspace, 2 w subspace, 3 diagonal L).")
@click.option("--metrics", "metrics", default="fid50k_full,ppl2_wend", show_default=True, metavar="LIST",
              help="Metrics of each mode's last snapshot (the first one also along training with --every-snapshot).")
@click.option("--every-snapshot", is_flag=True, help="Measure every snapshot (metric curves), not only the last.")
@click.option("--ppl-distance", type=click.Choice(["lpips", "features"]), default="lpips", show_default=True,
              help="lpips: the official VGG16 LPIPS distance (--vgg16 file); features: squared distance of the "
                   "--inception detector's normalised features (when no VGG16 file fits, e.g. a small digit "
                   "detector).")
@click.option("--cond", is_flag=True, help="Train conditional models (labelled data).")
@click.option("--cbase", type=click.IntRange(min=16), default=None, help="Channel base (default: preset).")
@click.option("--cmax", type=click.IntRange(min=1), default=None, help="Max. channels (preset: 128).")
@click.option("--batch-size", "train_batch", type=click.IntRange(min=1), default=None,
              help="Training batch (preset: 16).")
@click.option("--kimg-per-tick", type=float, default=None, help="Training report interval (preset: 4).")
@click.option("--snap", type=click.IntRange(min=1), default=None, help="Ticks between snapshots (preset: 50).")
@click.option("--workers", type=click.IntRange(min=0), default=None, help="Data loader processes.")
@metric_flags
@user_errors
def segan_compare_cmd(data, outdir, kimg, modes, metrics, every_snapshot, ppl_distance, cond, cbase, cmax,
                      train_batch, kimg_per_tick, snap, workers, resize, inception, vgg16, allow_download, device,
                      seed, batch, truncation_psi):
    """Compare the SEGAN modes: the same data, length and settings; FID / PPL table, curves, samples.

    \b
    Examples:
      segan_compare.py --data faces/ --kimg 200 --outdir out/compare
      segan_compare.py --data mnist-digits-32.zip --kimg 30 --cmax 64 --outdir out/compare \\
          --metrics fid5k_full,ppl2_wend_5k --inception digitnet.pt --ppl-distance features
    A stopped comparison continues where it stopped when run again (runs resume, measured values are kept).
    """
    from ..metrics import check_metrics, load_detector
    from ..segan.compare import CompareConfig, compare_modes, feature_distance
    from ..train.snapshot_metrics import detector_kinds
    from ..utils.runtime import check_outdir
    from .progress import cli_callback

    check_outdir(outdir)
    names = check_metrics([m.strip() for m in metrics.split(",") if m.strip()])
    options = metric_options(resize, inception, vgg16, allow_download, device, seed, batch, truncation_psi)
    train_kw = {k: v for k, v in (("cond", cond or None), ("cbase", cbase), ("cmax", cmax), ("batch", train_batch),
                                  ("kimg_per_tick", kimg_per_tick), ("snap", snap), ("workers", workers))
                if v is not None}
    cfg = CompareConfig(modes=tuple(modes), kimg=kimg, metrics=tuple(names), every_snapshot=every_snapshot, seed=seed,
                        train={**train_kw, "device": device})
    cfg.validate()
    callback = cli_callback()
    ppl = [n for n in names if n.startswith("ppl")]
    kinds = set(detector_kinds([n for n in names if n not in ppl]))
    kinds |= {"inception"} if (ppl and ppl_distance == "features") else set(detector_kinds(ppl))
    # every detector loaded before any training: a missing file is one line now, not after hours
    detectors = {k: load_detector(k, getattr(options, k), allow_download=options.allow_download,
                                  device=options.device, callback=callback) for k in sorted(kinds)}
    distance = feature_distance(detectors["inception"]) if (ppl and ppl_distance == "features") else None
    note = ("PPL distance: squared difference of the inception-role detector's L2-normalised features "
            f"({detectors['inception'].describe()}), not VGG16 LPIPS." if distance is not None else "")
    res = compare_modes(data, outdir, cfg, options=options, detectors=detectors, distance=distance, note=note,
                        callback=callback)
    click.echo(f"compared modes {','.join(map(str, cfg.modes))} in {res['wall_time_s'] / 60:.1f} min; table "
               f"{res['files']['md']}, curves {res['files'].get('curves', '(matplotlib not installed)')}")
