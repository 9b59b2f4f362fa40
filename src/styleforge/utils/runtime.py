"""What every tool resolves at run time, without any command-line library: seed lists, shards of a batch job
(with SLURM's array variables), the output folder check and the device.

Errors name the setting (``param``) and the value; the command-line tools add their flag's name.
"""

from __future__ import annotations

import bisect
import itertools
import os
import re
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from ..errors import StyleforgeError

_RANGE = re.compile(r"^\s*(-?\d+)\s*(?:-\s*(-?\d+)\s*)?$")


class SeedList(Sequence[int]):
    """A list of integers kept as ranges (``0-100000000`` stays one ``range``): ``len``, indexing and
    contiguous slicing (how shards are cut) are arithmetic, and iteration is lazy, so memory does not grow
    with the count. ``str()`` gives the ``0-7,12`` form back."""

    def __init__(self, ranges: Iterable[range] = ()):
        self.ranges = [r for r in ranges if len(r)]
        if any(r.step != 1 for r in self.ranges):
            raise ValueError("SeedList ranges must have step 1")
        self._ends = list(itertools.accumulate(len(r) for r in self.ranges))  # cumulative lengths

    @classmethod
    def of(cls, values: Iterable[int]) -> "SeedList":
        """A SeedList of ``values`` (returned as is if it is one); runs of consecutive values become ranges."""
        if isinstance(values, cls):
            return values
        if isinstance(values, range) and values.step == 1:
            return cls([values])
        out = cls()
        for v in values:
            out.append(int(v))
        return out

    def append(self, value: int) -> None:
        """Add ``value`` at the end (extending the last range when it continues it)."""
        if self.ranges and value == self.ranges[-1].stop:
            self.ranges[-1] = range(self.ranges[-1].start, value + 1)
            self._ends[-1] += 1
        else:
            self.ranges.append(range(value, value + 1))
            self._ends.append(len(self) + 1)

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def __iter__(self) -> Iterator[int]:
        return itertools.chain.from_iterable(self.ranges)

    def __getitem__(self, index: Union[int, slice]):
        n = len(self)
        if isinstance(index, slice):
            start, stop, step = index.indices(n)
            if step != 1:
                raise ValueError("SeedList slices must be contiguous (step 1)")
            out: List[range] = []
            k = bisect.bisect_right(self._ends, start)
            while start < stop and k < len(self.ranges):
                offset = self._ends[k] - len(self.ranges[k])
                out.append(self.ranges[k][start - offset: stop - offset])
                start = self._ends[k]
                k += 1
            return SeedList(out)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("SeedList index out of range")
        k = bisect.bisect_right(self._ends, index)
        return self.ranges[k][index - (self._ends[k] - len(self.ranges[k]))]

    def __eq__(self, other) -> bool:
        if isinstance(other, SeedList):
            return self.ranges == other.ranges
        if isinstance(other, (list, tuple, range)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    def __str__(self) -> str:
        return ",".join(str(r.start) if len(r) == 1 else f"{r.start}-{r.stop - 1}" for r in self.ranges)

    def __repr__(self) -> str:
        return f"SeedList({str(self)!r})"


def parse_int_list(spec: str, what: str = "seeds") -> SeedList:
    """Parse ``'0-7,12'`` into the seeds 0, 1, ..., 7, 12 (ranges inclusive, order kept), as a :class:`SeedList`."""
    ranges: List[range] = []
    if spec is None or not str(spec).strip():
        raise StyleforgeError("empty list; use e.g. '0-7,12'", param=what)
    for part in str(spec).split(","):
        m = _RANGE.match(part)
        if not m:
            raise StyleforgeError(f"cannot parse {part.strip()!r}; use numbers and ranges like '0-7,12'", param=what)
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) is not None else a
        if b < a:
            raise StyleforgeError(f"range {part.strip()!r} runs backwards; write it as '{b}-{a}'", param=what)
        ranges.append(range(a, b + 1))
    return SeedList(ranges)


_SLURM_VARS = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_STEP")


def _slurm_shard() -> Optional[Tuple[int, int]]:
    """The shard of a SLURM array task: ((ID - MIN) / STEP, COUNT); None outside an array job. Values that do
    not make a shard are an error naming the variables (otherwise a task would silently do nothing, or all)."""
    env = {k: os.environ.get(k) for k in _SLURM_VARS}
    if env["SLURM_ARRAY_TASK_ID"] is None or env["SLURM_ARRAY_TASK_COUNT"] is None:
        return None
    shown = ", ".join(f"{k}={v}" for k, v in env.items() if v is not None)
    try:
        tid, count = int(env["SLURM_ARRAY_TASK_ID"]), int(env["SLURM_ARRAY_TASK_COUNT"])
        first, step = int(env["SLURM_ARRAY_TASK_MIN"] or 0), int(env["SLURM_ARRAY_TASK_STEP"] or 1)
    except ValueError:
        raise StyleforgeError(f"SLURM array variables are not integers ({shown}); give the shard as i/n",
                              param="shard") from None
    i, rest = divmod(tid - first, max(step, 1))
    if count < 1 or rest or not 0 <= i < count:
        raise StyleforgeError(f"{i}/{count} from the SLURM array ({shown}) is out of range; use i/n with "
                              "0 <= i < n: fix the job array's range or give the shard as i/n", param="shard")
    return i, count


def parse_shard(spec: Optional[str]) -> Tuple[int, int]:
    """``'3/10'`` -> (3, 10), 0-based index. Defaults from SLURM array variables, else (0, 1)."""
    if spec is None or spec == "":
        return _slurm_shard() or (0, 1)
    m = re.match(r"^\s*(\d+)\s*/\s*(\d+)\s*$", str(spec))
    if not m:
        raise StyleforgeError("cannot parse it; use i/n with 0 <= i < n, e.g. 3/10", param="shard", value=repr(spec))
    return check_shard((int(m.group(1)), int(m.group(2))))


def check_shard(shard: Sequence[int]) -> Tuple[int, int]:
    """``shard`` as a pair ``(i, n)`` of ints with 0 <= i < n, else a StyleforgeError about the setting."""
    try:
        i, n = (int(v) for v in shard)
    except (TypeError, ValueError):
        raise StyleforgeError("use (i, n) with 0 <= i < n", param="shard", value=repr(shard)) from None
    if n < 1 or not 0 <= i < n:
        raise StyleforgeError("out of range; use i/n with 0 <= i < n", param="shard", value=f"{i}/{n}")
    return i, n


def shard_items(items: Sequence, shard: Tuple[int, int]) -> Sequence:
    """The items of shard i of n (contiguous, balanced chunks; order kept; a shard outside 0..n-1 is an error,
    :func:`check_shard`). Only ``len`` and one slice are used, so a :class:`SeedList` is cut without being
    expanded."""
    i, n = check_shard(shard)
    k, r = divmod(len(items), n)
    start = i * k + min(i, r)
    return items[start: start + k + (1 if i < r else 0)]


def check_outdir(outdir: Union[str, os.PathLike]) -> Path:
    """Check, without creating anything, that ``outdir`` is a writable folder or can be created as one (its
    nearest existing ancestor is a writable folder). The tools call this before loading a network and create
    the folder only when they write the first output, so a failed run leaves no empty folder behind."""
    outdir = Path(outdir)
    p = outdir
    while not p.exists() and p.parent != p:
        p = p.parent
    if not p.is_dir():
        raise StyleforgeError(f"{outdir}: cannot create output folder ({p} is a file); choose another output folder",
                              param="outdir")
    if not os.access(p, os.W_OK | os.X_OK):
        where = "" if p == outdir else f" ({p} is not writable)"
        raise StyleforgeError(f"{outdir}: output folder is not writable{where}; choose another output folder",
                              param="outdir")
    return outdir


def set_tf32(allow: bool) -> None:
    """Let CUDA run fp32 matrix products and convolutions in TF32 (10-bit mantissa) or not. torch allows it for
    cuDNN convolutions by default; styleforge turns it off (as the official training loop does) because it moves
    official images by up to 5e-3 (measured on an H200: 2e-6 with TF32 off, 1.2e-3 to 5.3e-3 with it on)."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow


def resolve_device(name: Optional[str] = "auto", allow_tf32: bool = False):
    """``auto`` picks CUDA, then Apple MPS, then CPU. Unavailable explicit choices are a clear error. On CUDA, fp32
    stays fp32 unless ``allow_tf32`` (see :func:`set_tf32`)."""
    dev = _pick_device(name)
    if dev.type == "cuda":
        set_tf32(allow_tf32)
    return dev


def _pick_device(name: Optional[str]):
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
            raise StyleforgeError("no CUDA device is available here; use cpu or auto", param="device", value=name)
        return torch.device(name)
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise StyleforgeError("Apple MPS is not available here; use cpu or auto", param="device", value="mps")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise StyleforgeError("unknown device; use auto, cpu, cuda, cuda:N or mps", param="device", value=repr(name))
