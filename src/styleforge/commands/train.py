"""``train``: train a StyleGAN2-ADA model, with the official train.py flags (plus resume, CPU and HPC options)."""

from __future__ import annotations

import click

from ..train.presets import AUG_MODES, preset_names
from .options import command, user_errors


def bool_option(*decls, help):
    """An official ``BOOL`` option: ``--mirror 1``, ``--mirror=1``, ``--mirror=0``, ``--mirror true``... and, as a
    shorthand, ``--mirror`` alone for true. (The official train.py declares these ``type=bool``; a plain click
    flag would refuse the documented ``--mirror 1``.)"""
    return click.option(*decls, type=click.BOOL, is_flag=False, flag_value=True, default=False, metavar="[BOOL]",
                        help=help + " [default: false; alone: true]")


def _metrics(ctx, param, value):
    if value is None or value.strip().lower() in ("", "none"):
        return []
    return [m.strip() for m in value.split(",") if m.strip()]  # the names are checked by train()


@command()
# General.
@click.option("--outdir", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Where to make the run folders (<outdir>/00000-<desc>/).")
@click.option("--gpus", type=click.IntRange(min=1), default=None, metavar="INT",
              help="Number of processes/GPUs (power of two; default 1, or torchrun's count). On CPU use torchrun.")
@click.option("--snap", type=click.IntRange(min=1), default=None, metavar="INT",
              help="Snapshot (network, state, fakes) every INT ticks. Default: preset (50; cpu: 5).")
@click.option("--metrics", callback=_metrics, default="none", show_default=True, metavar="LIST",
              help="Metrics of G_ema after each snapshot, comma-separated (fid5k, kid5k, fid50k_full, ... as in "
                   "calc_metrics), appended to <run dir>/metric-<name>.jsonl; or none. The official default is "
                   "fid50k_full: 50,000 generated images per snapshot, minutes on a GPU but hours on a CPU, so "
                   "here it is asked for explicitly.")
@click.option("--inception", metavar="PATH|URL", default=None,
              help="Inception detector file for --metrics FID/KID/IS (default: the official file from the cache).")
@click.option("--vgg16", metavar="PATH|URL", default=None,
              help="VGG16 detector file for --metrics PR/PPL (default: the official file from the cache).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Random seed.")
@click.option("-n", "--dry-run", is_flag=True, help="Print the training options and exit.")
# Dataset.
@click.option("--data", required=True, type=click.Path(), metavar="PATH", help="Training data (zip or folder).")
@bool_option("--cond", help="Train a conditional model (labels from dataset.json).")
@bool_option("--mirror", help="Add x-flipped copies of the dataset.")
# Base config.
@click.option("--cfg", type=click.Choice(preset_names()), default="auto", show_default=True, help="Base config.")
@click.option("--gamma", type=float, default=None, help="R1 regularisation weight. Default: preset.")
@click.option("--kimg", type=float, default=None, help="Training length in thousands of images. Default: preset.")
@click.option("--batch", type=click.IntRange(min=1), default=None, help="Global batch size. Default: preset.")
@click.option("--cbase", type=click.IntRange(min=16), default=None,
              help="Capacity multiplier: channels at resolution r are min(cbase / r, cmax). Default: preset.")
@click.option("--cmax", type=click.IntRange(min=1), default=None, help="Max. feature maps per layer. Default: preset.")
@click.option("--mode", type=int, default=None, metavar="0..3",
              help="--cfg segan: 0 plain StyleGAN2, 1 subspace added to the feature maps, 2 w through the subspace "
                   "before modulation, 3 w rescaled by a learned diagonal [default: 2].")
@click.option("--subspace-dim", type=int, default=None, metavar="INT",
              help="--cfg segan: coordinates per layer's subspace [default: w_dim].")
@click.option("--orth-weight", type=float, default=None, metavar="FLOAT",
              help="--cfg segan: weight of the orthogonality term 0.5*||U^T U - I||^2 [default: 1; 0: off].")
@click.option("--map", "map_layers", type=click.IntRange(min=1), default=None,
              help="Mapping-network depth. Default: preset.")
# Augmentation.
@click.option("--aug", type=click.Choice(list(AUG_MODES)), default=None,
              help="Augmentation mode [default: ada].")
@click.option("--p", type=float, default=None, help="Augmentation probability for --aug fixed.")
@click.option("--target", type=float, default=None, help="ADA target value for --aug ada [default: 0.6].")
@click.option("--augpipe", default=None, metavar="NAME", help="Augmentation pipeline: blit|geom|color|bg|bgc [default: bgc].")
# Transfer / resume.
@click.option("--resume", default=None, metavar="auto|PATH",
              help="auto: continue the newest run in --outdir with the same --data and --cfg (or start one). "
                   "PATH: a network to fine-tune from (official .pkl or styleforge .safetensors), or a "
                   "resume-state.pt / run folder to continue.")
# Performance.
@click.option("--kimg-per-tick", type=float, default=None, help="Progress-report interval in kimg. Default: preset.")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="DataLoader worker processes [default: 3, at most the number of CPUs - 1].")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N")
@bool_option("--deterministic", help="Deterministic algorithms and no loader workers: a resumed run matches an "
                                      "uninterrupted one bit for bit (CPU).")
@bool_option("--fp32", help="Disable mixed precision on CUDA (CPU training is always fp32).")
@user_errors
def train_cmd(outdir, gpus, snap, metrics, inception, vgg16, seed, dry_run, data, cond, mirror, cfg, gamma, kimg, batch,
              mode, subspace_dim, orth_weight, aug, p, target, augpipe, cbase, cmax, map_layers, resume, kimg_per_tick, workers, device, deterministic,
              fp32):
    """Train a StyleGAN2-ADA model (official train.py flags).

    \b
    Examples:
      train.py --outdir runs --data faces32.zip --cfg cpu --mirror 1
      train.py --outdir runs --data faces32.zip --cfg cpu --resume auto       (continue after a stop)
      train.py --outdir runs --data afhq256.zip --cfg paper256 --resume ffhq256.pkl --kimg 500
      torchrun --nproc_per_node 2 scripts/train.py --outdir runs --data faces32.zip --cfg cpu
      train.py --outdir runs --data faces32.zip --cfg cpu --metrics fid5k   (FID of every snapshot)
      train.py --outdir runs --data anime64.zip --cfg segan --mode 2          (SEGAN, linear subspaces)

    SIGTERM or Ctrl-C finishes the current step, saves resume-state.pt in the run folder and exits 0.
    """
    from ..train.loop import train
    from .progress import cli_callback

    model_opts = {k: v for k, v in (("mode", mode), ("subspace_dim", subspace_dim), ("orth_weight", orth_weight))
                  if v is not None}
    res = train(outdir=outdir, data=data, cfg=cfg, model_opts=model_opts, gpus=gpus, batch=batch, gamma=gamma, kimg=kimg, snap=snap,
                mirror=mirror, cond=cond, aug=aug, p=p, target=target, augpipe=augpipe, cbase=cbase, cmax=cmax,
                map_layers=map_layers, resume=resume, seed=seed, metrics=metrics, inception=inception, vgg16=vgg16, kimg_per_tick=kimg_per_tick,
                workers=workers, device=device, deterministic=deterministic, fp32=fp32, dry_run=dry_run,
                callback=cli_callback())
    if res.rank != 0:  # under torchrun every rank returns; one report is enough
        return
    if dry_run:
        o = res.options
        click.echo(f"Training options:\n{o.to_json()}\nOutput directory: {res.planned_run_dir}")
        click.echo(f"Dataset: {o.data} ({o.num_images} images, {o.resolution}x{o.resolution}, {o.label_dim} label "
                   "dims)\nDry run; exiting.")
    elif res.run_dir is not None:
        what = "stopped" if res.stopped else "finished"
        click.echo(f"{what} at {res.cur_nimg / 1000:g} kimg; run folder: {res.run_dir}")
