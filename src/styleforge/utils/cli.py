"""Helpers shared by every command-line tool: error handling, seed/shard parsing, device choice.

Each CLI is a click command wrapped by :func:`user_errors`, so a :class:`StyleforgeError` (or a click
usage error) prints one line and exits non-zero, without a traceback.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from typing import Callable, List, Optional, Tuple

import click

from ..errors import StyleforgeError


def _out_of_memory(e: BaseException) -> bool:
    """torch's out-of-memory errors (CUDA, MPS, the CPU allocator) and Python's MemoryError."""
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
        return True
    msg = str(e)
    return isinstance(e, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


def user_errors(fn: Callable) -> Callable:
    """Turn StyleforgeError into ``error: <message>`` on stderr and exit code 1 (130 on Ctrl-C); running out
    of memory likewise, with the usual remedy."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except StyleforgeError as e:
            click.echo("error: " + " ".join(str(e).splitlines()), err=True)
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


_RANGE = re.compile(r"^\s*(-?\d+)\s*(?:-\s*(-?\d+)\s*)?$")


def parse_int_list(spec: str, what: str = "seeds") -> List[int]:
    """Parse ``'0-7,12'`` into ``[0, 1, ..., 7, 12]`` (ranges inclusive, order kept)."""
    out: List[int] = []
    if spec is None or not str(spec).strip():
        raise StyleforgeError(f"--{what}: empty list; use e.g. '0-7,12'")
    for part in str(spec).split(","):
        m = _RANGE.match(part)
        if not m:
            raise StyleforgeError(f"--{what}: cannot parse {part.strip()!r}; use numbers and ranges like '0-7,12'")
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) is not None else a
        if b < a:
            raise StyleforgeError(f"--{what}: range {part.strip()!r} runs backwards; write it as '{b}-{a}'")
        out.extend(range(a, b + 1))
    return out


class IntListParam(click.ParamType):
    """click type for ``0-7,12`` style lists."""

    name = "LIST"

    def __init__(self, what: str = "seeds", min_value: Optional[int] = 0, max_value: Optional[int] = 2**32 - 1):
        self.what = what
        self.min_value = min_value
        self.max_value = max_value

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        try:
            vals = parse_int_list(value, self.what)
        except StyleforgeError as e:
            self.fail(str(e).split(": ", 1)[1], param, ctx)
        for v in vals:
            if (self.min_value is not None and v < self.min_value) or (self.max_value is not None and v > self.max_value):
                self.fail(f"value {v} is outside [{self.min_value}, {self.max_value}]", param, ctx)
        return vals


def parse_shard(spec: Optional[str]) -> Tuple[int, int]:
    """``'3/10'`` -> (3, 10), 0-based index. Defaults from SLURM array variables, else (0, 1)."""
    if spec is None or spec == "":
        tid = os.environ.get("SLURM_ARRAY_TASK_ID")
        cnt = os.environ.get("SLURM_ARRAY_TASK_COUNT")
        if tid is not None and cnt is not None:
            try:
                first = int(os.environ.get("SLURM_ARRAY_TASK_MIN", "0"))
                return int(tid) - first, int(cnt)
            except ValueError:
                pass
        return 0, 1
    m = re.match(r"^\s*(\d+)\s*/\s*(\d+)\s*$", str(spec))
    if not m:
        raise StyleforgeError(f"--shard: cannot parse {spec!r}; use i/n with 0 <= i < n, e.g. 3/10")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 0 <= i < n:
        raise StyleforgeError(f"--shard: {spec!r} is out of range; use i/n with 0 <= i < n")
    return i, n


def shard_items(items: list, shard: Tuple[int, int]) -> list:
    """The items of shard i of n (contiguous, balanced chunks; order kept)."""
    i, n = shard
    k, r = divmod(len(items), n)
    start = i * k + min(i, r)
    return items[start: start + k + (1 if i < r else 0)]


def resolve_device(name: Optional[str] = "auto"):
    """``auto`` picks CUDA, then Apple MPS, then CPU. Unavailable explicit choices are a clear error."""
    import torch

    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise StyleforgeError("--device cuda: no CUDA device is available here; use --device cpu or auto")
        return torch.device(name)
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise StyleforgeError("--device mps: Apple MPS is not available here; use --device cpu or auto")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise StyleforgeError(f"--device: unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")


device_option = click.option(
    "--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N | mps"
)
