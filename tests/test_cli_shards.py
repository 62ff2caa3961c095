"""Array jobs: --shard on predict and eval, and eval --from-predictions merging the shards' files."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, SAMPLE_IMAGES, eval_args, jsonl

SAMPLES = sorted(str(p) for p in SAMPLE_IMAGES.glob("*.jpg"))


def same_figures(merged, single):
    """Everything in a report that comes from the images' hits is identical, to the last digit."""
    for key in ("accuracy", "per_class", "worst_classes", "confusions", "failed", "preprocessing"):
        assert merged[key] == single[key], key
    for key in ("evaluated", "failed"):
        assert merged["images"][key] == single["images"][key]
    for key in ("name", "arch", "precision", "classes", "backend"):
        assert merged["model"][key] == single["model"][key]


@pytest.mark.parametrize("args, message", [
    (["--shard", "0/3"], "shard 0/3: K must be between 1 and N"),
    (["--shard", "4/3"], "shard 4/3: K must be between 1 and N"),
    (["--shard", "two"], "'two' is not K/N"),
    (["--shard", "auto"], "no array job here"),
    (["--shard", "auto", "--shards", "0"], "0 is not in the range x>=1"),
    (["--shards", "3"], "--shards goes with --shard auto"),
    (["--shard", "1/2", "--shards", "2"], "--shards goes with --shard auto"),
])
@pytest.mark.parametrize("command", ["predict", "eval"])
def test_bad_shards_are_usage_errors(cli_run, weights_file, tmp_path, monkeypatch, command, args, message):
    for name in SLURM_ARRAY + ("JOB_COMPLETION_INDEX",):
        monkeypatch.delenv(name, raising=False)
    target = SAMPLES[0] if command == "predict" else tmp_path
    result = cli_run(command, target, *args, "--weights", weights_file)
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_predict_shards_put_together_are_the_sorted_inputs(cli_run, weights_file, model):
    import resclassify

    unsorted = [SAMPLES[2], SAMPLES[0], SAMPLES[3], SAMPLES[1]]
    single = list(resclassify.classify(sorted(unsorted), model))
    parts = []
    for k in range(1, 4):
        result = cli_run("predict", "--json", "--shard", f"{k}/3", "--weights", weights_file, *unsorted)
        assert result.exit_code == 0, result.stderr
        parts.append([json.loads(line) for line in result.stdout.splitlines()])
    assert [len(part) for part in parts] == [1, 1, 2]
    merged = [record for part in parts for record in part]
    assert [r["path"] for r in merged] == sorted(unsorted)
    for got, want in zip(merged, single):
        assert [p["index"] for p in got["predictions"]] == [p["index"] for p in want["predictions"]]
        assert [p["probability"] for p in got["predictions"]] == pytest.approx(
            [p["probability"] for p in want["predictions"]], rel=1e-4, abs=1e-6)
        assert got["run"] == want["run"]


SLURM_ARRAY = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX", "SLURM_ARRAY_TASK_COUNT")


def set_slurm(monkeypatch, *values):
    for name, value in zip(SLURM_ARRAY, values):
        monkeypatch.setenv(name, str(value))


def test_shard_auto_reads_slurm_and_kubernetes(cli_run, weights_file, monkeypatch):
    set_slurm(monkeypatch, 2, 1, 2, 2)  # task 2 of --array=1-2
    result = cli_run("predict", "--json", "--shard", "auto", "--weights", weights_file, *SAMPLES)
    assert result.exit_code == 0, result.stderr
    assert [json.loads(line)["path"] for line in result.stdout.splitlines()] == SAMPLES[2:]
    for name in SLURM_ARRAY:
        monkeypatch.delenv(name)
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "0")
    result = cli_run("predict", "--json", "--shard", "auto", "--shards", "4", "--weights", weights_file, *SAMPLES)
    assert result.exit_code == 0, result.stderr
    assert [json.loads(line)["path"] for line in result.stdout.splitlines()] == SAMPLES[:1]
    result = cli_run("predict", "--json", "--shard", "auto", "--weights", weights_file, *SAMPLES)
    assert result.exit_code == 2
    assert "JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job): give the Job's completions with --shards N" \
        in result.stderr


@pytest.mark.parametrize("command", ["predict", "eval"])
def test_a_slurm_task_resubmitted_alone_needs_the_shard_count(cli_run, weights_file, monkeypatch, tmp_path, command):
    """sbatch --array=3 after task 3 of --array=0-7 failed: Slurm says 1 task; running everything would be wrong."""
    set_slurm(monkeypatch, 3, 3, 3, 1)
    target = SAMPLES if command == "predict" else [tmp_path]
    result = cli_run(command, "--shard", "auto", "--weights", weights_file, *target)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert ("--shard auto: Slurm array task 3 runs alone (an array of 1 task: a resubmitted task?), so the number of "
            "shards is not known; give the whole array's task count with --shards N") in " ".join(result.stderr.split())
    if command == "predict":
        # With --shards 8 the task runs its own shard, the 4th of 8 (one of the four samples).
        result = cli_run("predict", "--json", "--shard", "auto", "--shards", "8", "--weights", weights_file, *SAMPLES)
        assert result.exit_code == 0, result.stderr
        assert [json.loads(line)["path"] for line in result.stdout.splitlines()] == SAMPLES[1:2]


def test_merged_shards_give_the_single_runs_report(cli_run, weights_file, seven, tmp_path):
    single_file = tmp_path / "single.jsonl"
    single = cli_run(*eval_args(weights_file, seven, "--json", "--predictions-out", single_file))
    assert single.exit_code == 3  # the broken image
    single_report = json.loads(single.stdout)

    # Three shards, one of them written as CSV, and a shard of nine that holds no image.
    files = [tmp_path / "shard-1.jsonl", tmp_path / "shard-2.csv", tmp_path / "shard-3.jsonl"]
    for k, path in enumerate(files, start=1):
        result = cli_run(*eval_args(weights_file, seven, "--json", "--shard", f"{k}/3", "--predictions-out", path))
        report = json.loads(result.stdout)
        assert report["shard"] == f"{k}/3"
        assert report["images"]["evaluated"] + report["images"]["failed"] in (2, 3)
        assert report["images"]["not_run"] == 7 - report["images"]["evaluated"] - report["images"]["failed"]
    empty = tmp_path / "shard-1-of-9.jsonl"
    result = cli_run(*eval_args(weights_file, seven, "--json", "--shard", "1/9", "--predictions-out", empty))
    assert result.exit_code == 0 and json.loads(result.stdout)["images"]["evaluated"] == 0
    assert empty.read_text() == ""

    merged = cli_run("eval", "--from-predictions", "--json", *files, empty)
    assert merged.exit_code == 3  # the broken image failed in the single run too
    assert merged.stderr.startswith(f"resclassify: error: {seven}/")
    merged_report = json.loads(merged.stdout)
    same_figures(merged_report, single_report)
    assert merged_report["accuracy"]["top1"]["correct"] == 2
    assert merged_report["prediction_files"] == [str(path) for path in files + [empty]]
    assert merged_report["model"]["weights"] == "resnet50_random.h5"

    # The shards' JSON Lines records are the single run's, in the same (sorted) order.
    single_records = jsonl(single_file)
    shard_paths = [r["path"] for path in files if path.suffix == ".jsonl" for r in jsonl(path)]
    assert shard_paths == [r["path"] for r in single_records if r["path"] in shard_paths]

    # The summary of a merge names the files instead of a folder.
    summary = cli_run("eval", "--from-predictions", *files, empty)
    lines = summary.stdout.splitlines()
    assert lines[:3] == ["Evaluation from 4 prediction files",
                         f"Files:         {files[0]}, {files[1]}, {files[2]}, and 1 more",
                         "Model:         resnet50, weights resnet50_random.h5, float32, tensorflow backend"]
    assert "Images:        6 evaluated, 1 failed" in lines
    assert not any(line.startswith("Throughput") for line in lines)


def test_one_runs_file_gives_its_report_again(cli_run, weights_file, seven, tmp_path):
    for name in ("run.jsonl", "run.csv"):
        out = tmp_path / name
        single = json.loads(cli_run(*eval_args(weights_file, seven, "--json", "-k", "3",
                                                "--predictions-out", out)).stdout)
        again = cli_run("eval", "--from-predictions", "--json", out, "--misclassified-out", tmp_path / f"miss-{name}")
        assert again.exit_code == 3
        report = json.loads(again.stdout)
        same_figures(report, single)
        assert list(report["accuracy"]) == ["top1", "top3", "top5"]
    misses = (tmp_path / "miss-run.jsonl").read_text().splitlines()
    assert len(misses) == 4 and len((tmp_path / "miss-run.csv").read_text().splitlines()) == 5
    # The HTML report of a merge, from the files' records alone.
    page = tmp_path / "page.html"
    assert cli_run("eval", "--from-predictions", tmp_path / "run.jsonl", "--report", page).exit_code == 3
    assert "Evaluation from 1 prediction file" in page.read_text()


@pytest.fixture
def shard_files(cli_run, weights_file, seven, tmp_path):
    files = []
    for k in (1, 2):
        path = tmp_path / f"shard-{k}.jsonl"
        cli_run(*eval_args(weights_file, seven, "--shard", f"{k}/2", "--predictions-out", path))
        files.append(path)
    return files


def test_overlapping_files_are_refused(cli_run, shard_files, tmp_path):
    first, second = shard_files
    result = cli_run("eval", "--from-predictions", first, first)
    assert result.exit_code == 1
    path = jsonl(first)[0]["path"]
    assert result.stderr == f"resclassify: error: {path} is in {first} twice: the files overlap\n"
    assert result.stdout == ""

    both = tmp_path / "both.jsonl"
    both.write_text(first.read_text() + second.read_text())
    result = cli_run("eval", "--from-predictions", both, second)
    assert result.exit_code == 1
    path = jsonl(second)[0]["path"]
    assert result.stderr == f"resclassify: error: {path} is in both {both} and {second}: the files overlap\n"


def test_files_from_different_runs_are_refused(cli_run, weights_file, seven, shard_files, tmp_path):
    first, second = shard_files
    squash = tmp_path / "squash-2.jsonl"
    cli_run(*eval_args(weights_file, seven, "--shard", "2/2", "--preprocess", "squash", "--predictions-out", squash))
    result = cli_run("eval", "--from-predictions", first, squash)
    assert result.exit_code == 1
    assert result.stderr == (
        f"resclassify: error: {squash} and {first} come from different runs: preprocessing name squash in {squash}, "
        f"center-crop in {first}; preprocessing interpolation nearest in {squash}, bicubic in {first}; "
        f"preprocessing crop_fraction none in {squash}, 0.875 in {first}\n")

    other_weights = tmp_path / "other-weights.jsonl"
    records = jsonl(second)
    for record in records:
        if "run" in record:
            record["run"]["weights_fingerprint"] = "0123456789abcdef"
            record["run"]["top_k"] = 3
    other_weights.write_text("".join(json.dumps(record) + "\n" for record in records))
    result = cli_run("eval", "--from-predictions", first, other_weights)
    assert result.exit_code == 1
    fingerprint = jsonl(first)[0]["run"]["weights_fingerprint"]
    assert result.stderr == (
        f"resclassify: error: {other_weights} and {first} come from different runs: weights_fingerprint "
        f"0123456789abcdef in {other_weights}, {fingerprint} in {first}; top_k 3 in {other_weights}, 5 in {first}\n")


def test_from_predictions_refuses_what_it_cannot_merge(cli_run, weights_file, shard_files, tmp_path):
    first, _ = shard_files
    predicted = tmp_path / "predict.jsonl"
    assert cli_run("predict", "--weights", weights_file, "--output", predicted, SAMPLES[0]).exit_code == 0
    result = cli_run("eval", "--from-predictions", first, predicted)
    assert result.exit_code == 1
    assert result.stderr == (f"resclassify: error: {predicted}: {SAMPLES[0]}: no true class: --from-predictions "
                             "reads eval's --predictions-out files, not predict's output\n")

    cut = tmp_path / "cut.jsonl"
    cut.write_text(first.read_text()[:-20])
    result = cli_run("eval", "--from-predictions", cut)
    assert result.exit_code == 1
    assert result.stderr == (f"resclassify: error: {cut}: its last record is cut off (a run killed while "
                             "writing?); finish the run with --resume first\n")

    result = cli_run("eval", "--from-predictions", tmp_path / "missing.jsonl")
    assert (result.exit_code, result.stderr) == (1, f"resclassify: error: {tmp_path / 'missing.jsonl'}: no such file\n")

    for args, message in [
        ([first, "--weights", weights_file], "--weights does not go with --from-predictions"),
        ([first, "--shard", "1/2"], "--shard does not go with --from-predictions"),
        ([first, "--predictions-out", tmp_path / "x.jsonl"], "--predictions-out does not go with --from-predictions"),
        ([], "--from-predictions needs the prediction files"),
    ]:
        result = cli_run("eval", "--from-predictions", *args)
        assert result.exit_code == 2, args
        assert message in result.stderr
    result = cli_run("eval", first.parent, first.parent)
    assert result.exit_code == 2 and "eval takes one FOLDER (or --from-predictions FILE...)" in result.stderr


def test_shard_files_need_not_move_the_images(cli_run, shard_files, seven, tmp_path):
    """The merge reads only the files: the images may be gone (another machine ran the shards)."""
    shutil.rmtree(seven)
    result = cli_run("eval", "--from-predictions", "--json", *shard_files)
    assert result.exit_code == 3
    assert json.loads(result.stdout)["images"]["evaluated"] == 6


def test_a_merge_loads_no_model_and_no_backend(shard_files):
    script = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from resclassify.cli import cli\n"
        f"result = CliRunner().invoke(cli, ['eval', '--from-predictions', '--json', *{[str(f) for f in shard_files]!r}])\n"
        "assert result.exit_code == 3, result.output\n"
        "print(sorted(name for name in ('tensorflow', 'keras', 'jax', 'ray') if name in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"
