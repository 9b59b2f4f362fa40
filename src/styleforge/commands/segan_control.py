"""``segan-control``: a SEGAN network's subspace coordinates as grids of layer x coordinate x value, and as
Directions for ``edit.py``."""

from __future__ import annotations

import click

from .edit import allow_download_option, load_generator_for, network_option
from .options import IntListParam, command, device_option, user_errors


def _value_range(ctx, param, value):
    try:
        lo, hi = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: give two numbers LO,HI (e.g. -3,3)") from None
    if not (lo < hi) or max(abs(lo), abs(hi)) == float("inf"):
        raise click.BadParameter(f"{value!r}: LO must be below HI, both finite")
    return lo, hi


@command()
@network_option
@click.option("--layers", default="all", show_default=True, metavar="all|a-b|a,b",
              help="W+ slots (layers) whose subspace coordinates are shown.")
@click.option("--dims", type=IntListParam("dims", max_value=65535), default="0-5", show_default=True,
              help="Subspace coordinates (dimensions) per layer.")
@click.option("--range", "value_range", default="-3,3", show_default=True, callback=_value_range, metavar="LO,HI",
              help="Values of each coordinate, in standard deviations of that w entry.")
@click.option("--steps", type=click.IntRange(min=2, max=64), default=7, show_default=True,
              help="Values from LO to HI (columns).")
@click.option("--seeds", type=IntListParam("seeds"), default="0", show_default=True,
              help="Seeds (the figure uses the first; per-coordinate grids show all).")
@click.option("--trunc", "truncation_psi", type=float, default=1.0, show_default=True, help="Truncation psi.")
@click.option("--class", "class_idx", type=int, default=None, help="Class label (conditional networks).")
@click.option("--noise-mode", type=click.Choice(["const", "random", "none"]), default="const", show_default=True)
@click.option("--num-samples", type=click.IntRange(min=100), default=10000, show_default=True,
              help="z samples for each w entry's standard deviation (one unit of value).")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Images per forward pass.")
@click.option("--outdir", type=click.Path(file_okay=False), required=True,
              help="Where to write control.png, layerNN.png, factorNN.png, index.html, coordinates.npz, control.json.")
@device_option
@allow_download_option
@user_errors
def segan_control_cmd(network, layers, dims, value_range, steps, seeds, truncation_psi, class_idx, noise_mode,
                      num_samples, batch_size, outdir, device, allow_download):
    """SEGAN semantic control: vary one subspace coordinate of one layer at a time.

    \b
    Examples:
      segan_control.py --network runs/00000-anime-segan-mode2/network-snapshot-000200.safetensors \\
          --layers all --dims 0-5 --range -3,3 --outdir out/control
      edit.py --network NET --seeds 0-3 --direction out/control/coordinates.npz:4 --outdir out/edit
    """
    import numpy as np

    from ..latents import check_truncation
    from ..segan.control import control_grids, coordinate_directions
    from ..utils.runtime import check_outdir
    from .progress import cli_callback

    check_outdir(outdir)
    check_truncation(truncation_psi)
    G, path = load_generator_for(network, device, allow_download)
    dirs = coordinate_directions(G, layers, list(dims), num_samples=num_samples, name=str(path))
    values = [float(v) for v in np.linspace(value_range[0], value_range[1], steps)]
    res = control_grids(G, dirs, list(seeds), values, outdir, truncation_psi, class_idx, noise_mode, batch_size,
                        network=str(path), callback=cli_callback())
    click.echo(f"SEGAN mode {G.mode}: {len(dirs)} coordinates ({len(res.layer_figures)} layers x {len(list(dims))} "
               f"dims) x {steps} values; figure {res.figure}, index {res.index}, directions {res.directions_file} "
               "(use FILE:K with edit.py)")
