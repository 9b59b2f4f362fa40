"""Atomic output files: write to a temporary name in the same folder, then rename over the target.

A killed job therefore never leaves a half-written PNG, npz or checkpoint under its final name, and a failed
write (full disk, a folder in the way, no permission) removes its temporary file and becomes one
:class:`StyleforgeError` line that names the path and the cause (:func:`output_error`). The messages name
paths, not flags, so they are right for every caller; a caller whose output path came from a setting names it
(``param="dest", label="destination"``: the commands show their flag, ``choose another --dest``).
:func:`cleanup_on_signals` turns SIGTERM (and SIGINT) into an exception, so that these writers also clean up
when a job is terminated.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Iterator, Optional, Tuple, Union

import numpy as np

from ..errors import StyleforgeError

PathLike = Union[str, os.PathLike]


_FILE_MODE = None

# errno -> what to do about it ("{where}": the output's setting, else "location")
_REMEDIES = {
    errno.ENOSPC: "free some disk space or choose another {where}",
    errno.EDQUOT: "free some space in your quota or choose another {where}",
    errno.EFBIG: "the file system cannot hold a file this large; choose another {where}",
    errno.EROFS: "choose a {where} on a writable file system",
    errno.EISDIR: "remove that folder or choose another {where}",
    errno.ENOTDIR: "a file is in the way; choose another {where}",
    errno.EEXIST: "a file is in the way; choose another {where}",
    errno.EACCES: "choose a writable {where}",
    errno.EPERM: "choose a writable {where}",
    errno.ENOENT: "create its folder first or choose another {where}",
}
# Failures only writing can cause: atomic_path reports them as the output's even when the OSError names no file.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def _error(message: str, flag: Optional[str], param: Optional[str], label: Optional[str],
           default: str) -> StyleforgeError:
    """``message`` with ``{where}`` naming the output's setting: ``param`` (the error is about it; a command shows
    its flag, Python ``label`` or ``default``), else the literal ``flag``, else ``default``."""
    if param:
        return StyleforgeError(message.replace("{where}", "{name}"), param=param, label=label or default)
    return StyleforgeError(message.replace("{where}", flag or default))


def output_error(path: PathLike, e: BaseException, flag: Optional[str] = None, doing: str = "cannot write",
                 param: Optional[str] = None, label: Optional[str] = None) -> StyleforgeError:
    """One-line error for a failed write of ``path``: ``<path>: cannot write (no space left on device); free
    some disk space or choose another location`` ("location" becomes the setting ``param`` (``label`` in
    words), or ``flag``, e.g. ``--dest``, when given)."""
    code = getattr(e, "errno", None)
    remedy = _REMEDIES.get(code, "check the path and the disk, or choose another {where}")
    return _error(f"{path}: {doing} ({_cause(e)}); {remedy}", flag, param, label, "location")


def _cause(e: BaseException) -> str:
    """``No space left on device`` -> ``no space left on device``; the message itself for other exceptions."""
    text = getattr(e, "strerror", None) or str(e)
    text = " ".join(text.split()) or type(e).__name__
    return text[:1].lower() + text[1:]


def _is_write_failure(e: BaseException, *paths: Path) -> bool:
    """Whether an OSError raised while writing ``paths`` is about them (not, say, a source being read)."""
    if not isinstance(e, OSError):
        return False
    if e.errno in _WRITE_ERRNOS:
        return True
    names = {str(p) for p in paths}
    return any(f is not None and str(f) in names for f in (e.filename, e.filename2))


def file_mode() -> int:
    """Permissions of a newly created file under the process umask (what open() would give), e.g. 0o644."""
    global _FILE_MODE
    if _FILE_MODE is None:
        mask = os.umask(0)
        os.umask(mask)
        _FILE_MODE = 0o666 & ~mask
    return _FILE_MODE


@contextlib.contextmanager
def atomic_path(path: PathLike, flag: Optional[str] = None, param: Optional[str] = None,
                label: Optional[str] = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it to ``path``, on failure delete it.

    OSErrors of the write itself (full disk, quota, read-only file system, a folder at ``path``, no permission)
    become one :func:`output_error` line (naming ``param``/``label`` or ``flag``); others (e.g. a download failing
    inside the block) pass through.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():  # checked first: os.replace would refuse only after all the work
        raise output_error(path, IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR)), flag, param=param,
                           label=label)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as e:
        raise output_error(parent, e, flag, doing="cannot write here", param=param, label=label) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, file_mode())  # mkstemp makes 0600 files; results should be as readable as open()'s
        os.replace(tmp_path, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        if _is_write_failure(e, tmp_path, path):
            raise output_error(path, e, flag, param=param, label=label) from None
        raise


def ensure_outdir(outdir: PathLike, flag: Optional[str] = None, param: Optional[str] = None,
                  label: Optional[str] = None) -> Path:
    """Create ``outdir`` and check that it is writable, with a one-line error otherwise (naming the setting
    ``param``/``label`` or ``flag``, e.g. ``--outdir``, when given; else only the path)."""
    outdir = Path(outdir)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _error(f"{outdir}: cannot create output folder ({_cause(e)}); choose another {{where}}", flag, param,
                     label, "output folder") from None
    if not os.access(outdir, os.W_OK | os.X_OK):
        raise _error(f"{outdir}: output folder is not writable; choose another {{where}}", flag, param, label,
                     "output folder")
    return outdir


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGINT, raised in the main thread inside :func:`cleanup_on_signals` (a KeyboardInterrupt, so
    that ``except Exception`` blocks let it through and ``finally`` blocks and the atomic writers clean up)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.exit_code = 128 + signum  # what a shell reports for a process killed by that signal: 143, 130

    def __str__(self) -> str:
        return "interrupted (Ctrl-C)" if self.signum == signal.SIGINT else f"terminated ({signal.Signals(self.signum).name})"


@contextlib.contextmanager
def cleanup_on_signals(note: str = "") -> Iterator[None]:
    """Run the block so that SIGTERM and SIGINT stop it with :class:`Terminated`; temporary outputs are removed
    on the way out, then the signal ends as ``StyleforgeError("terminated (SIGTERM); <note>")`` with exit code
    128 + signal number (one line from the CLIs). Further signals are ignored while that cleanup runs, and a
    signal the process was told to ignore (SIGINT under ``nohup``) stays ignored. Only in the main thread
    (elsewhere the block just runs)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = [s for s in (signal.SIGTERM, signal.SIGINT) if signal.getsignal(s) not in (signal.SIG_IGN, None)]

    def handler(signum, frame):
        for s in sigs:
            signal.signal(s, signal.SIG_IGN)
        raise Terminated(signum)

    previous = {s: signal.signal(s, handler) for s in sigs}
    try:
        yield
    except Terminated as e:
        err = StyleforgeError(f"{e}; {note}" if note else str(e))
        err.exit_code = e.exit_code
        raise err from None
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def save_image(img, path: PathLike) -> Path:
    """Save a uint8 HWC (or HW) numpy array as PNG, atomically."""
    import PIL.Image

    path = Path(path)
    mode = "L" if img.ndim == 2 or img.shape[2] == 1 else ("RGBA" if img.shape[2] == 4 else "RGB")
    arr = img[:, :, 0] if img.ndim == 3 and img.shape[2] == 1 else img
    with atomic_path(path) as tmp:
        try:
            PIL.Image.fromarray(arr, mode if mode != "L" else None).save(tmp, format="PNG")
        except OSError as e:  # PIL's encoder errors too (no errno): still a failed write of this image
            raise output_error(path, e) from None
    return path


def save_npz(path: PathLike, **arrays) -> Path:
    """Save arrays to an .npz file atomically."""
    import numpy as np

    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return path


def save_json(path: PathLike, obj) -> Path:
    import json

    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    return path


def finished_record(record: PathLike, *outputs: PathLike) -> Optional[dict]:
    """How resumable batch tools tell a finished item: the JSON object in ``record`` (written last, after the
    item's ``outputs``) when it and every output are files; None when any is missing or the record is not a
    readable JSON object (the item is then done again)."""
    import json

    if not all(Path(p).is_file() for p in (record, *outputs)):
        return None
    try:
        obj = json.loads(Path(record).read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


class NpzStream:
    """An ``.npz`` written array by array, each array block by block, so that memory does not grow with its
    size: one uncompressed ``<name>.npy`` member per array, as ``np.savez`` lays it out (``np.load`` reads it).
    Made by :func:`npz_stream`."""

    def __init__(self, zf: zipfile.ZipFile):
        self._zf = zf
        self._member = None
        self._left = 0

    def begin(self, name: str, shape: Tuple[int, ...], dtype) -> None:
        """Start array ``name``; exactly ``prod(shape)`` values must follow, in C order, through :meth:`write`."""
        self.end()
        self._dtype = np.dtype(dtype)
        self._left = int(np.prod(shape)) * self._dtype.itemsize
        self._member = self._zf.open(name + ".npy", "w", force_zip64=self._left > (1 << 31) - (1 << 16))
        np.lib.format.write_array_header_1_0(self._member, {
            "descr": np.lib.format.dtype_to_descr(self._dtype), "fortran_order": False, "shape": tuple(shape)})

    def write(self, block) -> None:
        data = np.ascontiguousarray(block, dtype=self._dtype)
        if data.nbytes > self._left:
            raise ValueError("more values than the array's shape holds")
        self._member.write(memoryview(data).cast("B"))
        self._left -= data.nbytes

    def end(self) -> None:
        if self._member is not None:
            member, self._member = self._member, None
            member.close()
            if self._left:
                raise ValueError("an array of the .npz ended before its shape was filled")


@contextlib.contextmanager
def npz_stream(path: Union[str, os.PathLike]) -> Iterator[NpzStream]:
    """Write an .npz through :class:`NpzStream`, atomically (temporary name, renamed when the block ends)."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        stream = NpzStream(zf)
        try:
            yield stream
            stream.end()  # checks that the last array is complete
        finally:
            stream._member, member = None, stream._member
            if member is not None:  # left open by a failure (zipfile cannot close with a member open)
                member.close()
