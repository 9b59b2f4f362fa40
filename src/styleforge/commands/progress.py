"""The command-line front end of :mod:`styleforge.utils.progress`: tqdm bars and one-line notes on stderr."""

from __future__ import annotations

import sys
from typing import Dict, Optional

import click

from ..utils.progress import Callback, Event
from .options import message_text

PREFIX = {"info": "note: ", "warning": "warning: ", "failed": "failed: "}


def note_line(e: Event, ctx: Optional[click.Context] = None) -> str:
    """A note as the CLIs print it: ``note: ...``, ``warning: ...`` or ``failed: ...`` on one line, settings named
    by the running command's flags."""
    return PREFIX.get(e.level, "") + message_text(e.message, ctx)


def cli_callback(enabled: bool = True) -> Callback:
    """A callback that shows each stage as a tqdm bar on stderr (``enabled=False``: no bars, notes only; a
    transient stage's bar is cleared when it ends; byte counts are scaled to kB, MB...) and each note as one
    line (:func:`note_line`). A note is written above the open bars."""
    from tqdm import tqdm

    bars: Dict[str, "tqdm"] = {}

    def callback(e: Event) -> None:
        if e.kind == "begin":
            bars[e.stage] = tqdm(total=e.total, unit=e.unit, unit_scale=e.unit == "B", desc=e.stage,
                                 leave=not e.transient, disable=not enabled, file=sys.stderr)
        elif e.kind == "advance" and e.stage in bars:
            bar = bars[e.stage]
            if e.info:
                bar.set_postfix(e.info, refresh=False)
            bar.update(e.n)
        elif e.kind == "end" and e.stage in bars:
            bars.pop(e.stage).close()
        elif e.kind == "note":
            text = note_line(e)
            if bars:
                tqdm.write(text, file=sys.stderr)  # above the open bars
            else:
                click.echo(text, err=True)

    return callback
