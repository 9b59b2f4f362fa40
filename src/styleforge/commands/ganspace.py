"""``ganspace``: principal components of W (GANSpace), saved as Directions, with optional grids."""

from __future__ import annotations

from pathlib import Path

import click

from .edit import allow_download_option, check_out_file, load_generator_for, network_option
from .options import command, device_option, user_errors
from .sefa import grid_options


@command()
@network_option
@click.option("--samples", type=click.IntRange(min=2), default=100_000, show_default=True,
              help="W samples for the PCA (memory does not grow with it).")
@click.option("--components", type=click.IntRange(min=1), default=80, show_default=True,
              help="Principal components to keep.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the samples.")
@click.option("--layers", default=None, metavar="all|a-b",
              help="Latent layers the components edit, E(v_i, a-b) (default: all).")
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="Write the components (Directions, strength unit = their std) here (default: OUTDIR/ganspace.npz).")
@click.option("--outdir", type=click.Path(file_okay=False), default=None,
              help="Also write grids of the --top components, overview.png and index.html here.")
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True, help="Components shown in the grids.")
@grid_options
@device_option
@allow_download_option
@user_errors
def ganspace_cmd(network, samples, components, seed, layers, out, outdir, top, seeds, strengths, truncation_psi,
                 class_idx, noise_mode, batch_size, device, allow_download):
    """GANSpace: PCA of W over many samples; components with their standard deviations as Directions.

    \b
    Strengths of GANSpace directions count standard deviations of W along the component.
    Examples:
      ganspace.py --network ffhq.pkl --samples 100000 --components 80 --out ffhq_pca.npz
      ganspace.py --network ffhq.pkl --layers 0-3 --outdir out/ganspace          # grids + index.html
      edit.py --network ffhq.pkl --w carol.npz --direction ffhq_pca.npz:0 --layers 0-3 --outdir out/pc0
    """
    from ..directions import layers_text, parse_layers, save_directions
    from ..directions.edit import check_strengths
    from ..directions.ganspace import ganspace_directions, pca_w
    from ..directions.grids import factor_grids
    from ..errors import StyleforgeError
    from ..utils.fileio import ensure_outdir
    from ..utils.runtime import check_outdir
    from .progress import cli_callback

    if outdir is None and out is None:
        raise StyleforgeError("give --out (the components) and/or --outdir (grids and index.html)")
    check_strengths(strengths)
    if outdir is not None:
        check_outdir(outdir)
    out = Path(out) if out is not None else Path(outdir) / "ganspace.npz"
    check_out_file(out)
    G, net_path = load_generator_for(network, device, allow_download)
    chosen = parse_layers(layers, G.num_ws) if layers is not None else None
    if top > components:
        raise StyleforgeError(f"more than --components {components}", param="top", value=top)
    res = pca_w(G, samples, components, seed, class_idx=class_idx, callback=cli_callback())
    dirs = ganspace_directions(res, chosen, G.num_ws)
    if outdir is not None:
        factor_grids(G, dirs[:top], seeds, strengths, outdir, truncation_psi, class_idx, noise_mode, batch_size,
                     title=f"GANSpace components of {net_path.name}, layers {layers_text(chosen, G.num_ws)}",
                     callback=cli_callback())
    ensure_outdir(out.parent)
    save_directions(out, dirs, network=str(net_path), method="ganspace", samples=samples, seed=seed,
                    mean=[float(v) for v in res.mean], layers=layers_text(chosen, G.num_ws))
    top_var = ", ".join(f"{e:.3f}" for e in res.explained[:5])
    click.echo(f"GANSpace over {samples} samples: {components} components (variance explained by the first: "
               f"{top_var}); wrote {out}" + (f"; grids and index.html in {outdir}" if outdir else ""))
