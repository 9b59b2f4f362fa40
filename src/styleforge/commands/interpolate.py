"""``interpolate``: frames between two latents (projected_w.npz files) or two seeds, as a strip PNG, an mp4
or GIF, and an npz of the frames' latents."""

from __future__ import annotations

import click

from .options import command, device_option, user_errors
from .progress import cli_callback


@command()
@click.option("--network", "network", metavar="PATH|NAME|URL",
              help="Network: official .pkl, styleforge .safetensors, known name (ffhq...) or URL. Default: bundled model.")
@click.option("--from", "from_w", type=click.Path(dir_okay=False), metavar="FILE.npz[:K]",
              help="Start latent: npz with 'w' [N, num_ws, w_dim] (row K, default 0), e.g. projected_w.npz.")
@click.option("--to", "to_w", type=click.Path(dir_okay=False), metavar="FILE.npz[:K]", help="End latent (as --from).")
@click.option("--from-seed", type=click.IntRange(0, 2**32 - 1), default=None, help="Start at this seed's latent.")
@click.option("--to-seed", type=click.IntRange(0, 2**32 - 1), default=None, help="End at this seed's latent.")
@click.option("--space", type=click.Choice(["z", "w", "w+"]), default=None,
              help="z: slerp in Z (seeds only; default for seeds); w / w+: lerp (default for files: w, or w+ "
                   "when the layers differ).")
@click.option("--steps", type=click.IntRange(min=2), default=8, show_default=True, help="Frames, endpoints included.")
@click.option("--trunc", "truncation_psi", type=float, default=1.0, show_default=True, help="Truncation psi (seeds).")
@click.option("--outdir", type=click.Path(file_okay=False), required=True, help="Where to save the outputs.")
@click.option("--mp4", "video", flag_value="mp4", default=True, help="Write interp.mp4 (default).")
@click.option("--gif", "video", flag_value="gif", help="Write interp.gif instead of an mp4.")
@click.option("--no-video", "video", flag_value="none", help="Only the strip PNG and the npz.")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=10, show_default=True)
@device_option
@click.option("--allow-download", is_flag=True, default=None, help="Allow downloading --network if not cached.")
@user_errors
def interpolate_cmd(network, from_w, to_w, from_seed, to_seed, space, steps, truncation_psi, outdir, video, fps, device,
                    allow_download):
    """Interpolate between two projected latents or two seeds.

    \b
    Examples:
      interpolate.py --network ffhq.pkl --from a/projected_w.npz --to b/projected_w.npz --steps 30 --outdir out
      interpolate.py --network ffhq.pkl --from-seed 1 --to-seed 2 --space z --trunc 0.7 --gif --outdir out
    """
    from ..project.interpolate import run_interpolation

    res = run_interpolation(
        outdir=outdir, network=network, from_w=from_w, to_w=to_w, from_seed=from_seed, to_seed=to_seed, space=space,
        steps=steps, truncation_psi=truncation_psi, video=video, fps=fps, device=device, allow_download=allow_download,
        callback=cli_callback(),
    )
    msg = f"wrote {steps} frames ({res.space} space) to {res.outdir}: {res.strip.name}, {res.latents.name}"
    if res.video:
        msg += f", {res.video.name}"
    click.echo(msg)
