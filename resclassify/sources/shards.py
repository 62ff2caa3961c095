"""Shards: an array job's task K of N takes its contiguous part of the sorted input list, so the N
tasks cover every input exactly once whichever machine runs each, and their files merge in order."""

import os
import re
from dataclasses import dataclass

SLURM_VARIABLES = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX", "SLURM_ARRAY_TASK_COUNT")
KUBERNETES_VARIABLE = "JOB_COMPLETION_INDEX"


class ShardError(ValueError):
    """A --shard value, or an array job's environment, that names no shard; the message says why."""


@dataclass(frozen=True)
class Shard:
    """Shard `index` (1-based) of `count`."""

    index: int
    count: int

    def __post_init__(self):
        if not 1 <= self.index <= self.count:
            raise ShardError(f"shard {self.index}/{self.count}: K must be between 1 and N")

    def __str__(self):
        return f"{self.index}/{self.count}"

    def bounds(self, total):
        """[start, stop) of this shard in a list of total items: sizes differ by at most one."""
        return (self.index - 1) * total // self.count, self.index * total // self.count

    def take(self, items, key=None):
        """This shard's part of items, after sorting them (by key, default the items themselves)."""
        ordered = sorted(items, key=key)
        start, stop = self.bounds(len(ordered))
        return ordered[start:stop]


def parse_shard(text, environ=None, shards=None):
    """--shard K/N, or auto: from a Slurm array or a Kubernetes Indexed Job (with shards = --shards N)."""
    text = text.strip()
    if text == "auto":
        return shard_from_environment(os.environ if environ is None else environ, shards)
    if shards is not None:
        raise ShardError("--shards goes with --shard auto (a Kubernetes Indexed Job's completions)")
    match = re.fullmatch(r"(\d+)/(\d+)", text)
    if not match:
        raise ShardError(f"{text!r} is not K/N (for example 2/8) or auto")
    return Shard(int(match.group(1)), int(match.group(2)))


def shard_from_environment(environ, shards=None):
    """The shard an array job's task is: Slurm's array variables first, then Kubernetes's completion index."""
    if "SLURM_ARRAY_TASK_ID" in environ:
        return _slurm_shard(environ, shards)
    if KUBERNETES_VARIABLE in environ:
        index = _environment_integer(environ, KUBERNETES_VARIABLE)
        if shards is None:
            raise ShardError(f"{KUBERNETES_VARIABLE} is set (a Kubernetes Indexed Job): give the Job's completions "
                             "with --shards N")
        if not 0 <= index < shards:
            raise ShardError(f"{KUBERNETES_VARIABLE}={index} is outside 0..{shards - 1} (--shards {shards})")
        return Shard(index + 1, shards)
    raise ShardError("--shard auto: no array job here (neither Slurm's SLURM_ARRAY_TASK_ID nor a Kubernetes Indexed "
                     f"Job's {KUBERNETES_VARIABLE} is set); pass --shard K/N")


def _slurm_shard(environ, shards):
    """The shard of a Slurm array task.

    Slurm describes the submission a task belongs to, not the split of the inputs: a failed task
    resubmitted alone (sbatch --array=3) is an array of one (ID 3, MIN 3, MAX 3, COUNT 1), and a
    resubmitted range (--array=3-5) starts at 3. So Slurm's count is trusted only for a whole
    array: more than one task, numbered from 0 or 1, evenly spaced from MIN to MAX. Otherwise
    --shards N must give the count, and the task ID is the shard's index counted from 0, as in
    an array submitted as --array=0-<N-1> (the task keeps its shard when resubmitted alone).
    """
    task = _environment_integer(environ, "SLURM_ARRAY_TASK_ID")
    step = _environment_integer(environ, "SLURM_ARRAY_TASK_STEP") if environ.get("SLURM_ARRAY_TASK_STEP") else 1
    present = [name for name in SLURM_VARIABLES[1:] if environ.get(name)]
    first, last, count = ((_environment_integer(environ, name) for name in SLURM_VARIABLES[1:])
                          if len(present) == 3 else (None, None, None))
    whole = (count is not None and count > 1 and first in (0, 1) and step >= 1 and last == first + (count - 1) * step
             and first <= task <= last and (task - first) % step == 0)
    if shards is None:
        if whole:
            return Shard((task - first) // step + 1, count)
        if count is None:
            missing = [name for name in SLURM_VARIABLES[1:] if name not in present]
            why = f"Slurm does not say how many tasks the array has ({', '.join(missing)} not set)"
        elif count == 1:
            why = (f"Slurm array task {task} runs alone (an array of 1 task: a resubmitted task?), so the number "
                   "of shards is not known")
        else:
            why = (f"Slurm array task {task} is in an array of {count} tasks from {first} to {last}"
                   f"{'' if step == 1 else f' in steps of {step}'}, not a whole array numbered from 0 or 1 "
                   "(a resubmitted part?), so the number of shards is not known")
        raise ShardError(f"--shard auto: {why}; give the whole array's task count with --shards N (the task's "
                         "SLURM_ARRAY_TASK_ID is then its shard counted from 0), or pass --shard K/N")
    if whole and count == shards:
        return Shard((task - first) // step + 1, count)
    if not 0 <= task < shards:
        raise ShardError(f"--shard auto: SLURM_ARRAY_TASK_ID={task} is outside 0..{shards - 1} (--shards {shards}): "
                         f"outside a whole array, the task ID is the shard counted from 0 (--array=0-{shards - 1})")
    return Shard(task + 1, shards)


def _environment_integer(environ, name):
    value = environ.get(name)
    if value is None:
        raise ShardError(f"--shard auto: {name} is not set")
    try:
        return int(value)
    except ValueError:
        raise ShardError(f"--shard auto: {name}={value!r} is not a whole number") from None
