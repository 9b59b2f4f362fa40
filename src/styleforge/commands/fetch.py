"""``fetch``: fill the cache on a machine with internet (networks, vgg16, inception, clip, landmarks, URLs)."""

from __future__ import annotations

import click

from .options import command, user_errors
from .progress import cli_callback


@command()
@click.argument("names", nargs=-1, metavar="NAME|URL...")
@click.option("--list", "list_names", is_flag=True, help="List the names fetch knows and exit.")
@user_errors
def fetch_cmd(names, list_names):
    """Download known files into the styleforge cache ($STYLEFORGE_CACHE, default ~/.cache/styleforge), for compute
    nodes without internet. Names: a published network (ffhq, ...), networks (all of them), vgg16, inception, clip,
    landmarks (face-alignment's weights, into $TORCH_HOME/hub/checkpoints), or a URL.

    \b
    Examples:
      styleforge fetch ffhq vgg16 inception
      styleforge fetch networks landmarks
    """
    from ..hpc.fetch import fetch, fetchable
    from ..utils.cache import cache_dir

    if list_names:
        for name, what in fetchable().items():
            click.echo(f"{name:12s} {what}")
        return
    done = fetch(names, callback=cli_callback())
    for f in done:
        click.echo(f"{f.name}: {'downloaded to' if f.downloaded else 'already there,'} {f.path}")
    click.echo(f"cache: {cache_dir()}")
