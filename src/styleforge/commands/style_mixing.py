"""``style_mixing``: the official style_mixing.py (flags, file names, grid), on any device."""

from __future__ import annotations

import click

from .edit import allow_download_option, load_generator_for, network_option
from .options import IntListParam, command, device_option, user_errors


@command()
@network_option
@click.option("--rows", "row_seeds", type=IntListParam("rows"), required=True, help="Row seeds, e.g. 85,100,75.")
@click.option("--cols", "col_seeds", type=IntListParam("cols"), required=True, help="Column seeds, e.g. 55,821,1789.")
@click.option("--styles", "styles", default="0-6", show_default=True, metavar="LIST",
              help="Latent layers taken from the column seed, e.g. 0-6.")
@click.option("--trunc", "truncation_psi", type=float, default=1.0, show_default=True, help="Truncation psi.")
@click.option("--noise-mode", type=click.Choice(["const", "random", "none"]), default="const", show_default=True)
@click.option("--class", "class_idx", type=int, default=None, help="Class label (conditional networks).")
@click.option("--outdir", type=click.Path(file_okay=False), required=True, help="Where to save the images.")
@device_option
@allow_download_option
@user_errors
def style_mixing_cmd(network, row_seeds, col_seeds, styles, truncation_psi, noise_mode, class_idx, outdir, device,
                     allow_download):
    """Style mixing: row seeds with the --styles layers of column seeds, as official style_mixing.py.

    \b
    Writes {row}-{col}.png for every pair, {seed}-{seed}.png for every seed and grid.png.
    Example:
      style_mixing.py --network ffhq.pkl --rows 85,100,75 --cols 55,821,1789 --styles 0-6 --outdir out
    """
    from ..directions.mixing import style_mix, write_style_mixing
    from ..utils.runtime import check_outdir
    from .progress import cli_callback

    check_outdir(outdir)
    G, _ = load_generator_for(network, device, allow_download)
    rows, cols = list(row_seeds), list(col_seeds)
    images = style_mix(G, rows, cols, styles, truncation_psi, noise_mode, class_idx, callback=cli_callback())
    res = write_style_mixing(images, rows, cols, outdir)
    click.echo(f"wrote {len(res.files)} images and {res.grid.name} to {res.outdir}")
