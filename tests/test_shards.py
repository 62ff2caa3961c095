import random

import pytest

from resclassify.sources.shards import Shard, ShardError, parse_shard, shard_from_environment


@pytest.mark.parametrize("count", [0, 1, 2, 5, 9, 24, 101])
@pytest.mark.parametrize("shards", [1, 2, 3, 7, 10, 25])
def test_shards_are_disjoint_contiguous_and_cover_every_input_once(count, shards):
    items = [f"img/{n:04d}.jpg" for n in range(count)]
    shuffled = random.Random(count * 31 + shards).sample(items, len(items))
    parts = [Shard(k, shards).take(shuffled) for k in range(1, shards + 1)]
    # In shard order, the parts put back together are the sorted list: each input exactly once,
    # whatever order the inputs came in (another machine's `find` lists them differently).
    assert [item for part in parts for item in part] == sorted(items)
    sizes = [len(part) for part in parts]
    assert max(sizes) - min(sizes) <= 1
    if shards > count:
        assert sizes.count(0) == shards - count


def test_a_shard_takes_its_part_by_key():
    paths = ["c", "a", "b", "d"]
    assert Shard(1, 2).take(paths) == ["a", "b"]
    assert Shard(2, 2).take([(p, n) for n, p in enumerate(paths)], key=lambda item: item[0]) == [("c", 0), ("d", 3)]


@pytest.mark.parametrize("text, message", [
    ("0/3", "shard 0/3: K must be between 1 and N"),
    ("4/3", "shard 4/3: K must be between 1 and N"),
    ("1/0", "shard 1/0: K must be between 1 and N"),
    ("3", "'3' is not K/N (for example 2/8) or auto"),
    ("a/b", "'a/b' is not K/N (for example 2/8) or auto"),
    ("-1/3", "'-1/3' is not K/N"),
])
def test_bad_shards_say_why(text, message):
    with pytest.raises(ShardError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_shard(text, environ={})


def test_shard_values():
    assert parse_shard(" 2/8 ") == Shard(2, 8)
    assert str(Shard(2, 8)) == "2/8"
    with pytest.raises(ShardError, match="--shards goes with --shard auto"):
        parse_shard("1/2", shards=2)


def slurm(task, first, last, count, step=None):
    """The array variables Slurm sets in a task of an array submitted as --array=first-last[:step]."""
    environ = {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_MIN": str(first),
               "SLURM_ARRAY_TASK_MAX": str(last), "SLURM_ARRAY_TASK_COUNT": str(count)}
    return environ if step is None else {**environ, "SLURM_ARRAY_TASK_STEP": str(step)}


def test_slurm_array_task_is_a_shard():
    # --array=0-3 and --array=1-4: a whole array numbered from 0 or 1 gives index and count.
    assert parse_shard("auto", slurm(2, 0, 3, 4)) == Shard(3, 4)
    assert shard_from_environment(slurm(0, 0, 3, 4)) == Shard(1, 4)
    assert shard_from_environment(slurm(4, 1, 4, 4)) == Shard(4, 4)
    assert shard_from_environment(slurm(4, 1, 4, 4), shards=4) == Shard(4, 4)
    # --array=0-9:3 runs tasks 0, 3, 6, 9.
    assert shard_from_environment(slurm(6, 0, 9, 4, step=3)) == Shard(3, 4)
    assert shard_from_environment(slurm(6, 0, 9, 4, step=3), shards=4) == Shard(3, 4)
    with pytest.raises(ShardError, match="SLURM_ARRAY_TASK_ID='x' is not a whole number"):
        shard_from_environment({**slurm(0, 0, 3, 4), "SLURM_ARRAY_TASK_ID": "x"})


@pytest.mark.parametrize("environ, why", [
    # One failed task resubmitted alone (sbatch --array=3): Slurm calls it an array of one.
    (slurm(3, 3, 3, 1), "Slurm array task 3 runs alone (an array of 1 task: a resubmitted task?)"),
    (slurm(0, 0, 0, 1), "Slurm array task 0 runs alone"),
    # A resubmitted range (--array=3-5), or a list (--array=1,5,7), is not a whole array.
    (slurm(4, 3, 5, 3), "Slurm array task 4 is in an array of 3 tasks from 3 to 5, not a whole array numbered from 0 "
                        "or 1"),
    (slurm(5, 1, 7, 3), "Slurm array task 5 is in an array of 3 tasks from 1 to 7"),
    ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_COUNT": "2"},
     "Slurm does not say how many tasks the array has (SLURM_ARRAY_TASK_MAX not set)"),
])
def test_a_slurm_count_that_may_not_be_the_whole_arrays_is_refused(environ, why):
    with pytest.raises(ShardError) as refused:
        parse_shard("auto", environ)
    assert str(refused.value).startswith(f"--shard auto: {why}")
    assert str(refused.value).endswith("give the whole array's task count with --shards N (the task's "
                                       "SLURM_ARRAY_TASK_ID is then its shard counted from 0), or pass --shard K/N")


def test_shards_gives_the_count_and_the_task_id_the_index():
    # Task 3 of --array=0-7 resubmitted alone keeps its shard: 4 of 8.
    assert parse_shard("auto", slurm(3, 3, 3, 1), shards=8) == Shard(4, 8)
    assert parse_shard("auto", slurm(0, 0, 0, 1), shards=8) == Shard(1, 8)
    # Tasks 3-5 resubmitted: each its own shard.
    assert [parse_shard("auto", slurm(task, 3, 5, 3), shards=8) for task in (3, 4, 5)] == [
        Shard(4, 8), Shard(5, 8), Shard(6, 8)]
    # A part that looks whole (--array=0-3 of 16) takes its count from --shards, not from Slurm.
    assert parse_shard("auto", slurm(2, 0, 3, 4), shards=16) == Shard(3, 16)
    with pytest.raises(ShardError, match=r"SLURM_ARRAY_TASK_ID=8 is outside 0..7 \(--shards 8\)"):
        parse_shard("auto", slurm(8, 8, 8, 1), shards=8)


def test_kubernetes_indexed_job_is_a_shard_with_the_completions_given():
    assert shard_from_environment({"JOB_COMPLETION_INDEX": "0"}, shards=3) == Shard(1, 3)
    assert shard_from_environment({"JOB_COMPLETION_INDEX": "2"}, shards=3) == Shard(3, 3)
    with pytest.raises(ShardError, match="give the Job's completions with --shards N"):
        shard_from_environment({"JOB_COMPLETION_INDEX": "2"})
    with pytest.raises(ShardError, match=r"JOB_COMPLETION_INDEX=3 is outside 0..2 \(--shards 3\)"):
        shard_from_environment({"JOB_COMPLETION_INDEX": "3"}, shards=3)


def test_auto_without_an_array_job_says_so():
    with pytest.raises(ShardError, match="no array job here .* pass --shard K/N"):
        parse_shard("auto", environ={"HOME": "/root"})
