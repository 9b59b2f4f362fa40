"""What every command-line tool shares: one-line errors and warnings, click types and options.

Each CLI is a :func:`command` (a click command whose usage errors print one line) wrapped by
:func:`user_errors`, so a :class:`~styleforge.errors.StyleforgeError`, a bad flag value or a warning prints one
line (``error: ...`` / ``warning: ...``) without a traceback or usage text. Library errors name the setting
they are about (``param``, the library's argument name); :func:`user_errors` puts the matching flag in front
(``error: --class: class 12 is out of range ...``). Only this package imports click.
"""

from __future__ import annotations

import functools
import sys
import warnings
from typing import Callable, Optional

import click

from ..errors import StyleforgeError
from ..utils.runtime import SeedList, parse_int_list


def _out_of_memory(e: BaseException) -> bool:
    """torch's out-of-memory errors (CUDA, MPS, the CPU allocator) and Python's MemoryError."""
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
        return True
    msg = str(e)
    return isinstance(e, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """warnings.showwarning for the CLIs: ``warning: <message>`` on one line, without the source location,
    naming the setting by its flag when the warning is about one (a StyleforgeWarning)."""
    click.echo("warning: " + message_text(message), err=True)


def flag_for(param: Optional[str], ctx: Optional[click.Context] = None) -> Optional[str]:
    """The command-line flag of the current command whose value goes to the library argument ``param``
    (``class_idx`` -> ``--class``); None when the command has no such option."""
    ctx = ctx or click.get_current_context(silent=True)
    if not param or ctx is None:
        return None
    for p in ctx.command.params:
        if p.name == param and isinstance(p, click.Option):
            return max(p.opts, key=len)
        if p.name == param and isinstance(p, click.Argument):
            return p.human_readable_name
    return None


def flags_for(message, ctx: Optional[click.Context] = None) -> dict:
    """param -> flag for every setting a StyleforgeError/StyleforgeWarning names that this command has."""
    flags = {p: flag_for(p, ctx) for p in getattr(message, "labels", {})}
    return {p: f for p, f in flags.items() if f}


def message_text(message, ctx: Optional[click.Context] = None) -> str:
    """A StyleforgeError, StyleforgeWarning or plain message as one line, naming settings by this command's
    flags."""
    text = message.render(flags_for(message, ctx)) if hasattr(message, "render") else str(message)
    return " ".join(line.strip() for line in text.splitlines() if line.strip())  # inner spacing kept (log columns)


def error_line(e: StyleforgeError, ctx: Optional[click.Context] = None) -> str:
    """``error: <message>`` on one line, naming settings by this command's flags."""
    return "error: " + message_text(e, ctx)


def user_errors(fn: Callable) -> Callable:
    """Turn StyleforgeError into ``error: <message>`` (naming flags, see :func:`error_line`) on stderr and exit code 1 (130 on Ctrl-C); running
    out of memory likewise, with the usual remedy. Warnings raised meanwhile print as ``warning: <message>``."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with warnings.catch_warnings():  # restores the previous showwarning afterwards
                warnings.showwarning = _show_warning
                return fn(*args, **kwargs)
        except StyleforgeError as e:
            click.echo(error_line(e), err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except (MemoryError, RuntimeError) as e:  # torch.OutOfMemoryError is a RuntimeError
            if not _out_of_memory(e):
                raise
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            click.echo(f"error: out of memory ({first}); use a smaller batch (--batch-size, --batch) or a device "
                       "with more memory", err=True)
            sys.exit(1)

    return wrapper


class OneLineUsageError(click.UsageError):
    """A click usage error (bad or missing flag value) shown as ``error: <message>``, without the usage text."""

    def show(self, file=None) -> None:
        click.echo("error: " + " ".join(self.format_message().split()), file=file, err=file is None)


class Command(click.Command):
    """click.Command whose usage errors (``--seeds a``, ``--outdir`` naming a file, ``--num-steps 0``, a
    missing required flag, ...) print one line and exit 2; ``--help`` still shows the usage."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except OneLineUsageError:
            raise
        except click.UsageError as e:
            raise OneLineUsageError(e.format_message(), e.ctx) from None


def command(**kwargs) -> Callable:
    """``click.command`` for styleforge tools: :class:`Command` (one-line usage errors) and ``-h``/``--help``."""
    kwargs.setdefault("cls", Command)
    kwargs.setdefault("context_settings", {"help_option_names": ["-h", "--help"]})
    return click.command(**kwargs)


class IntListParam(click.ParamType):
    """click type for ``0-7,12`` style lists (a :class:`SeedList`: ranges stay ranges)."""

    name = "LIST"

    def __init__(self, what: str = "seeds", min_value: Optional[int] = 0, max_value: Optional[int] = 2**32 - 1):
        self.what = what
        self.min_value = min_value
        self.max_value = max_value

    def convert(self, value, param, ctx):
        if isinstance(value, (SeedList, list)):
            return value
        try:
            vals = parse_int_list(value, self.what)
        except StyleforgeError as e:
            self.fail(e.detail, param, ctx)
        for r in vals.ranges:
            for v in (r.start, r.stop - 1):
                if (self.min_value is not None and v < self.min_value) or (self.max_value is not None and v > self.max_value):
                    self.fail(f"value {v} is outside [{self.min_value}, {self.max_value}]", param, ctx)
        return vals


device_option = click.option(
    "--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N | mps"
)
