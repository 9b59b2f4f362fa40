"""What a SLURM job tells its processes, read without SLURM's tools: the node list (``gpu[01-03,07],login1``),
the rendezvous of a multi-node torchrun job, times (``1-12:00:00``) and memory sizes (``64G``) as sbatch takes them.

Pure functions of strings and environment mappings; nothing here calls ``scontrol`` or ``srun``.
"""

from __future__ import annotations

import os
import re
from typing import List, Mapping, Optional

from ..errors import StyleforgeError

DEFAULT_PORT_BASE = 29500
"""Rendezvous ports are ``29500 + job id % 1000``: the torchrun default for job ids ending in 000, and two jobs
that share a first node (a job's own steps, or neighbours) rarely collide."""


def _split_top(text: str) -> List[str]:
    """Split at commas outside brackets: ``a[1-2,4],b`` -> ``a[1-2,4]``, ``b``."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ValueError("unbalanced ]")
        elif ch == "," and depth == 0:
            out.append(text[start:i])
            start = i + 1
    if depth:
        raise ValueError("unbalanced [")
    out.append(text[start:])
    return [p for p in out if p]


def _expand_range(spec: str) -> List[str]:
    """``01-03,07`` -> ``01 02 03 07`` (zero padding kept, as SLURM writes it)."""
    out = []
    for part in spec.split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part.strip())
        if not m:
            raise ValueError(f"bad range {part!r}")
        a, b = m.group(1), m.group(2) or m.group(1)
        if int(b) < int(a):
            raise ValueError(f"range {part!r} runs backwards")
        width = len(a)
        out += [str(k).zfill(width) for k in range(int(a), int(b) + 1)]
    return out


def expand_nodelist(nodelist: str) -> List[str]:
    """SLURM's compressed host list as host names, in order: ``gpu[01-02],cpu7`` -> gpu01, gpu02, cpu7. Several
    bracket groups in one name (``rack[1-2]-n[1-2]``) expand as SLURM does (the first varies slowest)."""
    try:
        hosts: List[str] = []
        for item in _split_top(nodelist.strip()):
            names = [""]
            for m in re.finditer(r"([^\[]*)(?:\[([^\]]*)\])?", item):
                prefix, ranges = m.group(1), m.group(2)
                if not prefix and ranges is None:
                    continue
                names = [n + prefix for n in names]
                if ranges is not None:
                    names = [n + r for n in names for r in _expand_range(ranges)]
            hosts += names
    except ValueError as e:
        raise StyleforgeError(f"cannot read the SLURM node list {nodelist!r} ({e})", param="nodelist") from None
    if not hosts:
        raise StyleforgeError("the SLURM node list is empty", param="nodelist", value=repr(nodelist))
    return hosts


def _env_int(env: Mapping[str, str], *names: str) -> Optional[int]:
    for n in names:
        v = env.get(n)
        if v:
            m = re.match(r"^(?:[\w-]+:)?(\d+)", v)  # "8", or "a100:8" as SLURM_GPUS_PER_NODE may read
            if m:
                return int(m.group(1))
    return None


def torchrun_args(nproc_per_node: Optional[int] = None, nnodes: Optional[int] = None,
                  env: Optional[Mapping[str, str]] = None, port: Optional[int] = None) -> List[str]:
    """torchrun's launch flags for this job: one agent per node (one SLURM task per node), ``nproc_per_node``
    processes each (default: the GPUs SLURM gave this node, else 1). One node: ``--standalone``. Several: a c10d
    rendezvous on the first node of ``SLURM_JOB_NODELIST`` at ``29500 + job id % 1000``, id = the job id (so
    every node of the job, and only this job, meets there)."""
    env = os.environ if env is None else env
    nproc = nproc_per_node or _env_int(env, "SLURM_GPUS_ON_NODE", "SLURM_GPUS_PER_NODE") or 1
    nnodes = nnodes or _env_int(env, "SLURM_JOB_NUM_NODES", "SLURM_NNODES") or 1
    if nnodes == 1:
        return ["--standalone", "--nnodes", "1", "--nproc_per_node", str(nproc)]
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    job = env.get("SLURM_JOB_ID")
    if not nodelist or not job:
        raise StyleforgeError(f"a {nnodes}-node torchrun job needs SLURM_JOB_NODELIST and SLURM_JOB_ID (run it "
                              "inside a SLURM allocation, one task per node)")
    first = expand_nodelist(nodelist)[0]
    port = port or DEFAULT_PORT_BASE + int(re.sub(r"\D", "", job) or 0) % 1000
    return ["--nnodes", str(nnodes), "--nproc_per_node", str(nproc), "--rdzv_backend", "c10d",
            "--rdzv_endpoint", f"{first}:{port}", "--rdzv_id", f"styleforge-{job}"]


def parse_minutes(text) -> int:
    """sbatch's ``--time`` in whole minutes: ``90``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``
    (seconds round up)."""
    s = str(text).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", s)
    if not m or int(m.group(2) or 0) < 0:
        raise StyleforgeError("use minutes (90) or [D-]HH:MM[:SS] (1-12:00:00)", param="time_min", label="time",
                              value=repr(text))
    days, a, b, c = (int(g) if g else None for g in m.groups())
    if days is not None:  # D-HH[:MM[:SS]]
        secs = days * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    elif c is not None:  # HH:MM:SS
        secs = a * 3600 + b * 60 + c
    elif b is not None:  # MM:SS
        secs = a * 60 + b
    else:
        secs = a * 60
    minutes = -(-secs // 60)
    if minutes < 1:
        raise StyleforgeError("must be at least one minute", param="time_min", label="time", value=repr(text))
    return minutes


def check_mem(text) -> str:
    """sbatch's ``--mem``: a number with an optional unit K, M, G or T (``64G``, ``32000M``); returned as given."""
    s = str(text).strip()
    m = re.fullmatch(r"(\d+)([KMGT]?)B?", s, flags=re.IGNORECASE)
    if not m or int(m.group(1)) == 0:
        raise StyleforgeError("use a size like 64G or 32000M", param="mem", value=repr(text))
    return m.group(1) + m.group(2).upper()
