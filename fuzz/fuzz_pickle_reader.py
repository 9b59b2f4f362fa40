"""Mutation fuzzer for styleforge's official-pickle reader (``styleforge.networks.load_networks`` on ``.pkl`` files).

Every input must end in a loaded bundle, ``NetworkFormatError`` or ``UnsafePickleError``. Anything else is a finding:
another exception type, a multi-line error message, a hang (no answer within ``--timeout`` s), a crash of the
interpreter, a memory blow-up (peak RSS grows by more than ``--mem-growth-mb``), or a "suspicious load" (a network
loaded with non-float32 tensors). Findings are saved under ``fuzz/findings/`` (smallest input per signature, plus a
``.txt`` with the traceback and the mutation chain).

Design: the parent generates inputs (structure-aware mutations of seed pickles) and a worker subprocess loads them,
so hangs and crashes are observable. The worker runs torch with one thread, under an address-space limit, and both
processes are pinned to one CPU core. Seeds: the official fixtures (when present) plus tiny pickles written by
``tests/official_format.py``. Inputs whose outcome looks new (kind, exception and error-message shape) join the
corpus. The mutator is a seeded ``random.Random``, so a run is reproducible given ``--seed``.

Usage::

    python fuzz/fuzz_pickle_reader.py --seconds 600            # fuzz for 10 minutes, print a summary line
    python fuzz/fuzz_pickle_reader.py --replay fuzz/findings/*.pkl   # re-run saved inputs in-process, verbosely
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickletools
import random
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FIXTURES = Path(os.environ.get("STYLEFORGE_OFFICIAL_FIXTURES", "/work/shared/fixtures/official"))
THREAD_ENV = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")}

FINDING_KINDS = ("other-exception", "multiline-message", "hang", "crash", "memory", "suspicious-load")
OK_KINDS = ("loaded", "NetworkFormatError", "UnsafePickleError")


# ------------------------------------------------------------------------------------------------------------------
# Worker side: load one file and classify the outcome.


def _setup_worker(max_mem_mb: int) -> None:
    os.environ.update(THREAD_ENV)
    import resource

    if max_mem_mb > 0:
        limit = max_mem_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import torch

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    import warnings

    warnings.simplefilter("ignore")
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 1000))


READER_FILES = ("styleforge/networks/official.py", "styleforge/networks/checkpoint.py")


def _innermost(faulthandler_text: str, inside: Tuple[str, ...] = ()) -> str:
    """The innermost frame (in one of the files ``inside``, if given) of a faulthandler dump (most recent first).

    Hangs and crashes are located by the reader frame they happened under (e.g. ``checkpoint.py:_build``), so one
    cause stuck at different spots of torch does not count as many findings.
    """
    for m in re.finditer(r'File "([^"]+)", line (\d+) in (\S+)', faulthandler_text):
        if not inside or any(part in m.group(1) for part in inside):
            return f"{Path(m.group(1)).name}:{m.group(2)}:{m.group(3)}"
    return "-"


def _frame(tb_entries, inside: Optional[str] = None) -> str:
    for fr in reversed(tb_entries):
        if inside is None or inside in fr.filename:
            return f"{Path(fr.filename).name}:{fr.lineno}:{fr.name}"
    return "-"


def classify(path: str) -> Dict[str, object]:
    """Load ``path`` with styleforge and describe what happened (runs in the worker, or in-process for replay)."""
    import resource

    import torch

    from styleforge.errors import NetworkFormatError, UnsafePickleError
    from styleforge.networks.checkpoint import load_networks

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out: Dict[str, object] = {"kind": "loaded", "exc": "", "msg": "", "where": "", "last": ""}
    try:
        bundle = load_networks(path)
        bad = []
        for key, net in bundle.networks.items():
            for name, t in list(net.named_parameters()) + list(net.named_buffers()):
                if t.dtype != torch.float32:
                    bad.append(f"{key}.{name}:{str(t.dtype).replace('torch.', '')}")
        if bad:
            out.update(kind="suspicious-load", exc="non-float32", msg=f"loaded non-float32 tensors: {bad[:4]}",
                       where="checkpoint.py:_load_into")
    except (NetworkFormatError, UnsafePickleError) as e:  # the expected failures
        msg = str(e)
        out.update(kind=type(e).__name__ if isinstance(e, UnsafePickleError) else "NetworkFormatError",
                   exc=type(e).__name__, msg=msg[:2000])
        if not msg.strip() or "\n" in msg:
            entries = traceback.extract_tb(e.__traceback__)
            out.update(kind="multiline-message", where=_frame(entries, "styleforge"), last=_frame(entries),
                       tb="".join(traceback.format_exception(e))[-6000:])
    except BaseException as e:  # noqa: BLE001 - everything else is a finding
        entries = traceback.extract_tb(e.__traceback__)
        memory = isinstance(e, MemoryError) or "can't allocate memory" in str(e)
        out.update(kind="memory" if memory else "other-exception", exc=type(e).__name__, msg=str(e)[:2000],
                   where=_frame(entries, "styleforge"), last=_frame(entries),
                   tb="".join(traceback.format_exception(e))[-6000:])
    out["rss_growth_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024.0
    return out


def worker_main(max_mem_mb: int, warmup: Optional[str], timeout: float) -> None:
    """Read one path per line on stdin, answer one JSON line per path on the original stdout."""
    import faulthandler

    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything else printed (also from C code) goes to stderr, never into the protocol
    sys.stdout = sys.stderr
    faulthandler.enable()  # tracebacks of fatal signals go to the log, so crashes can be located
    _setup_worker(max_mem_mb)
    if warmup:
        classify(warmup)  # first load pays one-off costs (imports, meta-device setup)
    proto.write(json.dumps({"ready": os.getpid()}) + "\n")
    for line in sys.stdin:
        path = line.rstrip("\n")
        if not path:
            break
        print(f"=== input {path}", file=sys.stderr, flush=True)
        # Just before the parent gives up on this input, dump where we are (locates hangs).
        faulthandler.dump_traceback_later(max(0.5, timeout * 0.8), exit=False)
        out = classify(path)
        faulthandler.cancel_dump_traceback_later()
        proto.write(json.dumps(out) + "\n")


class Worker:
    """A worker subprocess with a per-input time limit; restarted after hangs, crashes and memory blow-ups."""

    def __init__(self, max_mem_mb: int, warmup: str, log_path: Path, timeout: float):
        self.max_mem_mb = max_mem_mb
        self.timeout = timeout
        self.warmup = warmup
        self.log_path = log_path
        self.proc: Optional[subprocess.Popen] = None
        self.starts = 0

    def start(self) -> None:
        env = dict(os.environ, **THREAD_ENV)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", "--max-mem-mb", str(self.max_mem_mb),
             "--warmup", self.warmup, "--timeout", str(self.timeout)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env, bufsize=0,
        )
        log.close()
        self.starts += 1
        line = self._readline(120.0)
        if line is None or "ready" not in line:
            raise RuntimeError(f"fuzz worker did not start; see {self.log_path}")

    def _readline(self, timeout: float) -> Optional[str]:
        assert self.proc is not None and self.proc.stdout is not None
        buf = b""
        deadline = time.monotonic() + timeout
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if not ready:
                return None
            chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
            if not chunk:
                return ""  # EOF: the worker died
            buf += chunk
        return buf.decode()

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)  # only the worker this object started
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f:
                f.close()
        self.proc = None

    def _this_input_log(self, n: int = 6000) -> str:
        """What the worker logged for the current input (faulthandler tracebacks of hangs and crashes)."""
        try:
            text = self.log_path.read_bytes()[-200_000:].decode(errors="replace")
        except OSError:
            return ""
        return text[text.rfind("=== input"):][-n:] if "=== input" in text else text[-n:]

    def run(self, path: str, timeout: float) -> Dict[str, object]:
        if self.proc is None:
            self.start()
        assert self.proc is not None and self.proc.stdin is not None
        t0 = time.monotonic()
        try:
            self.proc.stdin.write(path.encode() + b"\n")
        except BrokenPipeError:
            pass
        line = self._readline(timeout)
        elapsed = time.monotonic() - t0
        if line is None:
            self.stop()
            tail = self._this_input_log()
            return {"kind": "hang", "exc": "timeout", "msg": f"no answer within {timeout:.0f} s",
                    "where": _innermost(tail, READER_FILES), "last": _innermost(tail), "tb": tail, "seconds": elapsed}
        if line == "":
            rc = self.proc.wait()
            sig = -rc if rc < 0 else 0
            name = signal.Signals(sig).name if sig else f"exit {rc}"
            self.stop()
            tail = self._this_input_log()
            return {"kind": "crash", "exc": name, "msg": f"worker died ({name})",
                    "where": _innermost(tail, READER_FILES), "last": _innermost(tail), "tb": tail, "seconds": elapsed}
        out = json.loads(line)
        out["seconds"] = elapsed
        return out


# ------------------------------------------------------------------------------------------------------------------
# Seeds.


def build_seeds(use_fixtures: bool) -> List[Tuple[str, bytes]]:
    """(name, bytes) seed inputs: tiny official-layout pickles in several variants, hostile ones, fixtures."""
    import collections

    import torch

    sys.path.insert(0, str(REPO / "tests"))
    import official_format as of

    mini_g = dict(z_dim=8, w_dim=8, img_resolution=8, mapping=dict(num_layers=2),
                  synthesis=dict(channel_base=64, channel_max=8))
    mini_d = dict(img_resolution=8, channel_base=64, channel_max=8, mbstd_group_size=2)
    variants = {
        "mini_skip": ({}, {}),
        "mini_cond_resnet": (dict(c_dim=3, synthesis=dict(channel_base=64, channel_max=8, architecture="resnet")),
                             dict(c_dim=3, architecture="orig", mapping=dict(num_layers=2))),
        "mini_orig_clamp": (dict(img_resolution=16, synthesis=dict(channel_base=128, channel_max=8,
                                                                   architecture="orig", conv_clamp=256)),
                            dict(img_resolution=16, channel_base=128, architecture="skip", conv_clamp=256)),
    }
    seeds: List[Tuple[str, bytes]] = []
    for i, (name, (g, d)) in enumerate(variants.items()):
        G, D, G_ema = of.tiny_networks(seed=i, g_overrides={**mini_g, **g}, d_overrides={**mini_d, **d})
        tsk = {"class_name": "training.dataset.ImageFolderDataset", "path": "/data/x.zip", "resolution": 8,
               "use_labels": bool(g.get("c_dim")), "max_size": 100, "xflip": False}
        data = {"training_set_kwargs": tsk, "G": G, "D": D, "G_ema": G_ema, "augment_pipe": None}
        seeds.append((f"{name}.p3np1", of.official_pickle_bytes(data, protocol=3)))
        if i == 0:
            seeds.append((f"{name}.p4np2", of.official_pickle_bytes(data, protocol=4, numpy2_names=True)))
            seeds.append((f"{name}.p4np2.unframed", _unframe(seeds[-1][1])))
            seeds.append((f"{name}.G_ema_only", of.official_pickle_bytes({"G_ema": G_ema})))
    # Small hostile and non-network seeds, so mutations also explore those paths.
    call = of.Reduce(of.GlobalRef("os", "system"), ("true",))
    seeds.append(("hostile.os_system", of.official_pickle_bytes(call)))
    blob = of.legacy_storage_blob(torch.zeros(2), storage_global=of.GlobalRef("os", "system"))
    seeds.append(("hostile.blob_global", of.official_pickle_bytes({"G_ema": of.Reduce(of.LOAD_FROM_BYTES, (blob,))})))
    seeds.append(("nonnet.dict", of.official_pickle_bytes({"D": None, "x": [1, 2.5, "s", (None,)],
                                                          "o": collections.OrderedDict(a=1)})))
    if use_fixtures:
        for path in sorted(FIXTURES.glob("*.pkl")):
            seeds.append((f"fixture.{path.stem}", path.read_bytes()))
    return seeds


def _unframe(data: bytes) -> bytes:
    """Drop FRAME opcodes (framing is optional), so length-changing mutations keep a protocol-4 pickle parseable."""
    out, last = [], 0
    for op, _arg, pos in pickletools.genops(data):
        if op.name == "FRAME":
            out.append(data[last:pos])
            last = pos + 9
    out.append(data[last:])
    return b"".join(out)


# ------------------------------------------------------------------------------------------------------------------
# Mutations.

ALLOWED_NAMES = [
    ("torch_utils.persistence", "_reconstruct_persistent_obj"), ("dnnlib.util", "EasyDict"),
    ("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_tensor_v2"), ("torch.storage", "_load_from_bytes"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("numpy", "dtype"), ("_codecs", "encode"),
]
HOSTILE_NAMES = [
    ("os", "system"), ("posix", "system"), ("builtins", "eval"), ("builtins", "exec"), ("subprocess", "Popen"),
    ("builtins", "getattr"), ("torch", "load"), ("numpy", "frombuffer"), ("torch._utils", "_rebuild_tensor"),
    ("torch", "FloatStorage"), ("__builtin__", "set"), ("copyreg", "_reconstructor"), ("x" * 300, "y"), ("", ""),
]
STORAGE_NAMES = ["FloatStorage", "DoubleStorage", "HalfStorage", "BFloat16Storage", "LongStorage", "IntStorage",
                 "ShortStorage", "CharStorage", "ByteStorage", "BoolStorage", "ComplexFloatStorage",
                 "QInt8Storage", "UntypedStorage", "Storage", "system"]
INTERESTING_INTS = [0, 1, -1, 2, 3, 4, 7, 8, 255, 256, 1023, 1024, 65535, 65536, 2**31 - 1, -2**31, 2**31, 2**32,
                    2**40, 2**62, 2**63 - 1, -2**63, 2**64, 10**6, 10**9]
INTERESTING_STRINGS = [
    "G", "D", "G_ema", "augment_pipe", "training_set_kwargs", "class_name", "state", "type", "version", "module_src",
    "_parameters", "_buffers", "_modules", "_init_kwargs", "_init_args", "training", "mapping", "synthesis",
    "Generator", "Discriminator", "MappingNetwork", "SynthesisNetwork", "AugmentPipe", "z_dim", "w_dim", "c_dim",
    "img_resolution", "img_channels", "mapping_kwargs", "synthesis_kwargs", "num_layers", "channel_base",
    "channel_max", "conv_clamp", "architecture", "resample_filter", "w_avg", "weight", "bias", "const", "b4",
    "fc0", "", "x" * 1000, "\n", "\u00e9\u4e2d", "storage", "cpu", "cuda", "meta", "f8", "<", ">", "O", "V8", "U3",
    "c16", "b1", "i8", "protocol_version", "little_endian", "__setstate__", "__reduce__", "__class__", "__dict__",
]
# Opcode snippets to insert (raw pickle bytes, some with arguments).
OPCODE_SNIPPETS = [
    b"(", b")", b"}", b"]", b"N", b"\x88", b"\x89", b"0", b"1", b"2", b"t", b"\x85", b"\x86", b"\x87", b"R", b"b",
    b"s", b"u", b"a", b"e", b"l", b"d", b".", b"Q", b"\x81", b"\x92", b"\x93", b"\x94", b"\x8f", b"\x90", b"\x91",
    b"K\x00", b"K\xff", b"M\xff\xff", b"J\xff\xff\xff\x7f", b"J\x00\x00\x00\x80", b"\x8a\x00",
    b"\x8a\x09" + b"\xff" * 9,
    b"G" + struct.pack(">d", float("nan")), b"G" + struct.pack(">d", 1e308),
    b"h\x00", b"h\x01", b"h\x05", b"h\xff", b"j\x00\x00\x01\x00", b"q\x00", b"q\x01", b"r\xff\xff\xff\x7f",
    b"X\x00\x00\x00\x00", b"X\xff\xff\xff\x7f", b"C\x04abcd", b"B\xff\xff\xff\x7f", b"\x8e" + b"\xff" * 8,
    b"\x95" + struct.pack("<Q", 2**40), b"\x80\x05", b"\x80\x09", b"\x98", b"\x97",
    b"I1\n", b"F1e999\n", b"Vabc\n", b"S'abc'\n", b"p0\n", b"g0\n", b"L99999999999999999999999999L\n",
]


class Seed:
    """An input with its opcode offsets (outer pickle) precomputed for structure-aware mutations."""

    def __init__(self, name: str, data: bytes):
        self.name = name
        self.data = data
        self.ops: List[Tuple[str, object, int]] = []
        try:
            for op, arg, pos in pickletools.genops(data):
                self.ops.append((op.name, arg if not isinstance(arg, (bytes, bytearray)) else len(arg), pos))
        except Exception:  # noqa: BLE001 - a mutated corpus entry may not parse to the end
            pass
        self.positions = [pos for _n, _a, pos in self.ops] or [0]


def _op_span(seed: Seed, i: int) -> Tuple[int, int]:
    start = seed.ops[i][2]
    end = seed.ops[i + 1][2] if i + 1 < len(seed.ops) else len(seed.data)
    return start, end


def _encode_int(v: int) -> bytes:
    if 0 <= v < 256:
        return b"K" + bytes([v])
    if 0 <= v < 65536:
        return b"M" + struct.pack("<H", v)
    if -2**31 <= v < 2**31:
        return b"J" + struct.pack("<i", v)
    n = (v.bit_length() + 8) // 8
    return b"\x8a" + bytes([n]) + v.to_bytes(n, "little", signed=True)


def _encode_str(s: str) -> bytes:
    b = s.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(b)) + b


def _encode_bytes(b: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(b)) + b if len(b) >= 256 else b"C" + bytes([len(b)]) + b


class Mutator:
    """Structure-aware mutation operators over :class:`Seed` inputs, driven by one seeded RNG."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def _pos(self, seed: Seed) -> int:
        r = self.rng
        if r.random() < 0.75:
            return r.choice(seed.positions) + (r.randrange(3) if r.random() < 0.3 else 0)
        return r.randrange(max(1, len(seed.data)))

    def _op_index(self, seed: Seed, names=None) -> Optional[int]:
        if names is None:
            return self.rng.randrange(len(seed.ops)) if seed.ops else None
        idx = [i for i, (n, _a, _p) in enumerate(seed.ops) if n in names]
        return self.rng.choice(idx) if idx else None

    # Each operator returns (new bytes, description) or None if it does not apply.
    def bitflip(self, seed, donors):
        b = bytearray(seed.data)
        if not b:
            return None
        for _ in range(self.rng.randint(1, 6)):
            p = min(self._pos(seed), len(b) - 1)
            b[p] ^= 1 << self.rng.randrange(8)
        return bytes(b), "bitflip"

    def setbyte(self, seed, donors):
        b = bytearray(seed.data)
        if not b:
            return None
        p = min(self._pos(seed), len(b) - 1)
        b[p] = self.rng.choice([0, 0xFF, 0x7F, 0x80, self.rng.randrange(256), self.rng.choice(b"()}]NRbsuat.Qh")])
        return bytes(b), f"setbyte@{p}"

    def truncate(self, seed, donors):
        p = self._pos(seed)
        return seed.data[:p], f"truncate@{p}"

    def splice(self, seed, donors):
        other = self.rng.choice(donors)
        a, b = self._pos(seed), self.rng.choice(other.positions)
        return seed.data[:a] + other.data[b:], f"splice@{a}+{other.name}@{b}"

    def insert_opcodes(self, seed, donors):
        p = self.rng.choice(seed.positions)
        ins = b"".join(self.rng.choice(OPCODE_SNIPPETS) for _ in range(self.rng.randint(1, 3)))
        return seed.data[:p] + ins + seed.data[p:], f"insert{ins[:16]!r}@{p}"

    def delete_opcode(self, seed, donors):
        i = self._op_index(seed)
        if i is None:
            return None
        s, e = _op_span(seed, i)
        return seed.data[:s] + seed.data[e:], f"delete {seed.ops[i][0]}@{s}"

    def duplicate_span(self, seed, donors):
        if len(seed.ops) < 2:
            return None
        i = self.rng.randrange(len(seed.ops) - 1)
        j = min(len(seed.ops) - 1, i + self.rng.randint(1, 40))
        s, e = seed.ops[i][2], seed.ops[j][2]
        if e - s > 1 << 20:
            return None
        p = self.rng.choice(seed.positions)
        return seed.data[:p] + seed.data[s:e] + seed.data[p:], f"copy[{s}:{e}]@{p}"

    def swap_global(self, seed, donors):
        i = self._op_index(seed, {"GLOBAL"})
        if i is None:
            return self.swap_string(seed, donors)
        s, e = _op_span(seed, i)
        mod, name = self.rng.choice(ALLOWED_NAMES + HOSTILE_NAMES)
        return seed.data[:s] + f"c{mod}\n{name}\n".encode() + seed.data[e:], f"global->{mod}.{name}@{s}"

    def swap_string(self, seed, donors):
        i = self._op_index(seed, {"BINUNICODE", "SHORT_BINUNICODE", "UNICODE", "BINUNICODE8"})
        if i is None:
            return None
        s, e = _op_span(seed, i)
        pool = INTERESTING_STRINGS + [m for m, _n in ALLOWED_NAMES + HOSTILE_NAMES] + [n for _m, n in ALLOWED_NAMES]
        new = self.rng.choice(pool)
        return seed.data[:s] + _encode_str(new) + seed.data[e:], f"string->{new[:30]!r}@{s}"

    def swap_int(self, seed, donors):
        i = self._op_index(seed, {"BININT1", "BININT2", "BININT", "LONG1", "INT", "LONG"})
        if i is None:
            return None
        s, e = _op_span(seed, i)
        v = self.rng.choice(INTERESTING_INTS) if self.rng.random() < 0.8 else self.rng.randint(-1000, 10**6)
        return seed.data[:s] + _encode_int(v) + seed.data[e:], f"int {seed.ops[i][1]}->{v}@{s}"

    def swap_memo_ref(self, seed, donors):
        """Point a memo GET at another entry (type confusion), or a memo PUT at another index (also huge ones)."""
        put = self.rng.random() < 0.3
        i = self._op_index(seed, {"BINPUT", "LONG_BINPUT"} if put else {"BINGET", "LONG_BINGET"})
        if i is None:
            return None
        s, e = _op_span(seed, i)
        top = max([a for n, a, _p in seed.ops if n in ("BINPUT", "LONG_BINPUT")] or [1])
        v = self.rng.randrange(int(top) + 2)
        if put and self.rng.random() < 0.03:  # rare: each such input costs seconds (README: finding R3)
            v = self.rng.choice([2**20, 2**24, 2**26, 2**27, 2**31 - 1, 2**32 - 1])
        code = (b"q", b"r") if put else (b"h", b"j")
        new = code[0] + bytes([v]) if v < 256 else code[1] + struct.pack("<I", v)
        return seed.data[:s] + new + seed.data[e:], f"memo {'put' if put else 'get'} {seed.ops[i][1]}->{v}@{s}"

    def transplant(self, seed, donors):
        """Replace one value-building span with a span from another input (e.g. a tensor where a dict was)."""
        other = self.rng.choice(donors)
        if len(other.ops) < 2 or len(seed.ops) < 2:
            return None
        i = self.rng.randrange(len(other.ops) - 1)
        j = min(len(other.ops) - 1, i + self.rng.randint(1, 60))
        s2, e2 = other.ops[i][2], other.ops[j][2]
        k = self._op_index(seed)
        s, e = _op_span(seed, k)
        if e2 - s2 > 1 << 20:
            return None
        return seed.data[:s] + other.data[s2:e2] + seed.data[e:], f"transplant {other.name}[{s2}:{e2}]@{s}"

    def mutate_blob(self, seed, donors):
        """Structure-aware: change one tensor blob (BINBYTES argument) and re-encode it with the right length."""
        i = self._op_index(seed, {"BINBYTES", "SHORT_BINBYTES", "BINBYTES8"})
        if i is None:
            return None
        s, e = _op_span(seed, i)
        head = {"BINBYTES": 5, "SHORT_BINBYTES": 2, "BINBYTES8": 9}[seed.ops[i][0]]
        blob = bytearray(seed.data[s + head:e])
        r = self.rng
        choice = r.randrange(7)
        if choice == 0 and b"torch\n" in blob:  # storage type swap
            a = blob.index(b"torch\n") + 6
            z = blob.find(b"\n", a)
            if z < 0:  # (an earlier mutation cut the name's newline)
                return None
            new = r.choice(STORAGE_NAMES).encode()
            blob[a:z] = new
            what = f"storage->{new.decode()}"
        elif choice == 1 and b"ctorch\n" in blob:  # storage global -> another module
            a = blob.index(b"ctorch\n")
            z = blob.find(b"\n", a + 7) + 1
            if z == 0:
                return None
            mod, name = r.choice(HOSTILE_NAMES)
            blob[a:z] = f"c{mod}\n{name}\n".encode()
            what = f"blob-global->{mod}.{name}"
        elif choice == 2 and len(blob) > 250:  # element count after the pickles
            stop = blob.rfind(b".", 0, 260)
            if stop < 0:
                return None
            v = r.choice(INTERESTING_INTS)
            blob[stop + 1:stop + 9] = struct.pack("<q", max(-2**63, min(2**63 - 1, v)))
            what = f"count->{v}"
        elif choice == 3:
            cut = r.randrange(len(blob) + 1)
            blob = blob[:cut]
            what = f"blob-truncate@{cut}"
        elif choice == 4:
            blob += bytes(r.randrange(256) for _ in range(r.choice([1, 2, 4, 8, 1000])))
            what = "blob-extend"
        else:
            for _ in range(r.randint(1, 4)):
                if blob:
                    p = r.randrange(min(len(blob), 260))
                    blob[p] ^= 1 << r.randrange(8)
            what = "blob-bitflip"
        return seed.data[:s] + _encode_bytes(bytes(blob)) + seed.data[e:], f"{what}@{s}"

    OPERATORS = ("bitflip", "setbyte", "truncate", "splice", "insert_opcodes", "delete_opcode", "duplicate_span",
                 "swap_global", "swap_string", "swap_int", "swap_memo_ref", "transplant", "mutate_blob")
    WEIGHTS = (6, 4, 3, 3, 8, 6, 3, 8, 8, 10, 6, 5, 8)

    def mutate(self, seed: Seed, donors: List[Seed]) -> Tuple[bytes, List[str]]:
        """Apply 1-4 stacked mutations; returns the new input and the list of what was done."""
        chain: List[str] = []
        current, data = seed, seed.data
        steps = self.rng.choice([1, 1, 1, 2, 2, 3, 4])
        for step in range(steps):
            res = None
            for _attempt in range(5):
                op = self.rng.choices(self.OPERATORS, self.WEIGHTS)[0]
                res = getattr(self, op)(current, donors)
                if res is not None:
                    break
            if res is None:
                break
            data, what = res
            chain.append(what)
            if step + 1 < steps:
                if len(data) > 4 << 20:  # re-parsing a fixture-sized input per step is not worth it
                    break
                current = Seed(seed.name, data)
        return data, chain


# ------------------------------------------------------------------------------------------------------------------
# Driver.


def _shape(msg: str) -> str:
    """An error message with file names, numbers and quoted values blurred, to tell 'new' outcomes apart."""
    msg = re.sub(r"^\S+\.pkl(\s*\[[^\]]*\])?:\s*", "", msg)
    msg = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", msg)
    msg = re.sub(r"\d+", "N", msg)
    return msg[:120]


def signature(out: Dict[str, object]) -> str:
    if out["kind"] in ("hang", "crash"):  # located by the reader frame only (see _innermost)
        return f"{out['kind']}|{out.get('exc', '')}|{out.get('where', '')}"
    return f"{out['kind']}|{out.get('exc', '')}|{out.get('where', '')}|{out.get('last', '')}"


class Fuzzer:
    """The main loop: pick a seed or corpus entry, mutate, run in the worker, classify and record."""

    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.mutator = Mutator(self.rng)
        self.findings_dir = Path(args.findings)
        self.findings_dir.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix="sf_fuzz_"))
        seeds = build_seeds(not args.no_fixtures)
        self.seeds = [Seed(n, d) for n, d in seeds]
        self.small = [s for s in self.seeds if len(s.data) < 1 << 20]
        self.large = [s for s in self.seeds if len(s.data) >= 1 << 20]
        self.corpus: List[Seed] = []
        self.seen_shapes: set = set()
        self.outcomes: Counter = Counter()
        self.finding_counts: Counter = Counter()
        self.finding_best: Dict[str, Tuple[int, Path]] = {}
        self.inputs = 0
        warm = self.tmp / "warmup.pkl"
        warm.write_bytes(self.small[0].data)
        self.worker = Worker(args.max_mem_mb, str(warm), self.tmp / "worker.log", args.timeout)

    def pick(self) -> Seed:
        r = self.rng.random()
        if self.large and r < self.args.fixture_share:
            return self.rng.choice(self.large)
        if self.corpus and r < 0.55:
            return self.rng.choice(self.corpus)
        return self.rng.choice(self.small)

    def record(self, data: bytes, out: Dict[str, object], seed: Seed, chain: List[str]) -> None:
        kind = str(out["kind"])
        if kind in OK_KINDS and float(out.get("rss_growth_mb") or 0) > self.args.mem_growth_mb:
            out = dict(out, kind="memory", exc="rss-growth",
                       msg=f"peak RSS grew by {float(out['rss_growth_mb']):.0f} MB ({kind}: {out.get('msg', '')})")
            kind = "memory"
            self.worker.stop()  # reset the high-water mark
        self.outcomes[kind] += 1
        shape = f"{kind}|{out.get('exc')}|{_shape(str(out.get('msg', '')))}"
        if shape not in self.seen_shapes:
            self.seen_shapes.add(shape)
            slow = float(out.get("seconds") or 0) > 0.25 * self.args.timeout  # its mutants would mostly time out
            if len(data) < 4 << 20 and len(self.corpus) < self.args.max_corpus and not slow:
                self.corpus.append(Seed(f"corpus{len(self.corpus)}", data))
        if kind not in FINDING_KINDS:
            return
        sig = signature(out)
        self.finding_counts[sig] += 1
        best = self.finding_best.get(sig)
        if best is not None and best[0] <= len(data):
            return
        digest = hashlib.sha1(sig.encode()).hexdigest()[:10]
        path = self.findings_dir / f"{kind}-{digest}.pkl"
        path.write_bytes(data)
        report = {
            "signature": sig, "kind": kind, "exception": out.get("exc"), "message": out.get("msg"),
            "where": out.get("where"), "last_frame": out.get("last"), "seconds": round(float(out.get("seconds", 0)), 3),
            "seed": seed.name, "mutations": chain, "size": len(data),
        }
        text = json.dumps(report, indent=2) + "\n\n" + str(out.get("tb", ""))
        path.with_suffix(".txt").write_text(text)
        self.finding_best[sig] = (len(data), path)
        if best is None:
            msg = str(out.get("msg"))[:160]
            print(f"[finding] {kind}: {out.get('exc')}: {msg} ({out.get('where')}) -> {path.name}",
                  file=sys.stderr, flush=True)

    def run(self) -> int:
        self.worker.start()  # startup (torch import, warm-up load) is not counted as fuzzing time
        start = time.monotonic()
        deadline = start + self.args.seconds
        last_report = start
        path = self.tmp / "input.pkl"
        # First pass: every seed unmodified (they must load or fail cleanly too).
        queue = [(s, s.data, ["seed"]) for s in self.seeds]
        try:
            while time.monotonic() < deadline:
                if queue:
                    seed, data, chain = queue.pop(0)
                else:
                    seed = self.pick()
                    data, chain = self.mutator.mutate(seed, self.small + self.corpus[-50:])
                path.write_bytes(data)
                out = self.worker.run(str(path), self.args.timeout)
                self.inputs += 1
                self.record(data, out, seed, chain)
                now = time.monotonic()
                if now - last_report > 60:
                    last_report = now
                    print(f"[{now - start:6.0f}s] {self.summary(now - start)}", file=sys.stderr, flush=True)
        except KeyboardInterrupt:
            pass
        finally:
            self.worker.stop()
            shutil.rmtree(self.tmp, ignore_errors=True)
        elapsed = time.monotonic() - start
        print(self.summary(elapsed), flush=True)
        for sig, n in sorted(self.finding_counts.items(), key=lambda kv: -kv[1]):
            print(f"  finding x{n}: {sig} -> {self.finding_best[sig][1].name}")
        return 0

    def summary(self, elapsed: float) -> str:
        parts = " ".join(f"{k}={self.outcomes.get(k, 0)}" for k in OK_KINDS + FINDING_KINDS)
        n_find = sum(self.finding_counts.values())
        rate = self.inputs / max(elapsed, 1e-9)
        return (f"fuzz summary: inputs={self.inputs} seconds={elapsed:.0f} rate={rate:.1f}/s "
                f"outcomes: {parts} findings: {len(self.finding_counts)} unique signatures, {n_find} inputs; "
                f"corpus={len(self.corpus)} worker_starts={self.worker.starts}")


def replay(paths: List[str]) -> int:
    _setup_worker(0)
    sys.path.insert(0, str(REPO / "src"))
    for p in paths:
        out = classify(p)
        print(f"{p}: {out['kind']}: {out.get('exc')}: {str(out.get('msg'))[:300]} [{out.get('where')}]")
        if out.get("tb"):
            print(out["tb"])
    return 0


def pin_to_one_cpu(cpu: Optional[int]) -> Optional[int]:
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    target = cpu if cpu is not None else allowed[-1]
    os.sched_setaffinity(0, {target})  # the worker inherits this: parent + worker share one core
    return target


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="how long to fuzz (default 60)")
    ap.add_argument("--seed", type=int, default=0, help="random seed of the mutator")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds per input before it counts as a hang")
    ap.add_argument("--max-mem-mb", type=int, default=4096, help="address-space limit of the worker (MB)")
    ap.add_argument("--mem-growth-mb", type=float, default=1024.0, help="peak-RSS growth that counts as a blow-up")
    ap.add_argument("--fixture-share", type=float, default=0.08, help="share of inputs mutated from the fixtures")
    ap.add_argument("--max-corpus", type=int, default=2000)
    ap.add_argument("--no-fixtures", action="store_true", help="do not use the official fixtures as seeds")
    ap.add_argument("--findings", default=str(HERE / "findings"), help="where to save findings")
    ap.add_argument("--cpu", type=int, default=None, help="CPU core to pin to (default: the last allowed one)")
    ap.add_argument("--replay", nargs="+", metavar="FILE", help="classify these files in-process and print details")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--warmup", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker_main(args.max_mem_mb, args.warmup, args.timeout)
        return 0
    if args.replay:
        return replay(args.replay)
    cpu = pin_to_one_cpu(args.cpu)
    os.environ.update(THREAD_ENV)
    import torch

    torch.set_num_threads(1)
    print(f"fuzzing for {args.seconds:.0f} s on CPU {cpu}, seed {args.seed}", file=sys.stderr, flush=True)
    return Fuzzer(args).run()


if __name__ == "__main__":
    sys.exit(main())
