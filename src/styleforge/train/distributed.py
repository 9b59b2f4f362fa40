"""Processes of a training run: torchrun's environment, or one spawned process per CUDA device, or just this one.

``torchrun --nproc_per_node N`` (gloo on CPU, NCCL on CUDA) starts the ranks itself; ``gpus=N`` without torchrun
spawns them (CUDA), as the official train.py does. The ranks split the global batch, average their gradients with
one all-reduce per phase (no DDP wrapper, so lazy regularisation needs no special care) and hold identical
weights after every step. Only rank 0 writes; rank 0's progress events reach the caller's callback.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import torch

from ..errors import StyleforgeError
from ..utils.progress import Callback, Event


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        return t

    def reduce_mean(self, t: torch.Tensor) -> torch.Tensor:
        """The mean of ``t`` over processes (a detached copy)."""
        return self.all_reduce_sum(t.detach().clone()) / self.world

    def broadcast_object(self, obj: Any) -> Any:
        if self.world == 1 or not torch.distributed.is_initialized():
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def setup_distributed(gpus: Optional[int], device: str, timeout: Optional[datetime.timedelta] = None) -> DistInfo:
    """Processes and device: torchrun's environment when present, else one process (CUDA: spawn is the caller's)."""
    from ..utils.runtime import resolve_device, set_tf32

    if gpus is not None and (gpus < 1 or gpus & (gpus - 1)):
        raise StyleforgeError("must be a power of two (1, 2, 4, ...)", param="gpus", value=gpus)
    if not launched_by_torchrun():
        n = gpus or 1
        dev = resolve_device(device)
        if n > 1:
            if dev.type == "cuda":
                have = torch.cuda.device_count()
                if n > have:
                    raise StyleforgeError(f"{{name}} {n}: only {have} CUDA device(s) are present; use {{name}} "
                                          f"{max(have, 1)}", param="gpus", value=n)
            else:
                raise StyleforgeError(
                    f"{{name}} {n} on CPU needs one process per rank: launch with torchrun "
                    f"('torchrun --nproc_per_node {n} scripts/train.py ...') or use {{name}} 1", param="gpus", value=n)
        return DistInfo(device=dev, world=n)
    world = int(os.environ["WORLD_SIZE"])
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if gpus is not None and gpus != world:
        raise StyleforgeError(f"{{name}} {gpus} does not match torchrun's {world} process(es); drop {{name}} or make "
                              "them equal", param="gpus", value=gpus)
    if world & (world - 1):
        raise StyleforgeError(f"torchrun started {world} processes; training needs a power of two")
    name = (device or "auto").lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise StyleforgeError(f"{{name}} {device}: no CUDA device is available here; use {{name}} cpu",
                                  param="device", value=device)
        if local_rank >= torch.cuda.device_count():
            raise StyleforgeError(f"torchrun local rank {local_rank}: only {torch.cuda.device_count()} CUDA device(s)")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        set_tf32(False)  # exact fp32, as resolve_device does for one process (and the official loop)
        backend = "nccl"
    elif name == "cpu":
        dev, backend = torch.device("cpu"), "gloo"
    else:
        raise StyleforgeError("multi-process training supports cpu and cuda", param="device", value=device)
    info = DistInfo(rank=rank, world=world, local_rank=local_rank, device=dev)
    if not torch.distributed.is_initialized():
        kw = {"timeout": timeout} if timeout is not None else {}  # longer waits: rank 0 measuring (--metrics)
        torch.distributed.init_process_group(backend=backend, rank=rank, world_size=world, **kw)
        info.initialized_here = True
    return info


# ---------------------------------------------------------------------------------------------------------------------
# Spawned processes (gpus=N without torchrun). They report through one queue: ("event", Event) for the caller's
# callback, ("error", ...) for a StyleforgeError (re-raised here, naming its settings), ("result", dict) at the end.


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _QueueCallback:
    """A picklable progress callback that sends the events to the parent process."""

    def __init__(self, queue):
        self.queue = queue

    def __call__(self, event: Event) -> None:
        self.queue.put(("event", event))


def error_fields(e: StyleforgeError) -> Dict[str, Any]:
    """A StyleforgeError as picklable keywords that rebuild it in another process: ``StyleforgeError(**fields)``."""
    has_value = type(e.value) is not object  # (an unset value is a private sentinel object)
    return {"message": e.detail, "param": e.param, "also": e.labels, **({"value": e.value} if has_value else {})}


def _spawn_entry(rank: int, nprocs: int, port: int, kwargs: Dict[str, Any], queue) -> None:
    import sys

    from .loop import train

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(nprocs))
    try:
        r = train(gpus=None, callback=_QueueCallback(queue), **kwargs)
    except StyleforgeError as e:
        # every rank reports: the parent stops at the first process that exits, and it may be any rank
        queue.put(("error", error_fields(e)))
        sys.exit(1)
    if rank == 0:
        queue.put(("result", r.to_dict()))


def spawn_training(nprocs: int, kwargs: Dict[str, Any], callback: Optional[Callback] = None) -> Dict[str, Any]:
    """``gpus=N`` without torchrun (CUDA): one spawned process per device running ``train(**kwargs)``; returns rank
    0's result (``TrainResult.to_dict()``). SIGTERM/SIGINT to this process are forwarded to the workers (which save
    the state and exit)."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    pc = mp.start_processes(_spawn_entry, args=(nprocs, _free_port(), kwargs, queue), nprocs=nprocs, join=False,
                            start_method="spawn")
    got: Dict[str, Any] = {}

    def drain() -> None:
        while not queue.empty():
            kind, payload = queue.get()
            if kind == "event":
                if callback is not None:
                    callback(payload)
            else:
                got.setdefault(kind, payload)

    def forward(signum, frame):
        for proc in pc.processes:
            if proc.is_alive():
                with contextlib.suppress(OSError):
                    os.kill(proc.pid, signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, forward)
    try:
        while not pc.join(timeout=0.2):
            drain()
    except mp.ProcessExitedException as e:
        drain()
        if "error" in got:
            raise StyleforgeError(**got["error"]) from None
        raise StyleforgeError(f"training process {e.error_index} exited with code {e.exit_code}") from None
    except mp.ProcessRaisedException as e:
        raise StyleforgeError(f"training process {e.error_index} failed:\n{e}") from None
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)
    drain()
    if "result" not in got:
        raise StyleforgeError("training processes finished without a result")
    return got["result"]
