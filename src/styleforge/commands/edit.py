"""``edit``: move latents (projected_w.npz files or seeds) along a direction at several strengths."""

from __future__ import annotations

import click

from .options import IntListParam, command, device_option, user_errors

DEFAULT_STRENGTHS = "-3,-2,-1,0,1,2,3"


class FloatListParam(click.ParamType):
    """click type for ``-3,-1.5,0,1.5,3``: a list of finite numbers."""

    name = "LIST"

    def convert(self, value, param, ctx):
        if isinstance(value, (list, tuple)):
            return [float(v) for v in value]
        try:
            vals = [float(v) for v in str(value).split(",")]
        except ValueError:
            self.fail(f"{value!r}: use numbers separated by commas, e.g. -3,-1.5,0,1.5,3", param, ctx)
        if not vals or any(v != v or v in (float("inf"), float("-inf")) for v in vals):
            self.fail(f"{value!r}: use finite numbers separated by commas, e.g. -3,-1.5,0,1.5,3", param, ctx)
        return vals


def check_out_file(path, param: str = "out") -> None:
    """Before any work: ``path`` is not a folder, and its folder exists or can be created."""
    from pathlib import Path

    from ..errors import StyleforgeError
    from ..utils.runtime import check_outdir

    path = Path(path)
    if path.is_dir():
        raise StyleforgeError(f"{path} is a folder; name a file, e.g. {path / 'directions.npz'}", param=param)
    try:
        check_outdir(path.parent)
    except StyleforgeError as e:
        raise StyleforgeError(e.detail, param=param) from None


def load_generator_for(network, device, allow_download):
    """The editing commands' generator: ``--device`` resolved (glibc told to keep freed memory on CPU, as generate.py
    does), loaded through the zoo, checked to have a W space; and its file."""
    from ..directions.render import check_w_space
    from ..utils.perf import tune_cpu_allocator
    from ..utils.runtime import resolve_device
    from ..zoo import load_generator

    dev = resolve_device(device)
    if dev.type == "cpu":
        tune_cpu_allocator()
    G, path = load_generator(network, dev, allow_download)
    check_w_space(G)
    return G, path


network_option = click.option(
    "--network", "network", metavar="PATH|NAME|URL",
    help="Network: official .pkl, styleforge .safetensors, known name (ffhq...) or URL. Default: bundled model.")
allow_download_option = click.option("--allow-download", is_flag=True, default=None,
                                     help="Allow downloading --network if not cached.")
strengths_option = click.option("--strengths", type=FloatListParam(), default=DEFAULT_STRENGTHS, show_default=True,
                                help="Strengths (offsets along the direction; 0 = the input).")


@command()
@network_option
@click.option("--w", "w_files", type=click.Path(dir_okay=False), multiple=True, metavar="FILE.npz",
              help="Latents to edit: npz with 'w' [N, num_ws, w_dim] (projected_w.npz, ws.npz); repeatable.")
@click.option("--seeds", type=IntListParam("seeds"), default=None, help="Or/and edit these seeds' latents.")
@click.option("--trunc", "truncation_psi", type=float, default=1.0, show_default=True, help="Truncation psi (seeds).")
@click.option("--class", "class_idx", type=int, default=None, help="Class label (seeds of conditional networks).")
@click.option("--direction", "direction", required=True, metavar="FILE[:K]",
              help="Direction: .npy ([w_dim] or [num_ws, w_dim]) or styleforge .npz (FILE.npz:K picks one).")
@click.option("--condition", "conditions", multiple=True, metavar="FILE[:K]",
              help="Keep this direction's attribute fixed (InterFaceGAN conditional editing); repeatable.")
@strengths_option
@click.option("--layers", default=None, metavar="all|a-b",
              help="Latent layers to edit, e.g. 0-7 (default: the direction's own layers, else all).")
@click.option("--outdir", type=click.Path(file_okay=False), required=True, help="Where to save the outputs.")
@click.option("--gif", "video", flag_value="gif", default=True, help="Write edit{k}.gif sweeps (default).")
@click.option("--mp4", "video", flag_value="mp4", help="Write edit{k}.mp4 sweeps instead (needs imageio-ffmpeg).")
@click.option("--no-video", "video", flag_value="none", help="Only strips and latents.")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=5, show_default=True)
@click.option("--noise-mode", type=click.Choice(["const", "random", "none"]), default="const", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Images per forward pass.")
@device_option
@allow_download_option
@click.option("--shard", default=None, metavar="i/n", help="Edit shard i of n of the inputs (default: from SLURM "
                                                             "array vars).")
@click.option("--skip-existing", is_flag=True, help="Do not redo inputs whose files exist (resume).")
@user_errors
def edit_cmd(network, w_files, seeds, truncation_psi, class_idx, direction, conditions, strengths, layers, outdir,
             video, fps, noise_mode, batch_size, device, allow_download, shard, skip_existing):
    """Edit latents along a direction: a strip PNG, a GIF/MP4 sweep and the edited latents per input.

    \b
    Examples:
      edit.py --network ffhq.pkl --w carol/projected_w.npz --direction age.npy --layers 0-7 --outdir age
      edit.py --network ffhq.pkl --seeds 0-3 --trunc 0.7 --direction sefa.npz:0 --outdir out/sefa0
      edit.py --w carol.npz --direction age.npz --condition gender.npz --outdir out/age-not-gender
    """
    import numpy as np

    from ..directions import condition, load_direction
    from ..directions.edit import check_strengths, edit_latents
    from ..directions.render import seeds_to_ws
    from ..errors import StyleforgeError
    from ..latents import load_ws
    from ..utils.runtime import check_outdir, parse_shard
    from .progress import cli_callback

    if not w_files and seeds is None:
        raise StyleforgeError("nothing to edit: give --w FILE.npz (e.g. projected_w.npz) or --seeds")
    check_strengths(strengths)
    shard = parse_shard(shard)
    check_outdir(outdir)
    d = load_direction(direction)
    conds = [load_direction(c) for c in conditions]
    G, net_path = load_generator_for(network, device, allow_download)
    for c, spec in zip([d] + conds, [direction] + list(conditions)):
        c.for_network(G.num_ws, G.w_dim, source=spec)
    if conds:
        d = condition(d, conds)
    parts, labels = [], []
    for f in w_files:
        w = load_ws(f, G.num_ws, G.w_dim)
        parts.append(w)
        labels += [f"{f}:{i}" if len(w) > 1 else str(f) for i in range(len(w))]
    if seeds is not None:
        parts.append(seeds_to_ws(G, seeds, truncation_psi, class_idx).cpu().numpy())
        labels += [f"seed {s}" for s in seeds]
    res = edit_latents(G, np.concatenate(parts), d, strengths, outdir, layers=layers, labels=labels, video=video,
                       fps=fps, noise_mode=noise_mode, batch_size=batch_size, callback=cli_callback(),
                       info={"network": str(net_path), "truncation_psi": truncation_psi if seeds is not None else None},
                       shard=shard, skip_existing=skip_existing)
    if not res.strips:
        what = f"all {len(res.skipped)} input(s) of this shard were done already" if res.skipped else \
            "this shard has no inputs"
        click.echo(f"nothing to write: {what}")
        return
    first = res.strips[0].stem
    click.echo(f"wrote {len(res.strips)} edit(s) x {len(strengths)} strengths to {res.outdir}: {first}.png"
               + (f", {first}.{res.video_format}" if res.videos else "") + f", {first}_s*.npz, {res.manifest.name}"
               + (f" ({len(res.skipped)} already there, skipped)" if res.skipped else ""))
