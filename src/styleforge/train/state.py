"""What makes a run stoppable and exactly resumable: the resume-state file, RNG states, seeds, the stop flag.

``resume-state.pt`` (``torch.save``, read back with ``weights_only=True``) holds every tensor and number that evolves
during training (see :meth:`styleforge.train.trainer.Trainer.state_dict`). Random draws are re-seeded every step
from :func:`derive_seed`, so the saved RNG states are only a belt to those braces. SIGTERM and SIGINT set a
:class:`StopFlag` (:func:`stop_on_signals`): the loop finishes the step, saves the state and returns normally.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import threading
from pathlib import Path
from typing import Any, Callable, Dict

import numpy as np
import torch

from ..errors import StyleforgeError

STATE_NAME = "resume-state.pt"
STATE_FORMAT = "styleforge-train-state"
STATE_VERSION = 1


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (numpy SeedSequence hashing: unrelated streams for nearby inputs)."""
    a, b = np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint32)
    return ((int(a) << 32) | int(b)) & ((1 << 63) - 1)


def rng_state() -> Dict[str, Any]:
    """torch's, numpy's, Python's (and CUDA's, when in use) global RNG states, as plain data and tensors."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    st = {"torch": torch.get_rng_state(),
          "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                    "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
          "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: Dict[str, Any]) -> None:
    torch.set_rng_state(st["torch"].cpu())
    n = st["numpy"]
    np.random.set_state((n["kind"], n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        with contextlib.suppress(Exception):
            torch.cuda.set_rng_state_all([t.cpu() for t in st["cuda"]])


def _first_sentence(e: BaseException) -> str:
    """The first sentence of an exception's message (torch appends paragraphs of advice), or its type's name."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return re.split(r"(?<=\w)\. ", msg, maxsplit=1)[0].rstrip(".").replace("PytorchStreamReader ", "")


def load_state_file(path: Path, map_location="cpu") -> Dict[str, Any]:
    """A resume state, checked; a file that is not one (or is cut off) is one line saying how to go on."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure here is a bad file for the user
        reason = _first_sentence(e)
        if not (isinstance(e, EOFError) or "zip archive" in reason):
            raise StyleforgeError(f"{path}: not a styleforge training state ({reason}); pass a resume-state.pt "
                                  "written by train.py") from None
        snaps = sorted(Path(path).parent.glob("network-snapshot-*.safetensors"))
        instead = (f"move it away and continue from the last snapshot with {{resume}} {snaps[-1]} (optimiser "
                   "state and progress start again)" if snaps else "move it away and start a new run")
        raise StyleforgeError(f"{path}: truncated or corrupt training state ({reason}); it cannot be resumed: copy "
                              f"it again if it was transferred, else {instead}", also={"resume": "resume"}) from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise StyleforgeError(f"{path}: a torch file, but not a styleforge training state")
    if int(state.get("version", 0)) > STATE_VERSION:
        raise StyleforgeError(f"{path}: written by a newer styleforge (state version {state['version']}); upgrade")
    return state


def is_state_file(path: Path) -> bool:
    from ..networks.checkpoint import sniff_format

    return path.is_file() and sniff_format(path) == "zip"


class StopFlag:
    """Set by the SIGTERM/SIGINT handlers (or a test): the loop finishes the step, saves its state and returns."""

    def __init__(self):
        self.requested = False
        self.reason = ""

    def set(self, reason: str = "stop requested") -> None:
        self.requested = True
        self.reason = self.reason or reason


@contextlib.contextmanager
def stop_on_signals(stop: StopFlag, note: Callable[[str], None]):
    """SIGTERM and SIGINT set ``stop`` (and ``note`` says so) while the block runs; a second Ctrl-C aborts.
    Only in the main thread (elsewhere the block just runs)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:  # a forked data-loader worker (Ctrl-C reaches the whole process group)
            return
        name = signal.Signals(signum).name
        if stop.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set(name)
        note(f"{name} received: finishing the current step, then saving the state (Ctrl-C again to abort)")

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)
