"""``dataset``: build a training dataset (official layout) from a folder or zip of images."""

from __future__ import annotations

import click

from .options import command, message_text, user_errors


@command()
@click.option("--source", required=True, type=click.Path(), metavar="PATH",
              help="Folder of images (searched recursively; class subfolders become labels) or a .zip.")
@click.option("--dest", required=True, type=click.Path(), metavar="PATH",
              help="Output: a .zip file (uncompressed) or a new/empty folder.")
@click.option("--resolution", type=click.IntRange(min=1), default=None, metavar="N",
              help="Output size NxN: a power of two from 4 to 8192 (training needs a power of two; the official "
                   "models go up to 1024). Default: keep the size.")
@click.option("--transform", type=click.Choice(["center-crop", "center-crop-wide"]), default=None,
              help="center-crop: largest centred square. center-crop-wide: full width on a black square canvas. "
                   "Needed for non-square images.")
@click.option("--grayscale/--rgb", "grayscale", default=None,
              help="Force 1-channel (L) or 3-channel (RGB) output. Default: grayscale only if every image is.")
@click.option("--max-images", type=click.IntRange(min=1), default=None, metavar="N",
              help="Use at most N images (the first in sorted order).")
@click.option("--resize-filter", type=click.Choice(["box", "lanczos"]), default="lanczos", show_default=True)
@user_errors
def dataset_tool_cmd(source, dest, resolution, transform, grayscale, max_images, resize_filter):
    """Convert a folder or zip of images into a StyleGAN2-ADA training dataset.

    \b
    Examples:
      dataset_tool.py --source photos/ --dest photos256.zip --resolution 256 --transform center-crop
      dataset_tool.py --source afhq/train --dest afhq.zip        (cat/ dog/ wild/ subfolders -> labels 0, 1, 2)
      dataset_tool.py --source faces.zip --dest faces_gray/ --grayscale --max-images 1000

    The output is written under a temporary name and renamed when complete: a failure, SIGTERM or Ctrl-C
    removes it (exit codes 1, 143, 130).
    """
    from ..train.dataset_tool import convert_dataset
    from ..utils.fileio import cleanup_on_signals
    from .progress import cli_callback

    with cleanup_on_signals(f"nothing was written to {dest}"):
        res = convert_dataset(source, dest, resolution=resolution, transform=transform, grayscale=grayscale,
                              max_images=max_images, resize_filter=resize_filter, callback=cli_callback())
    if res.class_names:
        names = ", ".join(res.class_names[:5]) + (", ..." if len(res.class_names) > 5 else "")
        labels = f"{res.label_dim} classes from folders ({names})"
    elif res.label_source == "dataset.json":
        labels = f"labels from dataset.json (dim {res.label_dim})"
    else:
        labels = "no labels"
    kind = "grayscale" if res.num_channels == 1 else "RGB"
    click.echo(f"wrote {res.num_images} image(s), {res.resolution}x{res.resolution} {kind}, {labels}, to {res.dest}")
    if res.skipped:
        click.echo(f"warning: {res.skipped_message()}", err=True)
    for w in res.warnings:
        click.echo(f"warning: {message_text(w)}", err=True)
    unused = res.num_found - res.num_images - res.num_skipped
    counts = f"found {res.num_found} image file(s): {res.num_images} written, {res.num_skipped} skipped"
    if unused > 0:
        counts += f", {unused} not used (--max-images)"
    click.echo(counts)
