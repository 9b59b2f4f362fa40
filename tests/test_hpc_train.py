"""Training through styleforge submit's tasks: a 2-process (torchrun, gloo, CPU) job preempted the way SLURM does
it (USR2 to every process of the job) is stopped by its task, requeued with --resume auto by submitit, and ends with
exactly the weights of an uninterrupted run."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from train_data import ROOT, SUB_ENV, assert_bit_identical, data, one_thread_module  # noqa: F401 - fixtures

pytest.importorskip("submitit", reason="the hpc extra (submitit) runs the jobs")


def _children(pid: int) -> list:
    out = []
    for f in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            out += [int(c) for c in f.read_text().split()]
    return out


def _tree(pid: int) -> list:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += _children(p)
    return out


def test_two_process_training_preempted_requeued_and_resumed_ends_bit_identical(data, tmp_path, monkeypatch):
    from styleforge.hpc import CommandTask, JobSpec, plan_tasks, submit
    from styleforge.train.state import load_state_file

    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONPATH"):
        monkeypatch.setenv(k, SUB_ENV[k])
    args = ["--data", str(data["digits"]), "--cfg", "cpu", "--cbase", "256", "--cmax", "32", "--batch", "8",
            "--kimg", "0.096", "--kimg-per-tick", "0.016", "--snap", "100", "--workers", "0", "--deterministic",
            "--device", "cpu", "--seed", "5"]
    spec = JobSpec(executor="local", gpus_per_node=2, time_min=30, logdir=str(tmp_path / "jobs"))
    (task,) = plan_tasks(spec, "train", ["--outdir", str(tmp_path / "ref")] + args)
    assert task.launcher == "torchrun" and task.nproc_per_node == 2
    task()  # uninterrupted, in this process (the task runs torchrun as a child)
    (ref_state,) = (tmp_path / "ref").glob("*/resume-state.pt")
    assert load_state_file(ref_state)["progress"]["cur_nimg"] == 96

    out = tmp_path / "pre"
    tasks = plan_tasks(spec, "train", ["--outdir", str(out)] + args)
    res = submit(spec, tasks, "train", wait=False)
    (job_id,) = res.job_ids
    controller = int(job_id)
    deadline = time.time() + 240
    while time.time() < deadline:
        found = list(out.glob("*/stats.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= 1:
            break
        time.sleep(0.05)
    else:
        pytest.fail("training did not reach its first tick")
    # SLURM signals every process of the job step: the submitit task, torchrun and the ranks
    for pid in _tree(controller)[1:]:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGUSR2)
    (job,) = res.jobs
    deadline = time.time() + 300
    while not job.done() and time.time() < deadline:
        time.sleep(0.2)
    log = Path(job.paths.stdout).read_text()
    assert job.done(), log[-3000:]
    result = job.result()
    assert result["returncode"] == 0 and result["argv"][-2:] == ["--resume", "auto"], result
    runs = [line for line in log.splitlines() if line.startswith("styleforge task:")]
    assert len(runs) == 2 and "--resume auto" in runs[1] and "--resume" not in runs[0], log[-3000:]
    (run_dir,) = out.iterdir()
    train_log = (run_dir / "log.txt").read_text()
    assert "SIGTERM received" in train_log and "resuming from" in train_log, train_log
    assert_bit_identical(ref_state, run_dir / "resume-state.pt")
