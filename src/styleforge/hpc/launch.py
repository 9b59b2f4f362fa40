"""``python -m styleforge.hpc.launch [--nproc-per-node N] train ...``: run a styleforge command under torchrun with
the rendezvous of the SLURM job it is in (one torchrun agent per node: start it with ``srun`` and
``--ntasks-per-node=1``). This is what ``scripts/hpc/train-multinode.sbatch`` calls, so that the template holds no
logic of its own; ``styleforge submit`` runs the same command line through :class:`~styleforge.hpc.jobs.CommandTask`.
"""

from __future__ import annotations

import signal
import sys
from typing import List, Optional

from ..errors import StyleforgeError
from .jobs import CommandTask


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    nproc = None
    if argv[:1] == ["--nproc-per-node"] and len(argv) > 1:
        nproc, argv = argv[1], argv[2:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    try:
        if not argv:
            raise StyleforgeError("usage: python -m styleforge.hpc.launch [--nproc-per-node N] train ARGS...")
        if nproc is not None and (not nproc.isdigit() or int(nproc) < 1):
            raise StyleforgeError("--nproc-per-node: use a positive number", value=nproc)
        task = CommandTask(argv, launcher="torchrun", nproc_per_node=int(nproc) if nproc else 0, nnodes=0)
        # SLURM signals every process of the step (time limit, preemption, --signal=TERM@...): torchrun and the
        # ranks get SIGTERM themselves and save the state. This process must outlive them, or the step would end
        # and SLURM kill what is still saving; a no-op handler (not SIG_IGN, which the child would inherit).
        signal.signal(signal.SIGTERM, lambda signum, frame: None)
        task()
    except StyleforgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
