"""``clip-direction``: a latent direction from one prompt to another (for ``edit.py --direction``)."""

from __future__ import annotations

import click

from .clip_generate import check_prompt, clip_model_option, clip_weights_first, clip_weights_option
from .edit import check_out_file
from .options import IntListParam, command, device_option, user_errors


@command()
@click.option("--network", "network", metavar="PATH|NAME|URL",
              help="Network: official .pkl, styleforge .safetensors, known name (ffhq...) or URL. Default: bundled model.")
@click.option("--from", "from_prompt", required=True, metavar="PROMPT", help='Where the edit starts, e.g. "a face".')
@click.option("--to", "to_prompt", required=True, metavar="PROMPT", help='Where it goes, e.g. "a smiling face".')
@click.option("--out", "out", required=True, type=click.Path(), metavar="FILE.npz",
              help="Direction file to write (styleforge .npz; edit.py --direction FILE.npz).")
@click.option("--method", type=click.Choice(["gradient", "optimize"]), default="gradient", show_default=True,
              help="gradient: mean CLIP gradient over the samples; optimize: mean displacement of short edits.")
@click.option("--seeds", "seeds", type=IntListParam("seeds"), default="0-15", show_default=True,
              help="Sample latents: these seeds (with --trunc).")
@click.option("--trunc", "truncation_psi", type=float, default=0.7, show_default=True, help="Truncation psi (seeds).")
@click.option("--w", "w_files", type=click.Path(dir_okay=False), multiple=True, metavar="FILE.npz",
              help="Sample latents from files instead of seeds ('w' [N, num_ws, w_dim]); repeatable.")
@click.option("--steps", type=click.IntRange(min=1), default=50, show_default=True,
              help="Optimisation steps per sample (--method optimize).")
@click.option("--lambda", "l2_lambda", type=click.FloatRange(min=0), default=0.008, show_default=True,
              help="Weight of |w - w0|^2 (--method optimize).")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True, help="Samples per pass.")
@clip_model_option
@clip_weights_option
@device_option
@click.option("--allow-download", is_flag=True, default=None, help="Allow downloading --network / CLIP weights if not cached.")
@user_errors
def clip_direction_cmd(network, from_prompt, to_prompt, out, method, seeds, truncation_psi, w_files, steps, l2_lambda,
                       batch_size, clip_model, clip_weights, device, allow_download):
    """Find the direction in W+ that takes images from one prompt toward another, and save it for edit.py.

    \b
    Examples:
      clip_direction.py --network ffhq.pkl --from "a face" --to "a smiling face" --out smile_clip.npz
      edit.py --network ffhq.pkl --w carol/projected_w.npz --direction smile_clip.npz --outdir out/carol-smile
    """
    from ..directions import Direction, save_directions
    from .progress import cli_callback

    check_prompt(from_prompt, "from_prompt")
    check_prompt(to_prompt, "to_prompt")
    check_out_file(out)
    callback = cli_callback()
    clip_weights = clip_weights_first(clip_model, clip_weights, allow_download, callback)

    from ..textguide import TextGuideConfig, text_direction
    from ..textguide.run import load_direction_inputs

    G, net_path, clip, w = load_direction_inputs(network, clip_model, clip_weights, w_files, device, allow_download,
                                                 callback)
    d = text_direction(G, clip, from_prompt, to_prompt, method=method, seeds=None if w is not None else seeds, w=w,
                       truncation_psi=truncation_psi, batch_size=batch_size, steps=steps,
                       config=TextGuideConfig(l2_lambda=l2_lambda), callback=callback)
    path = save_directions(out, [Direction(d.vector, layers=None, name=d.name, origin="clip", scale=d.scale,
                                           meta=d.meta)], network=str(net_path), method=f"clip-{method}")
    gain = d.meta["similarity_gain_at_strength_1"]
    click.echo(f"wrote {path}: {d.name!r} ({method}, {d.meta['samples']} samples; at strength 1 the similarity to "
               f"the text direction changes by {gain['mean']:+.4f} on average, {gain['min']:+.4f} to {gain['max']:+.4f})")
