"""``submit``: run a styleforge command as a SLURM job (or on this machine) through submitit: arrays of the batch
commands, multi-node training under torchrun, requeue on preemption. ``fetch`` fills the cache for offline nodes."""

from __future__ import annotations

import click

from .options import command, user_errors
from .progress import cli_callback


def _inner_command(name: str) -> click.Command:
    """The styleforge command ``name`` (from the ``styleforge`` group this runs under; else the batch commands)."""
    from ..errors import StyleforgeError
    from ..hpc.jobs import command_name

    ctx = click.get_current_context(silent=True)
    root = ctx.find_root().command if ctx is not None else None
    if isinstance(root, click.Group):
        commands = dict(root.commands)
    else:
        from .align import align_cmd
        from .calc_metrics import calc_metrics_cmd
        from .edit import edit_cmd
        from .generate import generate_cmd
        from .project import project_cmd
        from .train import train_cmd

        commands = {"generate": generate_cmd, "align": align_cmd, "project": project_cmd, "edit": edit_cmd,
                    "calc-metrics": calc_metrics_cmd, "train": train_cmd}
    commands.pop("submit", None)
    commands.pop("fetch", None)
    cmd = commands.get(command_name(name))
    if cmd is None:
        raise StyleforgeError(f"{name}: not a styleforge command; choose one of {', '.join(sorted(commands))}")
    return cmd


def _check_network_cached(params: dict) -> None:
    """A known network name must be in the cache already (compute nodes have no internet): else the error names the
    fetch command. Paths and URLs are the command's business."""
    from ..errors import StyleforgeError
    from ..utils.cache import KNOWN_FILES, resolve_file

    net = params.get("network")
    if isinstance(net, str) and net.lower() in KNOWN_FILES and not params.get("allow_download"):
        try:
            resolve_file(net, allow_download=False, what="network file")
        except StyleforgeError as e:  # the command's flag, not submit's
            raise StyleforgeError(e.render({"allow_download": "--allow-download"})) from None


@command(context_settings={"help_option_names": ["-h", "--help"], "allow_interspersed_args": False})
@click.option("--partition", default=None, help="SLURM partition.")
@click.option("--array", type=int, default=None, metavar="N",
              help="Run a batch command (generate, align, project, edit, calc-metrics) as N array tasks; task i does "
                   "--shard i/N.")
@click.option("--nodes", type=int, default=1, show_default=True, help="Nodes (train: one torchrun agent per node).")
@click.option("--gpus-per-node", type=int, default=None, help="GPUs per node (train: one process per GPU).")
@click.option("--gpus-per-task", type=int, default=None, help="GPUs per task (array tasks).")
@click.option("--cpus-per-task", type=int, default=None, help="CPUs per task.")
@click.option("--time", "time_min", default="60", show_default=True, metavar="MIN|[D-]HH:MM[:SS]",
              help="Wall time of each task.")
@click.option("--mem", default=None, metavar="SIZE", help="Memory per node, as sbatch takes it (64G).")
@click.option("--account", default=None, help="SLURM account.")
@click.option("--qos", default=None, help="SLURM quality of service.")
@click.option("--executor", type=click.Choice(["slurm", "local"]), default="slurm", show_default=True,
              help="slurm: sbatch through submitit; local: submitit's local executor (this machine; waits).")
@click.option("--logdir", default="styleforge-jobs", show_default=True, metavar="DIR",
              help="submitit's folder: <DIR>/<job id>/ holds each task's log; on a cluster, a shared filesystem.")
@click.option("--dry-run", is_flag=True, help="Print the sbatch script (and what each task runs); submit nothing.")
@click.argument("command_args", nargs=-1, type=click.UNPROCESSED, metavar="-- COMMAND [ARGS]...")
@user_errors
def submit_cmd(partition, array, nodes, gpus_per_node, gpus_per_task, cpus_per_task, time_min, mem, account, qos,
               executor, logdir, dry_run, command_args):
    """Submit a styleforge command to SLURM (through submitit), as an array of shards or a multi-node training job.

    \b
    Examples:
      styleforge submit --partition gpu --array 100 --gpus-per-task 1 --time 60 -- generate --network ffhq.pkl --seeds 0-99999 --outdir out
      styleforge submit --partition gpu --nodes 2 --gpus-per-node 8 --time 1440 -- train --data data.zip --cfg paper1024 --outdir runs --resume auto
      styleforge submit --executor local --array 2 -- generate --seeds 0-7 --outdir out

    Tasks that are preempted or reach their time limit get SIGTERM (training saves its state) and are requeued:
    training continues with --resume auto, the batch commands skip finished outputs. Nothing is submitted when
    the command's flags are wrong, an array is larger than the work, the cache is not writable or a known network
    is not in the cache (styleforge fetch NAME puts it there).
    """
    from ..errors import StyleforgeError
    from ..hpc.jobs import (SHARDABLE, JobSpec, command_name, count_work, plan_tasks, sbatch_script, submit,
                            task_lines)
    from ..hpc.slurm import check_mem, parse_minutes
    from ..utils.cache import check_cache_dir

    args = list(command_args)
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        raise StyleforgeError("name the command to run after --, e.g. -- generate --seeds 0-99 --outdir out")
    name = command_name(args[0])
    inner = _inner_command(args[0])
    spec = JobSpec(executor=executor, partition=partition, array=array, nodes=nodes, gpus_per_node=gpus_per_node,
                   gpus_per_task=gpus_per_task, cpus_per_task=cpus_per_task, time_min=parse_minutes(time_min),
                   mem=check_mem(mem) if mem is not None else None, account=account, qos=qos, logdir=logdir).check()
    params = inner.make_context(name, list(args[1:])).params  # the command's own checks of its flags, here
    work = count_work(name, params) if array is not None and name in SHARDABLE else None
    check_cache_dir()
    _check_network_cached(params)
    tasks = plan_tasks(spec, name, args[1:], work)
    if dry_run:
        if executor == "slurm":
            click.echo(sbatch_script(spec, tasks, name), nl=False)
        else:
            click.echo("\n".join(task_lines(tasks, spec)))
        return
    res = submit(spec, tasks, name, callback=cli_callback())
    what = f"{len(tasks)} task(s)" + (f" over {work} item(s)" if work is not None else "")
    if res.results is not None:
        click.echo(f"done: {what} of {name} (local job {', '.join(res.job_ids)}); logs in {res.logdir}")
    else:
        click.echo(f"submitted {what} of {name}: job {', '.join(res.job_ids)}; logs in {res.logdir}")
