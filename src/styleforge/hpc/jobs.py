"""Batch jobs on a SLURM cluster (or this machine) through submitit: a job spec, the tasks a command becomes, and
the sbatch script they are submitted with.

How a command becomes tasks (:func:`plan_tasks`):

- a batch command (:data:`SHARDABLE`: generate, align, project, edit, calc-metrics) with ``array=n`` becomes n
  tasks, task i running the command with ``--shard i/n``: the same contiguous, balanced cut of the sorted work
  items that ``--shard`` (or a SLURM array's variables) gives, so n tasks write exactly the files one run would.
  An array larger than the work (:func:`count_work`) is refused, and so is an array of any other command;
- ``train`` on several GPUs or nodes becomes one task per node, each a torchrun agent with one process per GPU
  (:func:`~styleforge.hpc.slurm.torchrun_args`: ``--standalone`` on one node, a c10d rendezvous on the job's
  first node otherwise);
- anything else is one task.

Each task is a :class:`CommandTask`: it runs ``python -m styleforge.cli <command> ...`` (or torchrun) as a child
process, so the task's log holds the command's own output. Preemption and timeouts: SLURM sends USR2 90 s before
the end (``--signal=USR2@90``); submitit calls :meth:`CommandTask.checkpoint`, which sends the command SIGTERM
(training finishes its step and saves ``resume-state.pt``; the batch commands only lose the item in flight, as
their outputs are atomic), waits for it, and hands back the task to requeue: training with ``--resume auto``,
generate and edit with ``--skip-existing`` (align and project skip finished outputs already). submitit requeues a job at
most ``max_requeues`` times after a timeout (preemptions do not count).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..errors import StyleforgeError
from ..utils.progress import Callback, reporter

SHARDABLE = ("generate", "align", "project", "edit", "calc-metrics")
"""Commands whose work is a list of items cut by ``--shard i/n`` (seeds, photos, targets, latents, metrics)."""

SKIP_FLAGS = {"generate": "--skip-existing", "edit": "--skip-existing"}
"""The flag that makes a requeued batch command pass over finished outputs (align and project do by default)."""

EXECUTORS = ("slurm", "local")


def command_name(name: str) -> str:
    """``calc_metrics`` -> ``calc-metrics`` (the console command's spelling)."""
    return str(name).strip().replace("_", "-")


@dataclass(frozen=True)
class JobSpec:
    """What to ask the scheduler for. ``array``: number of array tasks (shards) of a batch command; ``nodes`` and
    ``gpus_per_node``: a multi-process training job (torchrun, one agent per node); ``time_min``: wall time in
    minutes; ``mem``: sbatch's ``--mem`` (``64G``); ``logdir``: submitit's folder (pickled tasks, results, one log
    per task: ``<logdir>/<job id>/``; on a cluster it must be on a filesystem every node sees).
    ``signal_delay_s``: how long before the end SLURM signals the job (submitit's default, 90 s; the training
    state is saved in that time); ``max_requeues``: how many timeouts a job is requeued after."""

    executor: str = "slurm"
    partition: Optional[str] = None
    array: Optional[int] = None
    nodes: int = 1
    gpus_per_node: Optional[int] = None
    gpus_per_task: Optional[int] = None
    cpus_per_task: Optional[int] = None
    time_min: int = 60
    mem: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    logdir: str = "styleforge-jobs"
    signal_delay_s: int = 90
    max_requeues: int = 3
    array_parallelism: Optional[int] = None

    def check(self) -> "JobSpec":
        """The spec with its values checked (one error naming the setting)."""
        if self.executor not in EXECUTORS:
            raise StyleforgeError(f"use {' or '.join(EXECUTORS)}", param="executor", value=repr(self.executor))
        for name in ("array", "gpus_per_node", "gpus_per_task", "cpus_per_task", "array_parallelism"):
            v = getattr(self, name)
            if v is not None and int(v) < 1:
                raise StyleforgeError("must be at least 1", param=name, value=v)
        if self.nodes < 1:
            raise StyleforgeError("must be at least 1", param="nodes", value=self.nodes)
        if self.time_min < 1:
            raise StyleforgeError("must be at least one minute", param="time_min", label="time", value=self.time_min)
        if self.executor == "local" and self.nodes > 1:
            raise StyleforgeError(f"{{name}} {self.nodes}: the local executor runs on this machine only; use "
                                  "--executor slurm on a cluster", param="nodes")
        if self.signal_delay_s >= self.time_min * 60:
            raise StyleforgeError(f"{{name}} {self.time_min} min leaves no time before the preemption signal "
                                  f"({self.signal_delay_s} s before the end); ask for more", param="time_min",
                                  label="time")
        return self


# ---------------------------------------------------------------------------------------------------------------------
# The work of a batch command, counted before anything is submitted


def _rows(path) -> int:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as f:
            if "w" not in f.files:
                raise StyleforgeError(f"{path}: no array 'w' in it (expected latents [N, num_ws, w_dim])")
            return int(f["w"].shape[0])
    except (OSError, ValueError) as e:
        raise StyleforgeError(f"{path}: cannot read latents ({type(e).__name__}: {e})") from None


def count_work(command: str, params: Mapping[str, Any]) -> int:
    """How many items a batch command's run would process, from its parsed settings (the library's argument
    names, as the command-line tools name their values): seeds or latent rows (generate, edit), photos (align),
    targets (project), metrics (calc-metrics). This is what an array is cut into."""
    command = command_name(command)
    if command == "generate":
        w = params.get("projected_w") or params.get("w_file")
        if w:
            return _rows(w)
        return len(params.get("seeds") or ())
    if command == "edit":
        return sum(_rows(f) for f in params.get("w_files") or ()) + len(params.get("seeds") or ())
    if command == "align":
        from ..align.batch import list_sources

        items, _ = list_sources(params.get("sources") or (), exclude=params.get("outdir"))
        return len(items)
    if command == "project":
        from ..project.batch import find_targets

        return len(find_targets(params["target"], params["outdir"]))
    if command == "calc-metrics":
        metrics = params.get("metrics") or ""
        names = metrics if isinstance(metrics, (list, tuple)) else str(metrics).split(",")
        return len([m for m in names if str(m).strip()])
    raise StyleforgeError(f"{command} cannot be sharded; the batch commands are {', '.join(SHARDABLE)}",
                          param="command")


# ---------------------------------------------------------------------------------------------------------------------
# Tasks


def _without_flag(argv: Sequence[str], flag: str, takes_value: bool = True) -> List[str]:
    """``argv`` without ``flag`` (``--flag v`` and ``--flag=v``)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == flag:
            skip = takes_value
            continue
        if a.startswith(flag + "="):
            continue
        out.append(a)
    return out


def _flag_value(argv: Sequence[str], flag: str) -> Optional[str]:
    """The value of ``--flag v`` / ``--flag=v`` in ``argv`` (the last one), else None."""
    value = None
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif a.startswith(flag + "="):
            value = a.split("=", 1)[1]
    return value


def has_flag(argv: Sequence[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def preemption_signal() -> signal.Signals:
    """The signal SLURM sends before the end (submitit's, USR2 unless ``SUBMITIT_PREEMPT_SIGNAL`` names another)."""
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    return getattr(signal, "SIG" + name, signal.SIGUSR2)


def _ignore_preemption_signal() -> None:  # in the child, before exec: SIG_IGN survives exec (a handler would not)
    signal.signal(preemption_signal(), signal.SIG_IGN)


def _exited(pid: int) -> bool:
    """Whether child ``pid`` has ended, without reaping it (so that no lock of Popen's is needed)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped already
        return True


@dataclass
class CommandTask:
    """One task of a job: ``styleforge <argv...>`` in a child process (``launcher="torchrun"``: under a torchrun
    agent, ``nproc_per_node`` processes on each of ``nnodes`` nodes). Called by submitit on the compute node;
    returns ``{"argv": ..., "returncode": 0}`` or raises a StyleforgeError naming the command and its exit code.

    The child ignores the preemption signal (SLURM sends it to every process of the job step; its default action
    would kill the command): the task's :meth:`checkpoint` turns it into a SIGTERM, which the commands handle."""

    argv: List[str]
    launcher: str = "python"
    nproc_per_node: int = 1
    nnodes: int = 1
    python: str = field(default_factory=lambda: sys.executable)
    stop_timeout_s: float = 80.0
    _proc: Optional[subprocess.Popen] = field(default=None, repr=False, compare=False)

    def command_line(self, env: Optional[Mapping[str, str]] = None) -> List[str]:
        """The child's command line (for torchrun, with the rendezvous of this job, read from ``env``)."""
        if self.launcher == "torchrun":
            from .slurm import torchrun_args

            return [self.python, "-m", "torch.distributed.run",
                    *torchrun_args(self.nproc_per_node, self.nnodes, env), "-m", "styleforge.cli", *self.argv]
        return [self.python, "-m", "styleforge.cli", *self.argv]

    def shell_line(self) -> str:
        """What the task runs, for people: ``styleforge generate ... --shard 0/4`` (``torchrun ...`` for training)."""
        if self.launcher == "torchrun":
            how = "--standalone" if self.nnodes == 1 else f"--nnodes {self.nnodes} <c10d rendezvous on the first node>"
            return (f"torchrun {how} --nproc_per_node {self.nproc_per_node} -m styleforge.cli "
                    + " ".join(shlex.quote(a) for a in self.argv))
        return "styleforge " + " ".join(shlex.quote(a) for a in self.argv)

    def __call__(self) -> Dict[str, Any]:
        cmd = self.command_line()
        sys.stdout.write(f"styleforge task: {shlex.join(cmd)}\n")
        sys.stdout.flush()
        self._proc = subprocess.Popen(cmd, preexec_fn=_ignore_preemption_signal)
        try:
            # Waiting without Popen.wait(): submitit's signal handler runs checkpoint() in this thread, and it
            # must be able to wait for the command while this frame is suspended (Popen.wait holds a lock).
            while not _exited(self._proc.pid):
                time.sleep(0.1)
            rc = self._proc.wait()
        except BaseException:  # cancelled (SIGINT) or killed: take the command down too, then go
            self._stop(timeout=10)
            raise
        finally:
            self._proc = None
        if rc != 0:
            raise StyleforgeError(f"'{self.shell_line()}' exited with code {rc}")
        return {"argv": list(self.argv), "returncode": rc}

    def _stop(self, timeout: float) -> None:
        """SIGTERM to the running command (training saves its state), then wait up to ``timeout`` s."""
        proc = self._proc
        if proc is None or _exited(proc.pid):
            return
        proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + timeout
        while not _exited(proc.pid) and time.monotonic() < end:
            time.sleep(0.1)

    def requeued(self) -> "CommandTask":
        """The task to run after a requeue: training continues its run (``--resume auto``), generate and edit get
        ``--skip-existing`` (align and project skip finished outputs by themselves)."""
        argv = list(self.argv)
        if argv and argv[0] == "train":
            argv = _without_flag(argv, "--resume") + ["--resume", "auto"]
        elif argv and argv[0] in SKIP_FLAGS and not has_flag(argv, SKIP_FLAGS[argv[0]]):
            argv.append(SKIP_FLAGS[argv[0]])
        return replace(self, argv=argv, _proc=None)

    def checkpoint(self, *args, **kwargs):
        """submitit's hook on preemption or timeout: stop the command (SIGTERM; it saves or finishes its item),
        then return the task to requeue (:meth:`requeued`)."""
        import submitit

        self._stop(self.stop_timeout_s)
        return submitit.helpers.DelayedSubmission(self.requeued())

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_proc"] = None  # a running process is not part of the task
        return state


def plan_tasks(spec: JobSpec, command: str, args: Sequence[str], work: Optional[int] = None) -> List[CommandTask]:
    """The tasks ``styleforge <command> <args>`` becomes under ``spec`` (see the module doc). ``work``: the number
    of items of a batch command (:func:`count_work`), checked against ``spec.array``."""
    spec = spec.check()
    command = command_name(command)
    args = list(args)
    if command == "train":
        if spec.array is not None:
            raise StyleforgeError(f"train cannot be sharded into an array; the batch commands are "
                                  f"{', '.join(SHARDABLE)} (train on several GPUs with --nodes / --gpus-per-node)",
                                  param="array")
        gpus = spec.gpus_per_node or spec.gpus_per_task or 1  # one SLURM task per node: the same here
        given = _flag_value(args, "--gpus")
        if given is not None and given != str(spec.nodes * gpus):
            raise StyleforgeError(f"train --gpus {given} does not match the {spec.nodes * gpus} GPU(s) asked for "
                                  f"({spec.nodes} node(s) x {gpus}); drop --gpus (torchrun's process count is used)",
                                  param="gpus_per_node")
        if spec.nodes > 1 or gpus > 1:
            return [CommandTask(["train", *args], launcher="torchrun", nproc_per_node=gpus, nnodes=spec.nodes)]
        return [CommandTask(["train", *args])]
    if spec.nodes > 1:
        raise StyleforgeError(f"{{name}} {spec.nodes}: only train runs across nodes; give a batch command an "
                              "--array instead", param="nodes")
    if spec.array is None:
        return [CommandTask([command, *args])]
    if command not in SHARDABLE:
        raise StyleforgeError(f"{command} cannot be sharded into an array; the batch commands are "
                              f"{', '.join(SHARDABLE)}", param="array")
    if has_flag(args, "--shard"):
        raise StyleforgeError("the command already has --shard; with {name} every task gets its own, so drop it",
                              param="array")
    if work is not None and spec.array > work:
        raise StyleforgeError(f"{{name}} {spec.array} is larger than the work: {command} has {work} item(s) here; "
                              f"use {{name}} {max(work, 1)} or fewer", param="array")
    n = spec.array
    return [CommandTask([command, *args, "--shard", f"{i}/{n}"]) for i in range(n)]


# ---------------------------------------------------------------------------------------------------------------------
# Submission


def _submitit():
    try:
        import submitit
    except ImportError:
        raise StyleforgeError("submitting jobs needs submitit: pip install 'styleforge[hpc]' (or: pip install "
                              "submitit)") from None
    return submitit


def slurm_parameters(spec: JobSpec, tasks: Sequence[CommandTask], name: str) -> Dict[str, Any]:
    """submitit's SLURM parameters for ``tasks`` (the sbatch flags): one SLURM task per node, GPUs and CPUs as
    asked, the preemption signal ``signal_delay_s`` before the end, and ``--requeue`` so that the job can go back
    to the queue after preemption."""
    p: Dict[str, Any] = dict(job_name=f"styleforge-{name}", time=int(spec.time_min), nodes=spec.nodes,
                             ntasks_per_node=1, signal_delay_s=spec.signal_delay_s,
                             additional_parameters={"requeue": True})
    for key in ("partition", "account", "qos", "cpus_per_task", "gpus_per_node", "gpus_per_task", "mem"):
        v = getattr(spec, key)
        if v is not None:
            p[key] = v
    if len(tasks) > 1:
        p["array_parallelism"] = spec.array_parallelism or len(tasks)
    return p


def job_folder(spec: JobSpec) -> Path:
    return Path(spec.logdir) / "%j"


def sbatch_script(spec: JobSpec, tasks: Sequence[CommandTask], name: str) -> str:
    """The sbatch script submitit submits for ``tasks`` (its own text, made by submitit's function), followed by
    one comment line per task saying what it runs."""
    _submitit()
    from submitit.slurm.slurm import _make_sbatch_string  # what SlurmExecutor writes, with the same parameters

    folder = job_folder(spec).absolute()
    python = tasks[0].python if tasks else sys.executable
    command = " ".join([shlex.quote(python), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    text = _make_sbatch_string(command=command, folder=folder, map_count=len(tasks) if len(tasks) > 1 else None,
                               **slurm_parameters(spec, tasks, name))
    return text.rstrip("\n") + "\n\n" + "\n".join(task_lines(tasks, spec)) + "\n"


def task_lines(tasks: Sequence[CommandTask], spec: JobSpec, shown: int = 3) -> List[str]:
    """Comment lines saying what the tasks run (submitit hands each task its command as a pickled callable):
    the first ``shown`` and the last of an array."""
    if len(tasks) == 1 and spec.nodes > 1:
        return [f"# each of the {spec.nodes} nodes (one SLURM task per node) runs: {tasks[0].shell_line()}"]
    lines = ["# what each task runs (submitit passes it to the task as a pickled callable):"]
    for i, t in enumerate(tasks):
        if i < shown or i == len(tasks) - 1:
            lines.append(f"# task {i}: {t.shell_line()}")
        elif i == shown:
            lines.append(f"# ... (tasks {shown} to {len(tasks) - 2} likewise)")
    return lines


@dataclass
class SubmitResult:
    job_ids: List[str]
    tasks: List[CommandTask]
    logdir: Path
    results: Optional[List[Any]] = None  # the local executor waits: each task's result
    jobs: List[Any] = field(default_factory=list, repr=False)  # submitit's Job objects


def make_executor(spec: JobSpec, tasks: Sequence[CommandTask], name: str):
    """submitit's executor for ``spec`` (SLURM, or this machine)."""
    submitit = _submitit()
    folder = job_folder(spec)
    if spec.executor == "local":
        ex = submitit.LocalExecutor(folder, max_num_timeout=spec.max_requeues)
        ex.update_parameters(timeout_min=spec.time_min, gpus_per_node=spec.gpus_per_node or 0, tasks_per_node=1,
                             signal_delay_s=spec.signal_delay_s)
        return ex
    try:
        ex = submitit.SlurmExecutor(folder, max_num_timeout=spec.max_requeues)
    except RuntimeError as e:  # no srun here
        raise StyleforgeError(f"cannot submit to SLURM from this machine ({e}); run styleforge submit on the "
                              "cluster's login node, or use --executor local") from None
    ex.update_parameters(**slurm_parameters(spec, tasks, name))
    return ex


def submit(spec: JobSpec, tasks: Sequence[CommandTask], name: str, wait: Optional[bool] = None,
           callback: Optional[Callback] = None) -> SubmitResult:
    """Submit ``tasks`` (one job, or one array job for several) and return the job ids. ``wait`` (default: for
    the local executor) waits for every task and returns their results; a failed task raises a StyleforgeError
    naming its log."""
    from ..utils.runtime import check_outdir

    rep = reporter(callback)
    check_outdir(spec.logdir)
    ex = make_executor(spec, tasks, name)
    with ex.batch():
        jobs = [ex.submit(t) for t in tasks]
    staging = job_folder(spec)  # submitit stages the pickles under the literal "%j" folder, then moves them
    if staging.is_dir() and not any(staging.iterdir()):
        staging.rmdir()
    res = SubmitResult([str(j.job_id) for j in jobs], list(tasks), Path(spec.logdir), jobs=list(jobs))
    rep.note(f"submitted {len(jobs)} task(s) of {name}: job {', '.join(res.job_ids)}; logs in {spec.logdir}")
    if wait if wait is not None else spec.executor == "local":
        res.results = []
        with rep.stage("tasks", total=len(jobs), unit="task") as advance:
            for j in jobs:
                try:
                    res.results.append(j.result())
                except Exception as e:  # submitit's FailedJobError / UncompletedJobError
                    raise StyleforgeError(f"task {j.job_id} failed: {_failure(e, Path(j.paths.stderr))}; its log: "
                                          f"{j.paths.stderr}") from None
                advance(1)
    return res


def _failure(e: BaseException, stderr: Path) -> str:
    """Why a task failed, in one line: the exception its traceback ends with (submitit's message holds it),
    and the command's own last ``error:`` line from the task's log."""
    import re

    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    raised = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception|Exit)\b.*?:", ln)]
    why = re.sub(r"^[\w.]+: ", "", raised[-1]) if raised else (lines[0] if lines else type(e).__name__)
    try:
        own = [ln.strip() for ln in stderr.read_text(errors="replace").splitlines() if ln.startswith("error:")]
    except OSError:
        own = []
    return why + (f" ({own[-1]})" if own else "")
