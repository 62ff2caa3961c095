import random

import pytest

from resclassify.datasets import Shard, ShardError, parse_shard, shard_from_environment


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


def test_slurm_array_task_is_a_shard():
    environ = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "3", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert parse_shard("auto", environ) == Shard(3, 4)
    assert shard_from_environment({**environ, "SLURM_ARRAY_TASK_ID": "3"}) == Shard(1, 4)
    # --array=0-9:3 runs tasks 0, 3, 6, 9.
    stepped = {"SLURM_ARRAY_TASK_ID": "6", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_COUNT": "4",
               "SLURM_ARRAY_TASK_STEP": "3"}
    assert shard_from_environment(stepped) == Shard(3, 4)
    assert shard_from_environment(stepped, shards=4) == Shard(3, 4)
    with pytest.raises(ShardError, match="--shards 5 differs from the Slurm array's 4 tasks"):
        shard_from_environment(stepped, shards=5)
    # --array=1,5,7: not evenly spaced, so the index says nothing about a shard.
    with pytest.raises(ShardError, match="Slurm array task 5 .* not one of evenly spaced indices"):
        shard_from_environment({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "1",
                                "SLURM_ARRAY_TASK_COUNT": "3"})
    with pytest.raises(ShardError, match="SLURM_ARRAY_TASK_COUNT is not set"):
        shard_from_environment({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "1"})
    with pytest.raises(ShardError, match="SLURM_ARRAY_TASK_ID='x' is not a whole number"):
        shard_from_environment({**environ, "SLURM_ARRAY_TASK_ID": "x"})


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
