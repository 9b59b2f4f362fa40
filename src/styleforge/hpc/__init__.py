"""Batch jobs on clusters: SLURM submission through submitit (:mod:`.jobs`), what a SLURM job tells its processes
(:mod:`.slurm`: node lists, torchrun rendezvous), filling the cache for offline compute nodes (:mod:`.fetch`), and
the torchrun launcher the sbatch templates call (:mod:`.launch`). No click here: the ``submit`` and ``fetch``
commands are in :mod:`styleforge.commands`.
"""

from .fetch import Fetched, fetch, fetchable
from .jobs import SHARDABLE, CommandTask, JobSpec, SubmitResult, count_work, plan_tasks, sbatch_script, submit
from .slurm import expand_nodelist, torchrun_args

__all__ = ["JobSpec", "CommandTask", "SubmitResult", "SHARDABLE", "count_work", "plan_tasks", "sbatch_script",
           "submit", "fetch", "fetchable", "Fetched", "expand_nodelist", "torchrun_args"]
