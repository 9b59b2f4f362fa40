"""Failed writes (full disk, a folder in the way, no permission) and signals: one line naming the path and the
cause, no temporary file left behind, no partial output; messages name paths (or the command's own flag)."""

from __future__ import annotations

import errno
import os
import signal
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner

from conftest import assert_one_line_error, tiny_generator
from styleforge.commands.convert import convert_cmd
from styleforge.commands.dataset import dataset_tool_cmd
from styleforge.errors import StyleforgeError
from styleforge.networks.checkpoint import save_networks
from styleforge.utils import fileio
from styleforge.utils.fileio import atomic_path, ensure_outdir, save_image, save_json, save_npz

def _invoke(cmd, args):
    return CliRunner().invoke(cmd, [str(a) for a in args])


def _everything(folder: Path):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def _image_folder(root: Path, n: int = 12, size: int = 32) -> Path:
    rng = np.random.RandomState(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        PIL.Image.fromarray(rng.randint(0, 255, (size, size, 3), dtype=np.uint8)).save(root / f"{i:03d}.png")
    return root


class _FullDisk:
    """A file object that takes ``budget`` bytes and then fails every write with ENOSPC, as a full disk does
    (it stays full: the zip's central directory, written on close, fails too)."""

    def __init__(self, f, budget: int):
        self._f, self._left = f, budget

    def write(self, data) -> int:
        if len(data) > self._left:
            self._left = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._left -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)


# ---------------------------------------------------------------------------------------------------------------------
# The atomic writers.


def test_atomic_writers_turn_a_full_disk_into_one_line_and_remove_their_temp_file(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "savez", full)
    with pytest.raises(StyleforgeError) as e:
        save_npz(tmp_path / "ws.npz", w=np.zeros(3))
    assert str(e.value) == (f"{tmp_path / 'ws.npz'}: cannot write (no space left on device); "
                            "free some disk space or choose another location")
    monkeypatch.setattr(PIL.Image.Image, "save", full)
    with pytest.raises(StyleforgeError, match=r"seed0000\.png: cannot write \(no space left on device\)"):
        save_image(np.zeros((4, 4, 3), np.uint8), tmp_path / "seed0000.png")
    assert _everything(tmp_path) == []


def test_atomic_path_reports_a_folder_in_the_way_before_writing(tmp_path):
    (tmp_path / "out.json").mkdir()
    with pytest.raises(StyleforgeError) as e:
        save_json(tmp_path / "out.json", {"a": 1})
    assert str(e.value) == f"{tmp_path / 'out.json'}: cannot write (is a directory); remove that folder or choose another location"
    with pytest.raises(StyleforgeError, match="choose another --dest"):
        with atomic_path(tmp_path / "out.json", flag="--dest"):
            raise AssertionError("not reached: checked before any work")
    assert _everything(tmp_path) == ["out.json"]


def test_atomic_path_names_the_folder_it_cannot_write_in(tmp_path, monkeypatch):
    def denied(*args, dir=None, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.path.join(dir, "x"))

    monkeypatch.setattr(tempfile, "mkstemp", denied)  # a read-only folder (root ignores permission bits)
    with pytest.raises(StyleforgeError) as e:
        save_json(tmp_path / "a.json", {})
    assert str(e.value) == f"{tmp_path}: cannot write here (permission denied); choose a writable location"


def test_atomic_path_passes_other_errors_through_and_still_cleans_up(tmp_path):
    # e.g. a download failing inside the block: not a write error of the output, so not reported as one
    with pytest.raises(ConnectionResetError):
        with atomic_path(tmp_path / "model.pkl") as tmp:
            tmp.write_bytes(b"partial")
            raise ConnectionResetError(errno.ECONNRESET, "connection reset by peer")
    assert _everything(tmp_path) == []


def test_ensure_outdir_names_the_path_not_a_flag_unless_told(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StyleforgeError) as e:
        ensure_outdir(tmp_path / "file" / "out")
    assert "--outdir" not in str(e.value) and str(tmp_path / "file" / "out") in str(e.value)
    assert "choose another output folder" in str(e.value)
    with pytest.raises(StyleforgeError, match="choose another -d/--dest"):
        ensure_outdir(tmp_path / "file" / "out", flag="-d/--dest")


def test_write_errors_can_be_about_a_setting_which_a_command_names_by_its_flag(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StyleforgeError) as e:
        ensure_outdir(tmp_path / "file" / "out", param="dest")
    assert e.value.param == "dest" and str(e.value).endswith("; choose another output folder")
    assert e.value.render({"dest": "-d/--dest"}).endswith("; choose another -d/--dest")
    (tmp_path / "out.json").mkdir()
    with pytest.raises(StyleforgeError) as e:
        with atomic_path(tmp_path / "out.json", param="outdir"):
            raise AssertionError("not reached")
    assert str(e.value).endswith("remove that folder or choose another location")
    assert e.value.render({"outdir": "--outdir"}).endswith("remove that folder or choose another --outdir")


def test_finished_record_needs_the_record_and_every_output(tmp_path):
    from styleforge.utils.fileio import finished_record

    rec, out = tmp_path / "done.json", tmp_path / "w.npz"
    assert finished_record(rec, out) is None
    rec.write_text('{"settings": {"space": "w"}}')
    assert finished_record(rec, out) is None  # an output is missing
    out.write_bytes(b"x")
    assert finished_record(rec, out) == {"settings": {"space": "w"}}
    for text in ("{not json", "[1, 2]", ""):  # a half-written or foreign record: not finished
        rec.write_text(text)
        assert finished_record(rec, out) is None


def test_cleanup_on_signals_turns_sigterm_into_an_error_with_exit_code_143():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(StyleforgeError) as e:
        with fileio.cleanup_on_signals("nothing was written to out.zip"):
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(60)  # interrupted by the handler's exception (guard only; never waited for)
            finally:
                # cleanup runs with further signals ignored
                assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    assert str(e.value) == "terminated (SIGTERM); nothing was written to out.zip" and e.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is before
    # a signal the process was told to ignore stays ignored (SIGINT under nohup)
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with fileio.cleanup_on_signals():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, old)


# ---------------------------------------------------------------------------------------------------------------------
# Through the commands: dataset_tool (zip and folder output), convert, generate.


@pytest.mark.parametrize("kind", ["zip", "folder"])
def test_dataset_tool_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, kind):
    src = _image_folder(tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    if kind == "zip":  # the zip's file object runs out of space after ~4 images, and stays full for its close
        real_init = zipfile.ZipFile.__init__

        def init(self, file, mode="r", *args, **kwargs):
            real_init(self, file, mode, *args, **kwargs)
            if mode == "w":
                self.fp = _FullDisk(self.fp, 4 * 3200)

        monkeypatch.setattr(zipfile.ZipFile, "__init__", init)
        dest = out / "d.zip"
    else:
        real_write = Path.write_bytes
        budget = [4 * 3200]

        def write_bytes(self, data):
            if len(data) > budget[0]:
                real_write(self, data[:budget[0]])  # what fitted
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            budget[0] -= len(data)
            return real_write(self, data)

        monkeypatch.setattr(Path, "write_bytes", write_bytes)
        dest = out / "d"
    r = _invoke(dataset_tool_cmd, ["--source", src, "--dest", dest])
    line = assert_one_line_error(r, f"{dest}: cannot write (no space left on device)", "--dest")
    assert "--outdir" not in line and "During handling" not in r.output
    assert _everything(out) == []  # no temp file or folder, no partial dataset


def test_dataset_tool_messages_name_dest_not_outdir(tmp_path, monkeypatch):
    src = _image_folder(tmp_path / "src", n=2)

    def denied(*args, dir=None, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.path.join(dir, "x"))

    monkeypatch.setattr(tempfile, "mkstemp", denied)  # zip output: the atomic writer's temp file
    monkeypatch.setattr(tempfile, "mkdtemp", denied)  # folder output: the temp folder
    for dest in (tmp_path / "o.zip", tmp_path / "o"):
        r = _invoke(dataset_tool_cmd, ["--source", src, "--dest", dest])
        line = assert_one_line_error(r, f"{tmp_path}: cannot write here (permission denied)", "--dest")
        assert "--outdir" not in line


def test_convert_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    import safetensors.torch
    from safetensors import SafetensorError

    net = save_networks(tmp_path / "g.safetensors", {"G_ema": tiny_generator()})
    out = tmp_path / "out"
    out.mkdir()

    def full(tensors, filename, metadata=None):  # as the Rust writer fails on a full disk, after a partial write
        Path(filename).write_bytes(b"\0" * 100)
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    r = _invoke(convert_cmd, [net, out / "x.safetensors"])
    line = assert_one_line_error(r, f"{out / 'x.safetensors'}: cannot write (no space left on device)")
    assert "--outdir" not in line and "SafetensorError" not in r.output
    assert _everything(out) == []


def test_convert_into_a_missing_folder_names_the_path_not_outdir(tmp_path):
    net = save_networks(tmp_path / "g.safetensors", {"G_ema": tiny_generator()})
    r = _invoke(convert_cmd, [net, tmp_path / "nowhere" / "x.safetensors"])
    line = assert_one_line_error(r, f"{tmp_path / 'nowhere'}: cannot write here (no such file or directory)")
    assert "--outdir" not in line


def test_generate_onto_a_folder_is_one_line(tmp_path):
    from styleforge.commands.generate import generate_cmd

    net = save_networks(tmp_path / "g.safetensors", {"G_ema": tiny_generator()})
    out = tmp_path / "out"
    (out / "seed0001.png").mkdir(parents=True)  # e.g. an earlier mistake
    r = _invoke(generate_cmd, ["--network", net, "--seeds", "0-2", "--outdir", out])
    assert_one_line_error(r, f"{out / 'seed0001.png'}: cannot write (is a directory)", exit_code=None)
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())
