"""``sefa``: closed-form factors of a network's style affines (SeFa), as grids, an index.html and Directions."""

from __future__ import annotations

from pathlib import Path

import click

from .edit import allow_download_option, check_out_file, load_generator_for, network_option, strengths_option
from .options import IntListParam, command, device_option, user_errors


def grid_options(fn):
    """The flags of the per-direction grids (shared with ``ganspace``)."""
    for opt in reversed([
        click.option("--seeds", type=IntListParam("seeds"), default="0-3", show_default=True,
                     help="Seeds of the grids' rows."),
        strengths_option,
        click.option("--trunc", "truncation_psi", type=float, default=0.7, show_default=True,
                     help="Truncation psi of the grids' seeds."),
        click.option("--class", "class_idx", type=int, default=None, help="Class label (conditional networks)."),
        click.option("--noise-mode", type=click.Choice(["const", "random", "none"]), default="const",
                     show_default=True),
        click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
                     help="Images per forward pass."),
    ]):
        fn = opt(fn)
    return fn


@command()
@network_option
@click.option("--layers", default="all", show_default=True, metavar="all|0-1|2-5|6-13|a-b",
              help="Latent layers whose style affines are factorised (and which the factors edit).")
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True, help="Factors to keep and show.")
@grid_options
@click.option("--outdir", type=click.Path(file_okay=False), default=None,
              help="Write factorNN.png grids, overview.png, index.html and sefa.npz here.")
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="Write the factors (Directions) here (default: OUTDIR/sefa.npz).")
@device_option
@allow_download_option
@user_errors
def sefa_cmd(network, layers, top, seeds, strengths, truncation_psi, class_idx, noise_mode, batch_size, outdir, out,
             device, allow_download):
    """SeFa: the directions a network's style layers stretch most, without labels.

    \b
    Examples:
      sefa.py --network ffhq.pkl --layers 2-5 --top 5 --seeds 0-3 --outdir out/sefa
      sefa.py --network ffhq.pkl --layers 0-1 --top 10 --out coarse.npz      # factors only
      edit.py --network ffhq.pkl --w carol.npz --direction out/sefa/sefa.npz:0 --outdir out/carol-f0
    """
    from ..directions import save_directions
    from ..directions.edit import check_strengths
    from ..directions.grids import factor_grids
    from ..directions.sefa import sefa
    from ..errors import StyleforgeError
    from ..utils.fileio import ensure_outdir
    from ..utils.runtime import check_outdir
    from .progress import cli_callback

    if outdir is None and out is None:
        raise StyleforgeError("give --outdir (grids, index.html and the factors) or --out (the factors only)")
    check_strengths(strengths)
    if outdir is not None:
        check_outdir(outdir)
    out = Path(out) if out is not None else Path(outdir) / "sefa.npz"
    check_out_file(out)
    G, net_path = load_generator_for(network, device, allow_download)
    res = sefa(G, layers, top)
    if outdir is not None:
        factor_grids(G, res.directions, seeds, strengths, outdir, truncation_psi, class_idx, noise_mode, batch_size,
                     title=f"SeFa factors of {net_path.name}, layers {layers}", callback=cli_callback())
    ensure_outdir(out.parent)
    save_directions(out, res.directions, network=str(net_path), method="sefa", layers=layers,
                    eigenvalues=[float(v) for v in res.eigenvalues], affines=res.affines)
    vals = ", ".join(f"{v:.3g}" for v in res.eigenvalues[:top])
    click.echo(f"SeFa, layers {layers} ({len(res.affines)} style affines): top {top} eigenvalues {vals}; factors in "
               f"{out}" + (f" (use {out}:K); grids and index.html in {outdir}" if outdir else " (use FILE:K)"))
