"""Parquet record files: predict --output and eval --predictions-out ending in .parquet, read back by
eval --from-predictions and --resume, a killed run's journal recovered, and pyarrow missing."""

import builtins
import json
import os

import pytest

from conftest import eval_args, jsonl, save_image
from resclassify.parquet_records import journal_path, read_parquet, run_of_file


@pytest.fixture
def no_pyarrow(monkeypatch):
    """pyarrow as if not installed: every import of it fails, even where it was imported before."""
    real_import = builtins.__import__

    def refuse_pyarrow(name, *args, **kwargs):
        if name == "pyarrow" or name.startswith("pyarrow."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refuse_pyarrow)


def predict_args(weights_file, *args):
    return ["predict", *args, "--weights", weights_file, "--device", "cpu", "--batch-size", "3"]


def same_figures(merged, single):
    for key in ("accuracy", "per_class", "worst_classes", "confusions", "failed", "preprocessing"):
        assert merged[key] == single[key], key
    for key in ("evaluated", "failed"):
        assert merged["images"][key] == single["images"][key]


def test_predict_to_parquet_holds_the_records_of_json_lines_exactly(cli_run, weights_file, photos, tmp_path):
    out = tmp_path / "preds.parquet"
    # One run, two outputs: the JSON Lines on stdout and the Parquet file hold the same records, to the last bit.
    result = cli_run(*predict_args(weights_file, photos, "--output", out, "--format", "jsonl"))
    assert result.exit_code == 3, result.stderr  # broken.jpg
    want = jsonl(result.stdout)
    assert read_parquet(out) == want
    assert len(want) == 8 and want[0]["error"] == "cannot identify image file"
    assert run_of_file(out) == {"model": want[1]["model"], **want[1]["run"]}
    assert not (tmp_path / "preds.parquet.partial.jsonl").exists()  # the journal is gone once the file is whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preds.parquet"]


def test_eval_to_parquet_and_back_gives_the_runs_report(cli_run, weights_file, seven, tmp_path):
    out, lines = tmp_path / "preds.parquet", tmp_path / "preds.jsonl"
    single = cli_run(*eval_args(weights_file, seven, "--json", "--predictions-out", out))
    assert single.exit_code == 3, single.stderr
    again = cli_run("eval", "--from-predictions", "--json", out)
    assert again.exit_code == 3
    same_figures(json.loads(again.stdout), json.loads(single.stdout))
    # The same records as a .jsonl file of the same evaluation (another run: probabilities to rounding).
    assert cli_run(*eval_args(weights_file, seven, "--predictions-out", lines)).exit_code == 3
    got, want = read_parquet(out), jsonl(lines)
    assert [{k: v for k, v in r.items() if k not in ("predictions", "backend")} for r in got] == \
        [{k: v for k, v in r.items() if k not in ("predictions", "backend")} for r in want]
    assert [[p["index"] for p in r.get("predictions", [])] for r in got] == \
        [[p["index"] for p in r.get("predictions", [])] for r in want]


def test_parquet_json_lines_and_csv_shards_merge_into_the_single_runs_report(cli_run, weights_file, seven, tmp_path):
    single = json.loads(cli_run(*eval_args(weights_file, seven, "--json")).stdout)
    files = [tmp_path / "shard-1.parquet", tmp_path / "shard-2.jsonl", tmp_path / "shard-3.csv"]
    for k, path in enumerate(files, start=1):
        assert cli_run(*eval_args(weights_file, seven, "--shard", f"{k}/3", "--predictions-out", path)).exit_code \
            in (0, 3)
    merged = cli_run("eval", "--from-predictions", "--json", *files)
    assert merged.exit_code == 3
    report = json.loads(merged.stdout)
    same_figures(report, single)
    assert report["prediction_files"] == [str(path) for path in files]
    assert cli_run("report", *files, "--output", tmp_path / "page.html").exit_code in (0, 3)
    assert "Evaluation from 3 prediction files" in (tmp_path / "page.html").read_text()


def test_a_killed_runs_journal_is_resumed_into_the_whole_file(cli_run, weights_file, photos, tmp_path):
    whole = tmp_path / "whole.jsonl"
    assert cli_run(*predict_args(weights_file, photos, "--output", whole)).exit_code == 3
    lines = whole.read_text().splitlines(keepends=True)
    out = tmp_path / "preds.parquet"
    # What a run killed (SIGKILL) mid-write leaves: its journal, three whole records and half of a fourth, no file.
    journal = tmp_path / "preds.parquet.partial.jsonl"
    journal.write_text("".join(lines[:3]) + lines[3][:40])
    assert journal_path(out) == str(journal)

    refused = cli_run(*predict_args(weights_file, photos, "--output", out))
    assert refused.exit_code == 1
    assert refused.stderr == (f"resclassify: error: {journal}: an unfinished run's records are there; pass --resume "
                              "to continue it, or --force to start over\n")
    unfinished = cli_run("eval", "--from-predictions", out)
    assert unfinished.exit_code == 1 and "its run did not finish" in unfinished.stderr

    resumed = cli_run(*predict_args(weights_file, photos, "--output", out, "--resume"))
    assert resumed.exit_code == 3, resumed.stderr
    got, want = read_parquet(out), jsonl(whole.read_text())
    assert [r["path"] for r in got] == [r["path"] for r in want]
    assert got[:3] == want[:3]  # the journal's records, kept as they were
    assert [[p["index"] for p in r.get("predictions", [])] for r in got] == \
        [[p["index"] for p in r.get("predictions", [])] for r in want]
    assert not journal.exists()


def test_a_finished_parquet_file_is_continued_by_resume(cli_run, weights_file, seven, tmp_path):
    out = tmp_path / "preds.parquet"
    first = cli_run(*eval_args(weights_file, seven, "--limit", "3", "--predictions-out", out))
    assert first.exit_code in (0, 3)
    assert len(read_parquet(out)) == 3
    earlier = read_parquet(out)
    resumed = cli_run(*eval_args(weights_file, seven, "--json", "--predictions-out", out, "--resume"))
    assert resumed.exit_code == 3, resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["resumed"] == 3
    records = read_parquet(out)
    assert len(records) == 7 and records[:3] == earlier
    assert not (tmp_path / "preds.parquet.partial.jsonl").exists()


def test_the_parquet_file_is_locked_while_a_run_writes_it(tmp_path):
    from resclassify.errors import RecordFileError
    from resclassify.records import open_record_file

    out = tmp_path / "preds.parquet"
    with open_record_file(out, "new"):
        with pytest.raises(RecordFileError, match="is being written by another run"):
            open_record_file(out, "append")


def test_without_pyarrow_a_parquet_path_is_one_line_naming_the_install(cli_run, no_pyarrow, tmp_path):
    (tmp_path / "a.parquet").write_bytes(b"PAR1")
    result = cli_run("eval", "--from-predictions", tmp_path / "a.parquet")
    assert result.exit_code == 1
    assert result.stderr == ("resclassify: error: Parquet record files need pyarrow: "
                             "pip install 'resclassify[parquet]'\n")


def test_a_run_killed_by_sigkill_leaves_a_journal_that_resume_makes_whole(tmp_path, weights_file, cli_run):
    import signal

    from test_cli_signals import IMAGES, interrupt, start, wait_for

    folder = tmp_path / "data"
    for n, name in enumerate(IMAGES):
        save_image(folder / "tabby" / f"{name}.png", seed=n, size=(64, 48))
    out, journal = tmp_path / "run.parquet", tmp_path / "run.parquet.partial.jsonl"
    marker = tmp_path / "stuck.started"
    # A real child, stuck decoding d_stuck.png after a and b were written, then killed outright.
    child = start(["eval", folder, "--weights", weights_file, "--device", "cpu", "--batch-size", "1",
                   "--decoding", "threads", "--predictions-out", out], marker)
    wait_for(lambda: journal.exists() and journal.read_text().count("\n") >= 2, "two records in the journal", child)
    wait_for(marker.exists, "decode of d_stuck.png", child)
    _, _, status, _ = interrupt(child, signal.SIGKILL)
    assert status == -signal.SIGKILL
    assert not out.exists()  # no Parquet footer was ever written: the journal is what is left
    assert [os.path.basename(json.loads(line)["path"]) for line in journal.read_text().splitlines()] == \
        ["a.png", "b.png"]

    resumed = cli_run(*eval_args(weights_file, folder, "--json", "--decoding", "threads", "--predictions-out", out,
                                 "--resume", "--quiet"))
    assert resumed.exit_code == 0, resumed.stderr
    assert json.loads(resumed.stdout)["resumed"] == 2
    records = read_parquet(out)
    assert sorted(os.path.basename(record["path"]) for record in records) == [f"{name}.png" for name in IMAGES]
    assert not journal.exists()
    merged = cli_run("eval", "--from-predictions", "--json", out)
    assert json.loads(merged.stdout)["images"]["evaluated"] == 4


def test_without_pyarrow_predict_to_parquet_stops_with_one_line_and_leaves_no_file(
        cli_run, no_pyarrow, weights_file, photos, tmp_path):
    result = cli_run(*predict_args(weights_file, photos, "--output", tmp_path / "preds.parquet"))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == ("resclassify: error: Parquet record files need pyarrow: "
                             "pip install 'resclassify[parquet]'\n")
    assert list(tmp_path.iterdir()) == []
