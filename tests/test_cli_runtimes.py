"""One run across runtimes: shards and resumes on ONNX Runtime, TensorFlow and JAX belong to one run (the
runtime changes no answer), every record names its backend, and reports name all the backends used."""

import json
import shutil

import pytest

from conftest import SAMPLE_IMAGES, eval_args, jsonl

SAMPLES = sorted(str(p) for p in SAMPLE_IMAGES.glob("*.jpg"))


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records))


def as_if_run_on(path, backend):
    """The file as a shard run on another kind of node would have written it: only the records' backend differs
    (probabilities of two runtimes differ by rounding only; test_onnxruntime and test_jax check that)."""
    records = jsonl(path)
    for record in records:
        if "backend" in record:
            record["backend"] = backend
    write_jsonl(path, records)


def test_shards_from_three_runtimes_merge_into_the_single_runs_report(cli_run, weights_file, seven, tmp_path):
    single = cli_run(*eval_args(weights_file, seven, "--json"))
    assert single.exit_code == 3  # the broken image
    single_report = json.loads(single.stdout)
    files = []
    for k, backend in enumerate(["onnxruntime", "tensorflow", "jax"], start=1):
        path = tmp_path / f"shard-{k}.jsonl"
        cli_run(*eval_args(weights_file, seven, "--shard", f"{k}/3", "--predictions-out", path))
        as_if_run_on(path, backend)
        files.append(path)

    merged = cli_run("eval", "--from-predictions", "--json", *files)
    assert merged.exit_code == 3, merged.stderr  # the broken image, as in the single run; no refusal
    assert "different runs" not in merged.stderr
    report = json.loads(merged.stdout)
    for key in ("accuracy", "per_class", "worst_classes", "confusions", "failed", "preprocessing"):
        assert report[key] == single_report[key], key
    assert report["model"]["backends"] == ["jax", "onnxruntime", "tensorflow"]
    assert report["model"]["backend"] is None  # no one backend ran the whole run
    assert single_report["model"]["backend"] == "tensorflow"
    assert single_report["model"]["backends"] == ["tensorflow"]

    summary = cli_run("eval", "--from-predictions", *files)
    assert ("Model:         resnet50, weights resnet50_random.h5, float32, backends: jax, onnxruntime, tensorflow"
            in summary.stdout.splitlines())

    # The HTML report of the merge too, naming them.
    page = tmp_path / "page.html"
    result = cli_run("report", *files, "-o", page)
    assert result.exit_code == 0, result.stderr
    assert "backends: jax, onnxruntime, tensorflow" in page.read_text()


def test_other_answers_are_still_another_run(cli_run, weights_file, seven, tmp_path):
    """What changes the answers (here the precision) keeps refusing a merge, whatever the backends."""
    first, second = tmp_path / "shard-1.jsonl", tmp_path / "shard-2.jsonl"
    cli_run(*eval_args(weights_file, seven, "--shard", "1/2", "--predictions-out", first))
    cli_run(*eval_args(weights_file, seven, "--shard", "2/2", "--predictions-out", second))
    records = jsonl(second)
    for record in records:
        if "run" in record:
            record["backend"] = "jax"
            record["run"]["precision"] = "bfloat16"
    write_jsonl(second, records)
    result = cli_run("eval", "--from-predictions", first, second)
    assert result.exit_code == 1
    assert result.stderr == (f"resclassify: error: {second} and {first} come from different runs: precision bfloat16 "
                             f"in {second}, float32 in {first}\n")


def test_predict_resume_on_another_runtime_continues_the_file(cli_run, weights_file, tmp_path):
    out = tmp_path / "labels.jsonl"
    assert cli_run("predict", "--weights", weights_file, "--output", out, *SAMPLES[:2]).exit_code == 0
    as_if_run_on(out, "onnxruntime")  # the first node had ONNX Runtime; this one runs TensorFlow
    result = cli_run("predict", "--weights", weights_file, "--output", out, "--resume", *SAMPLES)
    assert result.exit_code == 0, result.stderr
    records = jsonl(out)
    assert [r["path"] for r in records] == SAMPLES
    assert [r["backend"] for r in records] == ["onnxruntime"] * 2 + ["tensorflow"] * (len(SAMPLES) - 2)
    assert len({json.dumps(r["run"], sort_keys=True) for r in records}) == 1


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_eval_resume_on_another_runtime_reports_both(cli_run, weights_file, seven, tmp_path, suffix):
    out = tmp_path / f"run{suffix}"
    whole = json.loads(cli_run(*eval_args(weights_file, seven, "--json", "--predictions-out", out)).stdout)
    # Keep the first three records as a killed run on an ONNX Runtime node left them.
    if suffix == ".jsonl":
        write_jsonl(out, jsonl(out)[:3])
        as_if_run_on(out, "onnxruntime")
    else:
        lines = out.read_text().splitlines(keepends=True)
        out.write_text("".join(lines[:1] + [line.replace(",tensorflow,", ",onnxruntime,") for line in lines[1:4]]))
    result = cli_run(*eval_args(weights_file, seven, "--json", "--predictions-out", out, "--resume"))
    assert result.exit_code == 3, result.stderr  # the broken image
    report = json.loads(result.stdout)
    assert report["resumed"] == 3
    assert report["accuracy"] == whole["accuracy"]
    assert report["model"]["backends"] == ["onnxruntime", "tensorflow"] and report["model"]["backend"] is None


def test_a_real_onnxruntime_shard_merges_with_a_tensorflow_one(cli_run, own_models, colour_photos, tmp_path):
    """Not crafted: a small model of the user's own, one shard exported to and run on ONNX Runtime (seconds),
    the other on TensorFlow, merged into one report."""
    folder = tmp_path / "colours"
    for colour, photo in colour_photos.items():
        (folder / colour).mkdir(parents=True)
        shutil.copy(photo, folder / colour / photo.name)
    model_args = ["--model", own_models / "colours.keras", "--classes", own_models / "colours.txt",
                  "--preprocess-mode", "tf", "--device", "cpu"]
    files = []
    for k, backend in enumerate(["onnxruntime", "tensorflow"], start=1):
        path = tmp_path / f"shard-{k}.jsonl"
        result = cli_run("eval", folder, "--shard", f"{k}/2", "--backend", backend, "--predictions-out", path,
                         "--quiet", *model_args)
        assert result.exit_code == 0, result.stderr
        assert {r["backend"] for r in jsonl(path)} == {backend}
        files.append(path)
    merged = cli_run("eval", "--from-predictions", "--json", *files)
    assert merged.exit_code == 0, merged.stderr
    report = json.loads(merged.stdout)
    assert report["model"]["backends"] == ["onnxruntime", "tensorflow"]
    assert report["images"]["evaluated"] == 3 and report["accuracy"]["top1"]["correct"] == 3


def test_the_run_line_of_a_ray_run_names_the_actors_not_this_process_runtime(model):
    """This process's copy (on the CPU, maybe ONNX Runtime) is not what Ray's actors run."""
    from resclassify.cli.predict import describe_run

    preprocessing = model.preprocessing()
    assert " · tensorflow on cpu · " in describe_run(model, preprocessing)
    line = describe_run(model, preprocessing, engine_name="ray")
    assert line.startswith("resnet50, weights resnet50_random.h5 · ray actors · center-crop")
