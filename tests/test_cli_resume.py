"""Outputs a run can come back to: predict --output, and --resume after a killed run."""

import csv
import json

import pytest

from conftest import jsonl


def predict_args(weights_file, *args):
    return ["predict", *args, "--weights", weights_file, "--device", "cpu", "--batch-size", "3"]


def assert_same_records(got, want):
    """Record for record: same paths, classes, runs and errors; probabilities within float rounding,
    since a resumed run batches its images differently."""
    assert [r["path"] for r in got] == [r["path"] for r in want]
    for a, b in zip(got, want):
        assert a.keys() == b.keys()
        if "error" in b:
            assert a == b
            continue
        assert {k: v for k, v in a.items() if k != "predictions"} == {k: v for k, v in b.items() if k != "predictions"}
        assert [(p["rank"], p["index"], p["label"]) for p in a["predictions"]] == \
            [(p["rank"], p["index"], p["label"]) for p in b["predictions"]]
        assert [p["probability"] for p in a["predictions"]] == pytest.approx(
            [p["probability"] for p in b["predictions"]], rel=1e-4, abs=1e-6)


def test_predict_output_writes_the_records_and_leaves_stdout_alone(cli_run, weights_file, photos, tmp_path):
    out = tmp_path / "labels.jsonl"
    result = cli_run(*predict_args(weights_file, photos, "--output", out))
    assert result.exit_code == 3  # broken.jpg
    assert result.stdout == ""  # not a terminal: the records are in the file
    assert result.stderr == (f"resclassify: error: {photos / 'broken.jpg'}: cannot identify image file\n"
                             "resclassify: warning: 1 of 8 inputs could not be classified\n")
    records = jsonl(out.read_text())
    assert [r["path"] for r in records] == sorted(str(p) for p in photos.iterdir())
    # Asked for explicitly, stdout carries a format too, the same records.
    again = cli_run(*predict_args(weights_file, photos, "--output", tmp_path / "again.csv", "--format", "jsonl"))
    assert_same_records(jsonl(again.stdout), records)
    rows = list(csv.DictReader((tmp_path / "again.csv").open()))
    assert len(rows) == 7 * 5 + 1 and rows[0]["error"] == "cannot identify image file"
    assert json.loads(rows[1]["run"]) == records[1]["run"]


def test_an_existing_output_is_refused_without_force_or_resume(cli_run, weights_file, photos, tmp_path):
    out = tmp_path / "labels.jsonl"
    out.write_text("keep me\n")
    result = cli_run(*predict_args(weights_file, photos, "--output", out))
    assert result.exit_code == 1
    assert result.stderr == f"resclassify: error: {out}: already exists; pass --force to overwrite it\n"
    assert out.read_text() == "keep me\n"
    for args, message in [(["--resume"], "--resume continues the file --output names: give --output FILE"),
                          (["--output", out, "--resume", "--force"], "--resume continues the file, --force starts"),
                          (["--output", tmp_path / "labels.txt"], "the file name must end in .jsonl, .csv or .parquet")]:
        result = cli_run(*predict_args(weights_file, photos, *args))
        assert result.exit_code == 2 and message in result.stderr


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_predict_resume_after_a_file_cut_mid_line_equals_the_uninterrupted_file(
        cli_run, weights_file, photos, tmp_path, suffix):
    whole = tmp_path / f"whole{suffix}"
    assert cli_run(*predict_args(weights_file, photos, "--output", whole)).exit_code == 3
    text = whole.read_text()
    lines = text.splitlines(keepends=True)
    # Killed while writing: whole lines, then half of the next (for CSV, mid-way through an
    # image's rank rows too, which the resumed run must also redo).
    kept = 3 if suffix == ".jsonl" else 1 + 5 * 3 + 2
    cut = tmp_path / f"cut{suffix}"
    cut.write_text("".join(lines[:kept]) + lines[kept][:len(lines[kept]) // 2])

    result = cli_run(*predict_args(weights_file, photos, "--output", cut, "--resume"))
    assert result.exit_code == 3  # broken.jpg failed before the cut, and counts still
    assert result.stderr == "resclassify: warning: 1 of 8 inputs could not be classified\n"
    if suffix == ".jsonl":
        assert_same_records(jsonl(cut.read_text()), jsonl(text))
        assert cut.read_text().startswith("".join(lines[:kept]))
    else:
        got, want = list(csv.DictReader(cut.open())), list(csv.DictReader(whole.open()))
        assert [(r["path"], r["rank"], r["index"]) for r in got] == [(r["path"], r["rank"], r["index"]) for r in want]
        assert [float(r["probability"] or 0) for r in got] == pytest.approx(
            [float(r["probability"] or 0) for r in want], rel=1e-4, abs=1e-6)

    # A finished file resumed again has nothing left to do and stays as it is.
    finished = cut.read_bytes()
    result = cli_run(*predict_args(weights_file, photos, "--output", cut, "--resume"))
    assert result.exit_code == 3 and cut.read_bytes() == finished


def test_resume_refuses_another_runs_file_and_leaves_it_whole(cli_run, weights_file, photos, tmp_path):
    out = tmp_path / "labels.jsonl"
    cli_run(*predict_args(weights_file, photos, "--output", out))
    out.write_text(out.read_text()[:-10])
    before = out.read_bytes()
    result = cli_run(*predict_args(weights_file, photos, "--output", out, "--resume", "-k", "3"))
    assert result.exit_code == 1
    assert result.stderr == (f"resclassify: error: {out} was written by another run: top_k 5 in {out}, 3 in this "
                             "run; write to another file, or pass --force instead of --resume to start over\n")
    result = cli_run(*predict_args(weights_file, photos, "--output", out, "--resume", "--preprocess-mode", "tf"))
    assert result.exit_code == 1
    assert f"preprocessing mode caffe in {out}, tf in this run" in result.stderr
    result = cli_run(*predict_args(weights_file, photos, "--output", out, "--resume", "--shard", "2/2"))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"resclassify: error: {out} holds {photos / 'broken.jpg'}, which is not among "
                                    "this run's inputs")
    assert out.read_bytes() == before  # a refused file keeps even its half-written line


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_eval_resume_reports_every_image_as_one_run_would(cli_run, weights_file, seven, tmp_path, suffix):
    whole = tmp_path / f"whole{suffix}"
    single = cli_run("eval", seven, "--json", "--weights", weights_file,
                     "--predictions-out", whole, "--misclassified-out", tmp_path / "misses-whole.jsonl")
    assert single.exit_code == 3
    lines = whole.read_text().splitlines(keepends=True)
    cut = tmp_path / f"cut{suffix}"
    kept = 4 if suffix == ".jsonl" else 5  # CSV: the header and four images
    cut.write_text("".join(lines[:kept]) + lines[kept][:25])

    result = cli_run("eval", seven, "--json", "--weights", weights_file, "--predictions-out", cut, "--resume",
                     "--misclassified-out", tmp_path / "misses-cut.jsonl")
    assert result.exit_code == 3
    resumed, report = json.loads(result.stdout), json.loads(single.stdout)
    assert resumed["resumed"] == 4
    for key in ("accuracy", "per_class", "worst_classes", "confusions", "failed"):
        assert resumed[key] == report[key], key
    assert resumed["images"] == report["images"]
    assert [line.split(",")[0] for line in cut.read_text().splitlines()] == \
        [line.split(",")[0] for line in whole.read_text().splitlines()]
    if suffix == ".jsonl":
        assert_same_records(jsonl(cut.read_text()), jsonl(whole.read_text()))
    # The misclassified file covers the earlier records too.
    assert [json.loads(line)["path"] for line in (tmp_path / "misses-cut.jsonl").read_text().splitlines()] == \
        [json.loads(line)["path"] for line in (tmp_path / "misses-whole.jsonl").read_text().splitlines()]
    # And the resumed file merges to the same report.
    merged = json.loads(cli_run("eval", "--from-predictions", "--json", cut).stdout)
    assert merged["accuracy"] == report["accuracy"]


def test_eval_resume_refuses_a_file_of_other_labels(cli_run, weights_file, seven, tmp_path):
    out = tmp_path / "run.jsonl"
    cli_run("eval", seven, "--weights", weights_file, "--predictions-out", out)
    records = jsonl(out.read_text())
    records[0]["true"]["index"] = (records[0]["true"]["index"] + 1) % 1000
    out.write_text("".join(json.dumps(r) + "\n" for r in records[:3]))
    result = cli_run("eval", seven, "--weights", weights_file, "--predictions-out", out, "--resume")
    assert result.exit_code == 1
    assert result.stderr.endswith(f"resclassify: error: {out}: {records[0]['path']}: true class "
                                  f"{records[0]['true']['index']} there, {(records[0]['true']['index'] - 1) % 1000} "
                                  "in this run's ground truth\n")
    result = cli_run("eval", seven, "--weights", weights_file, "--resume")
    assert result.exit_code == 2 and "--resume continues the file --predictions-out names" in result.stderr
