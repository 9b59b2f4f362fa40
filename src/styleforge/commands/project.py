"""``project``: find the latent of a photo (or of every photo in a folder), with the official projector.py
flags plus W+, batches, sharding and a choice of perceptual loss."""

from __future__ import annotations

import sys

import click

from ..utils.runtime import parse_shard
from .options import command, device_option, user_errors
from .progress import cli_callback


@command()
@click.option("--network", "network", metavar="PATH|NAME|URL",
              help="Network: official .pkl, styleforge .safetensors, known name (ffhq...) or URL. Default: bundled model.")
@click.option("--target", "target", required=True, type=click.Path(), metavar="FILE|DIR",
              help="Image to project, or a folder of images (searched recursively).")
@click.option("--outdir", type=click.Path(file_okay=False), required=True,
              help="Output folder (one sub-folder per image when --target is a folder).")
@click.option("--space", type=click.Choice(["w", "w+"]), default="w", show_default=True,
              help="w: one latent for all layers (official); w+: one per layer (closer fits, less editable).")
@click.option("--num-steps", type=click.IntRange(min=1), default=1000, show_default=True, help="Optimisation steps.")
@click.option("--seed", type=int, default=303, show_default=True, help="Random seed (each image gets its own stream).")
@click.option("--loss", type=click.Choice(["vgg", "discriminator", "pixel"]), default=None,
              help="Perceptual loss. Default: vgg (official LPIPS) when vgg16.pt is present, else discriminator.")
@click.option("--vgg", "vgg", type=click.Path(dir_okay=False), default=None,
              help="Path of NVIDIA's vgg16.pt (TorchScript; only use the official file). Default: the cache.")
@click.option("--save-video", "save_video", type=click.BOOL, is_flag=False, flag_value=True, default=True,
              show_default=True, metavar="[BOOL]", help="Write proj.mp4 (target | projection for every step).")
@click.option("--no-save-video", "no_save_video", is_flag=True, help="Do not write proj.mp4 (same as --save-video false).")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Images optimised together (same results as one at a time, up to float rounding).")
@click.option("--shard", default=None, metavar="i/n", help="Process shard i of n (default: from SLURM array vars).")
@device_option
@click.option("--allow-download", is_flag=True, default=None, help="Allow downloading --network / vgg16.pt if not cached.")
@click.option("--overwrite", is_flag=True, help="Redo targets that are already finished (default: skip them).")
@user_errors
def project_cmd(network, target, outdir, space, num_steps, seed, loss, vgg, save_video, no_save_video, batch_size,
                shard, device, allow_download, overwrite):
    """Project images into a network's latent space (official projector, plus W+ and batches).

    \b
    Outputs per image: target.png, proj.png, projected_w.npz (render it with
    generate.py --projected-w), projected_noise.npz, projection.json, and proj.mp4.
    \b
    Examples:
      project.py --network ffhq.pkl --target face.png --outdir out
      project.py --network ffhq.pkl --target faces/ --outdir out --space w+ --no-save-video --batch-size 4
      sbatch --array=0-9 ... project.py --target faces/ --outdir out    # shard i/10 from SLURM
    """
    from ..project.batch import project_files

    res = project_files(
        target=target, outdir=outdir, network=network, space=space, num_steps=num_steps, seed=seed, loss=loss,
        vgg=vgg, save_video=bool(save_video) and not no_save_video, shard=parse_shard(shard), device=device,
        allow_download=allow_download, batch_size=batch_size, overwrite=overwrite,
        tune_allocator=True, callback=cli_callback(),
    )
    click.echo(res.summary())
    if res.failed:  # each failure was reported as it happened (``failed: ...``)
        others = "; the others are done" if res.done or res.skipped else ""
        click.echo(f"error: {len(res.failed)} target(s) failed (listed above){others}", err=True)
        sys.exit(1)
