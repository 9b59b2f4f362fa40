"""``align``: FFHQ-style face alignment of photos (folders or files) into ``<name>.png`` + ``<name>.json``."""

from __future__ import annotations

import click

from ..errors import StyleforgeError
from ..utils.runtime import parse_shard
from .options import command, user_errors
from .progress import cli_callback


@command()
@click.option("-s", "--source", "sources", multiple=True, required=True, type=click.Path(), metavar="PATH",
              help="Photo or folder of photos (searched recursively). Repeat for several.")
@click.option("-d", "--dest", "outdir", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Output folder (sub-folders of a source folder are kept).")
@click.option("--size", type=int, default=1024, show_default=True,
              help="Output side length, 8 to 4096 (FFHQ: 1024; StyleGAN training needs a power of two).")
@click.option("--all-faces", is_flag=True,
              help="Align every face (<name>_01.png, _02.png, ... most prominent first), not only the main one.")
@click.option("--min-score", type=float, default=None, metavar="FLOAT",
              help="With --all-faces: drop detections scoring below this (each with a warning) [default: 0.3; "
                   "real faces score ~1, dlib's false positives ~0.1]. If none scores enough, the most prominent "
                   "face is kept.")
@click.option("--no-padding", "padding", is_flag=True, flag_value=False, default=True,
              help="Do not reflect-pad and blur where the crop leaves the photo (those areas stay black).")
@click.option("--detector", type=click.Choice(["dlib", "face-alignment"]), default="dlib", show_default=True,
              help="Landmark detector. dlib ships its model (pip install 'styleforge[align]'); face-alignment "
                   "needs its weights in $TORCH_HOME/hub/checkpoints.")
@click.option("--shard", default=None, metavar="i/n", help="Process shard i of n (default: from SLURM array vars).")
@click.option("--overwrite", "skip_existing", is_flag=True, flag_value=False, default=True,
              help="Redo photos that already have outputs (default: skip them, i.e. resume).")
@user_errors
def align_cmd(sources, outdir, size, all_faces, min_score, padding, detector, shard, skip_existing):
    """Crop and align faces the way FFHQ was made (eyes and mouth at fixed places, rotation levelled).

    Photos without a face and unreadable files are reported and skipped. Each aligned face gets a JSON
    with the source, detector box and score, the 68 landmarks and the crop quad.

    \b
    Examples:
      align.py -s photos/ -d aligned/                      (1024x1024, main face of each photo)
      align.py -s group.jpg -d aligned/ --all-faces --size 256   (faces scoring >= --min-score)
      align.py -s photos/ -d aligned/ --shard 3/10         (one job of an array; rerun to resume)
    """
    from ..align.batch import align_images

    if min_score is not None and not all_faces:
        raise StyleforgeError(f"--min-score {min_score:g} applies only with --all-faces (the default mode writes the "
                              "most prominent face); add --all-faces or drop --min-score")
    given = {} if min_score is None else {"min_score": min_score}  # else the library's DEFAULT_MIN_SCORE
    res = align_images(list(sources), outdir, size=size, all_faces=all_faces, padding=padding, detector=detector,
                       shard=parse_shard(shard), skip_existing=skip_existing, callback=cli_callback(), **given)
    click.echo(res.summary(), err=True)
