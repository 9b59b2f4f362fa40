"""``generate``: images from seeds or saved latents, with the official generate.py flags."""

from __future__ import annotations

import click

from ..utils.runtime import parse_shard
from .options import IntListParam, command, device_option, user_errors
from .progress import cli_callback


@command()
@click.option("--network", "network", metavar="PATH|NAME|URL",
              help="Network: official .pkl, styleforge .safetensors, known name (ffhq...) or URL. Default: bundled model.")
@click.option("--seeds", type=IntListParam("seeds"), help="Seeds, e.g. 0-7,12.")
@click.option("--trunc", "truncation_psi", type=float, default=1.0, show_default=True, help="Truncation psi.")
@click.option("--trunc-cutoff", "truncation_cutoff", type=click.IntRange(min=0), default=None,
              help="Truncate only the first N of the num_ws latents.")
@click.option("--class", "class_idx", type=int, default=None, help="Class label (conditional networks).")
@click.option("--noise-mode", type=click.Choice(["const", "random", "none"]), default="const", show_default=True)
@click.option("--projected-w", "projected_w", type=click.Path(dir_okay=False), default=None,
              help="Generate from latents: npz with 'w' [N, num_ws, w_dim] (seeds are then ignored).")
@click.option("--w", "w_file", type=click.Path(dir_okay=False), default=None, help="Alias of --projected-w.")
@click.option("--outdir", type=click.Path(file_okay=False), required=True, help="Where to save the images.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Images per forward pass (default 8 on CPU, 4 on GPU, 1 with --fp16; results do not depend on it).")
@device_option
@click.option("--grid", is_flag=True, help="Also write grid.png with all images.")
@click.option("--shard", default=None, metavar="i/n", help="Process shard i of n (default: from SLURM array vars).")
@click.option("--fp16", is_flag=True, help="Run the network's fp16 layers in fp16 (as official default; GPU speed-up).")
@click.option("--skip-existing", is_flag=True, help="Do not regenerate images that already exist (resume).")
@click.option("--allow-download", is_flag=True, default=None, help="Allow downloading --network if not cached.")
@user_errors
def generate_cmd(network, seeds, truncation_psi, truncation_cutoff, class_idx, noise_mode, projected_w, w_file, outdir,
                 batch_size, device, grid, shard, fp16, skip_existing, allow_download):
    """Generate images using a pretrained network.

    \b
    Examples:
      generate.py --network ffhq.pkl --seeds 0-7,12 --trunc 0.7 --outdir out
      generate.py --network cifar10.pkl --class 3 --seeds 0-99 --batch-size 16 --grid --outdir out
      generate.py --network ffhq.pkl --projected-w out/projected_w.npz --outdir out
    """
    from ..errors import StyleforgeError
    from ..generate import generate_images

    if projected_w and w_file and projected_w != w_file:
        raise StyleforgeError("--projected-w and --w name different files; pass only one")
    res = generate_images(
        outdir=outdir, network=network, seeds=seeds, truncation_psi=truncation_psi,
        truncation_cutoff=truncation_cutoff, class_idx=class_idx, noise_mode=noise_mode,
        projected_w=projected_w or w_file, batch_size=batch_size, device=device, grid=grid,
        shard=parse_shard(shard), fp16=fp16, skip_existing=skip_existing, allow_download=allow_download,
        tune_allocator=True, callback=cli_callback(),
    )
    msg = f"wrote {len(res.files)} image(s) to {res.outdir}"
    if res.skipped:
        msg += f" ({len(res.skipped)} already there, skipped)"
    if res.grid:
        msg += f"; grid: {res.grid}"
    click.echo(msg)
