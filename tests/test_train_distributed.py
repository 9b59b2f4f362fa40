"""Multi-process training (styleforge.train.distributed): torchrun ranks hold identical weights, only rank 0
writes, SIGTERM to the agent or the whole job saves the state and --resume auto continues."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import cli_message
from train_data import ROOT, SUB_ENV, TINY, data, one_thread_module, train_tiny  # noqa: F401 - fixtures

TORCHRUN_DRIVER = r'''
import builtins, hashlib, json, os, sys, tempfile
import torch
rank = int(os.environ["RANK"])
outdir, result = sys.argv[1], sys.argv[2]
writes = []
if rank != 0:  # record every file this process creates, opens for writing or renames
    _open = builtins.open
    def spy_open(f, mode="r", *a, **k):
        if any(ch in mode for ch in "wax+"):
            writes.append(str(f))
        return _open(f, mode, *a, **k)
    builtins.open = spy_open
    for name in ("replace", "rename", "mkdir", "makedirs"):
        def spy(*a, _orig=getattr(os, name), _name=name, **k):
            writes.append(f"{_name}:{a[0]}")
            return _orig(*a, **k)
        setattr(os, name, spy)
    _mkstemp = tempfile.mkstemp
    def spy_mkstemp(*a, **k):
        writes.append("mkstemp:" + str(k.get("dir")))
        return _mkstemp(*a, **k)
    tempfile.mkstemp = spy_mkstemp
from styleforge.train.loop import train
digests = []
def cb(tr):
    h = hashlib.sha256()
    for m in (tr.G, tr.D, tr.G_ema):
        for t in list(m.parameters()) + list(m.buffers()):
            h.update(t.detach().cpu().numpy().tobytes())
    for opt in tr.opt.values():
        for s in opt.state.values():
            for v in s.values():
                h.update(v.detach().cpu().numpy().tobytes())
    h.update(tr.loss.pl_mean.numpy().tobytes())
    h.update(tr.augment_pipe.p.numpy().tobytes())
    digests.append(h.hexdigest())
r = train(outdir=outdir, data=os.environ["DATA"], cfg="cpu", batch=8, kimg=0.048, kimg_per_tick=0.016, snap=2,
          workers=1, overrides=json.loads(os.environ["TINY"]), step_callback=cb, seed=3,
          target=0.2, mirror=True)
mine = [w for w in writes if outdir in w]
payload = json.dumps({"digests": digests, "writes": mine, "run_dir": str(r.run_dir)})
with builtins.open(result + f".rank{rank}", "w") as f:
    f.write(payload)
'''


def _process_tree(pid: int) -> list:
    """``pid`` and all its descendants (Linux /proc)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for f in Path(f"/proc/{p}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in f.read_text().split()]
    return out


def _signal_tree(pid: int, sig: int) -> None:
    for p in _process_tree(pid):
        with contextlib.suppress(OSError):
            os.kill(p, sig)


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _start_job(cmd, env) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _finish_job(proc: subprocess.Popen, timeout: float) -> subprocess.CompletedProcess:
    """Wait for ``proc``; past ``timeout`` seconds kill it and all its descendants (torchrun starts each rank in a
    session of its own) and fail: a hung rank or data-loader worker fails the test instead of hanging the suite."""
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _signal_tree(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"{proc.args[2:4]} did not exit within {timeout} s:\n{stdout[-2000:]}\n{stderr[-2000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_torchrun_two_processes(data, tmp_path):
    """Two ranks with a data-loader worker each: identical weights, only rank 0 writes, and the job exits."""
    driver = tmp_path / "driver.py"
    driver.write_text(TORCHRUN_DRIVER)
    out = tmp_path / "out"
    env = {**SUB_ENV, "DATA": str(data["digits"]), "TINY": json.dumps(TINY)}
    proc = _finish_job(_start_job(TORCHRUN + [str(driver), str(out), str(tmp_path / "result")], env), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = json.loads((tmp_path / "result.rank0").read_text())
    r1 = json.loads((tmp_path / "result.rank1").read_text())
    assert len(r0["digests"]) == 6 and r0["digests"] == r1["digests"]  # identical weights after every step
    assert r1["writes"] == []  # rank 1 wrote nothing into the run folder
    run_dirs = list(out.iterdir())
    assert len(run_dirs) == 1 and run_dirs[0].name == "00000-digits16-mirror-cpu-kimg0.048-batch8-target0.2"
    opts = json.loads((run_dirs[0] / "training_options.json").read_text())
    assert opts["gpus"] == 2 and opts["batch_gpu"] == 4
    two = [json.loads(x) for x in (run_dirs[0] / "stats.jsonl").read_text().splitlines()]
    # The same run in one process, in 2 accumulation rounds of 4 (so that minibatch-stddev groups match): same
    # init, latents, data order and gradient average; only the per-process noise/mixing draws differ.
    one = train_tiny(outdir=str(tmp_path / "single"), data=str(data["digits"]), kimg=0.048, seed=3, target=0.2,
                 mirror=True, overrides={**TINY, "batch_gpu": 4})
    one = [json.loads(x) for x in (one.run_dir / "stats.jsonl").read_text().splitlines()]
    assert len(one) == len(two)
    for k in ("Loss/G/loss", "Loss/D/loss", "Loss/scores/real", "Loss/r1_penalty"):
        a, b = one[0][k]["mean"], two[0][k]["mean"]
        assert math.isfinite(b) and abs(a - b) < 0.1 * abs(a) + 0.01, (k, a, b)
    for line in two:
        assert all(math.isfinite(v["mean"]) for k, v in line.items() if k.startswith("Loss/"))
    assert one[0]["Loss/G/loss"]["num"] == two[0]["Loss/G/loss"]["num"]  # every sample reported once


# Each rank through a shell that records how it exited, its output in files of its own (torchrun's own output is
# interleaved with the ranks' otherwise). The shell traps the signals so that only the rank reacts to them.
RANK_SHELL = 'trap : TERM INT; "$0" "$@" >"$RANK_DIR/out$RANK" 2>"$RANK_DIR/err$RANK"; echo $? >"$RANK_DIR/rc$RANK"'


@pytest.mark.parametrize("to", ["agent", "job"])
def test_torchrun_sigterm_saves_state_and_resumes(data, tmp_path, to):
    """SIGTERM to torchrun alone (it forwards it to each rank and its loader workers) or to every process of the
    job (SLURM preemption): each rank finishes the step and exits 0 without a traceback, rank 0 saved the state,
    and --resume auto continues the run. (torchrun itself then reports the signal with a traceback and exits 1,
    whatever the script does: that is its agent's behaviour, not asserted here.)"""
    out, ranks = tmp_path / "o", tmp_path / "ranks"
    ranks.mkdir()
    args = ["--outdir", str(out), "--data", str(data["digits"]), "--cfg", "cpu", "--cbase", "256", "--cmax", "32",
            "--batch", "8", "--kimg-per-tick", "0.016", "--snap", "100", "--workers", "1", "--gpus", "2"]
    env = {**SUB_ENV, "RANK_DIR": str(ranks)}
    # torchrun SIGKILLs ranks still finishing after --shutdown-timeout (30 s): on a loaded 2-core machine finishing
    # the step and saving took longer once, so the test gives the ranks the time a large network would need
    torchrun = TORCHRUN[:-2] + ["--shutdown-timeout", "120"] + TORCHRUN[-2:]
    proc = _start_job(torchrun + ["--no-python", "bash", "-c", RANK_SHELL, sys.executable,
                                  str(ROOT / "scripts" / "train.py"), "--kimg", "1"] + args, env)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        found = list(out.glob("*/stats.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before the signal"
    if to == "agent":
        os.kill(proc.pid, signal.SIGTERM)
    else:
        _signal_tree(proc.pid, signal.SIGTERM)
    _finish_job(proc, timeout=120)
    for r in (0, 1):
        err = (ranks / f"err{r}").read_text()
        rc = ranks / f"rc{r}"
        assert rc.is_file(), f"rank {r} was killed (by torchrun, past its shutdown timeout?): {err[-2000:]}"
        assert rc.read_text().strip() == "0", (r, err[-2000:])
        assert "Traceback" not in err, (r, err[-2000:])
    assert "stopped at" in (ranks / "out0").read_text()
    (run_dir,) = out.iterdir()
    assert "SIGTERM received" in (run_dir / "log.txt").read_text()
    from styleforge.train.state import load_state_file

    stopped = load_state_file(run_dir / "resume-state.pt")["progress"]["cur_nimg"]
    assert 0 < stopped < 1000
    kimg = (stopped + 16) / 1000  # two more steps
    res = _finish_job(_start_job(TORCHRUN + [str(ROOT / "scripts" / "train.py"), "--kimg", str(kimg),
                                             "--resume", "auto"] + args, SUB_ENV), timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert [p.name for p in out.iterdir()] == [run_dir.name]  # continued in the same run folder
    assert load_state_file(run_dir / "resume-state.pt")["progress"]["cur_nimg"] == stopped + 16
    log = (run_dir / "log.txt").read_text()
    assert f"resuming from {run_dir / 'resume-state.pt'} at {stopped / 1000:g} kimg" in log


def test_spawned_ranks_report_through_the_callback_and_errors_name_their_setting(data, tmp_path, monkeypatch):
    """``gpus=N`` without torchrun spawns the ranks (CUDA in practice; here on CPU with gloo): rank 0's log lines
    reach the caller's callback, the result comes back, and a bad setting is one StyleforgeError in the caller
    that still names its setting (the train command shows it as its flag)."""
    import dataclasses

    from styleforge.commands.train import train_cmd
    from styleforge.errors import StyleforgeError
    from styleforge.train.distributed import spawn_training
    from styleforge.train.presets import TrainSettings

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the ranks' threads (two ranks on two cores)
    s = TrainSettings(cfg="cpu", batch=8, kimg=0.016, kimg_per_tick=0.016, snap=1, workers=0, device="cpu")
    run = dict(outdir=str(tmp_path / "o"), data=str(data["digits"]), overrides=TINY)
    events = []
    r = spawn_training(2, dict(run, settings=s), events.append)
    assert r["done"] and r["cur_nimg"] == 16 and r["options"]["gpus"] == 2 and Path(r["snapshot"]).is_file()
    assert any(e.kind == "note" and str(e.message).startswith("tick 0") for e in events)
    with pytest.raises(StyleforgeError) as e:
        spawn_training(2, dict(run, settings=dataclasses.replace(s, cbase=3)))
    assert e.value.param == "cbase" and cli_message(e.value, train_cmd).startswith("--cbase 3: must be between")
