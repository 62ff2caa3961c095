"""Runs under a scheduler: one run at a time on a record file, a bounded number of unreadable inputs and
their exit status, eval --resume making its whole-run outputs again, outputs checked before any work."""

import csv
import json
import subprocess
import sys

import pytest

from conftest import eval_args, jsonl, save_image

UNREADABLE = 3  # the exit status for "finished, more inputs unreadable than --max-failures allows"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Four photos and one file that is not an image: 1 of 5 inputs (20%) unreadable."""
    folder = tmp_path_factory.mktemp("photos")
    for n in range(4):
        save_image(folder / f"photo{n}.jpg", size=(96 + 8 * n, 72), seed=40 + n, quality=90)
    (folder / "broken.jpg").write_bytes(b"not an image")
    return folder


def predict_args(weights_file, *args):
    return ["predict", *args, "--weights", weights_file, "--device", "cpu"]


# --- a record file is written by one run at a time ----------------------------------------------

HOLD_LOCK = ("import fcntl, sys\n"
             "f = open(sys.argv[1], 'a')\n"
             "fcntl.flock(f, fcntl.LOCK_EX)\n"
             "print('locked', flush=True)\n"
             "sys.stdin.read()\n")

TRY_LOCK = ("import fcntl, sys\n"
            "f = open(sys.argv[1], 'a')\n"
            "fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n")


@pytest.fixture
def other_run():
    """Another process holding the lock a run takes on a file, until the test ends (or .stop())."""
    children = []

    def hold(path):
        child = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        children.append(child)
        assert child.stdout.readline() == "locked\n"
        return child

    yield hold
    for child in children:
        child.stdin.close()
        child.wait(timeout=30)


def busy(path, pid):
    return (f"resclassify: error: {path}: is being written by another run (pid {pid}); wait for it to end, or "
            "write to another file\n")


def test_a_record_file_another_run_writes_is_refused_and_left_as_it_was(cli_run, weights_file, photos, seven,
                                                                         tmp_path, other_run):
    out = tmp_path / "labels.jsonl"
    assert cli_run(*predict_args(weights_file, photos, "--output", out)).exit_code == UNREADABLE
    out.write_text(out.read_text()[:-10])  # a half-written last record, as a run that is still going has
    before = out.read_bytes()
    holder = other_run(out)
    for args in (["--resume"], ["--force"]):
        result = cli_run(*predict_args(weights_file, photos, "--output", out, *args))
        assert (result.exit_code, result.stdout, result.stderr) == (1, "", busy(out, holder.pid)), args
        assert out.read_bytes() == before  # not cut, not emptied, nothing appended

    records = tmp_path / "run.csv"
    cli_run(*eval_args(weights_file, seven, "--predictions-out", records, "--limit", "2"))
    before = records.read_bytes()
    holder = other_run(records)
    for args in (["--resume"], ["--force"]):
        result = cli_run(*eval_args(weights_file, seven, "--json", "--predictions-out", records, *args))
        assert (result.exit_code, result.stdout, result.stderr) == (1, "", busy(records, holder.pid)), args
        assert records.read_bytes() == before


def test_the_lock_of_a_run_that_ended_is_gone(cli_run, weights_file, photos, tmp_path, other_run):
    out = tmp_path / "labels.jsonl"
    holder = other_run(out)
    holder.kill()  # killed, not ended: the kernel drops its lock
    holder.wait(timeout=30)
    result = cli_run(*predict_args(weights_file, photos, "--output", out, "--resume"))
    assert result.exit_code == UNREADABLE and len(jsonl(out)) == 5


@pytest.mark.parametrize("args", [[], ["--resume"], ["--force"]])
def test_a_run_holds_its_record_file_while_it_writes(cli_run, weights_file, photos, tmp_path, monkeypatch, args):
    import resclassify

    out = tmp_path / "labels.jsonl"
    if args == ["--force"]:
        out.write_text("an earlier file\n")
    classify = resclassify.classify
    others = []

    def classify_and_look(*a, **k):
        for n, record in enumerate(classify(*a, **k)):
            if n == 1:  # mid-run: can another process take the file?
                others.append(subprocess.run([sys.executable, "-c", TRY_LOCK, str(out)], capture_output=True,
                                             text=True).returncode)
            yield record

    monkeypatch.setattr(resclassify, "classify", classify_and_look)
    assert cli_run(*predict_args(weights_file, photos, "--output", out, *args)).exit_code == UNREADABLE
    assert others == [1]
    assert len(jsonl(out)) == 5
    # Once the run is over, the file is free.
    assert subprocess.run([sys.executable, "-c", TRY_LOCK, str(out)]).returncode == 0


# --- unreadable inputs: how many are fine, and the exit status beyond ---------------------------

def test_predict_unreadable_inputs_within_and_beyond_max_failures(cli_run, weights_file, photos, tmp_path):
    broken = photos / "broken.jpg"
    error_line = f"resclassify: error: {broken}: cannot identify image file\n"
    good = sorted(str(path) for path in photos.glob("photo*.jpg"))

    result = cli_run(*predict_args(weights_file, "--json", *good))
    assert (result.exit_code, result.stderr) == (0, "")

    cases = [
        ([], UNREADABLE, "resclassify: warning: 1 of 5 inputs could not be classified\n"),
        (["--max-failures", "1"], 0,
         "resclassify: warning: 1 of 5 inputs could not be classified (within --max-failures 1)\n"),
        (["--max-failures", "0"], UNREADABLE,
         "resclassify: warning: 1 of 5 inputs could not be classified, more than --max-failures 0 allows\n"),
        (["--max-failures", "20%"], 0,
         "resclassify: warning: 1 of 5 inputs could not be classified (within --max-failures 20%)\n"),
        (["--max-failures", "19.5%"], UNREADABLE,
         "resclassify: warning: 1 of 5 inputs could not be classified, more than --max-failures 19.5% allows\n"),
    ]
    for args, status, warning in cases:
        result = cli_run(*predict_args(weights_file, "--json", photos, *args))
        assert (result.exit_code, result.stderr) == (status, error_line + warning), args
        assert len(result.stdout.splitlines()) == 5
    quiet = cli_run(*predict_args(weights_file, "--json", photos, "--max-failures", "1", "--quiet"))
    assert (quiet.exit_code, quiet.stderr) == (0, error_line)

    # A finished file resumed gives the whole run's verdict: its earlier error records count.
    out = tmp_path / "labels.csv"
    assert cli_run(*predict_args(weights_file, photos, "--output", out, "--max-failures", "1")).exit_code == 0
    finished = out.read_bytes()
    for args, status, warning in cases:
        result = cli_run(*predict_args(weights_file, photos, "--output", out, "--resume", *args))
        assert (result.exit_code, result.stderr) == (status, warning), args
    assert out.read_bytes() == finished


@pytest.mark.parametrize("value", ["abc", "-1", "101%", "-5%", "5%%", "1.5"])
def test_max_failures_that_means_nothing_is_a_usage_error(cli_run, value):
    result = cli_run("predict", "--max-failures", value, "x.jpg")
    assert result.exit_code == 2 and "--max-failures" in result.stderr


def test_eval_unreadable_images_within_and_beyond_max_failures(cli_run, weights_file, seven, tmp_path):
    warning = "resclassify: warning: 1 of 7 images could not be read; they are left out of the figures"
    out = tmp_path / "run.jsonl"
    result = cli_run(*eval_args(weights_file, seven, "--json", "--predictions-out", out, "--max-failures", "15%"))
    assert result.exit_code == 0
    assert result.stderr.splitlines()[-1] == f"{warning} (within --max-failures 15%)"
    assert json.loads(result.stdout)["images"]["failed"] == 1

    for args, status, verdict in [([], UNREADABLE, ""),
                                  (["--max-failures", "14%"], UNREADABLE, ", more than --max-failures 14% allows"),
                                  (["--max-failures", "1"], 0, " (within --max-failures 1)")]:
        # A finished file resumed, and the file merged, say what the whole run said.
        for run in (eval_args(weights_file, seven, "--json", "--predictions-out", out, "--resume", *args),
                    ["eval", "--from-predictions", "--json", out, *args]):
            result = cli_run(*run)
            assert result.exit_code == status, run
            assert result.stderr.splitlines()[-1] == warning + verdict

    # Missing --fail-under is status 1, whatever the unreadable images.
    result = cli_run("eval", "--from-predictions", out, "--max-failures", "0", "--fail-under", "99")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1].startswith("resclassify: error: top-1 accuracy 33.33% is below")


# --- eval --resume makes the whole-run outputs again ----------------------------------------------

def test_eval_resume_makes_the_misclassified_confusion_and_report_files_of_the_whole_run(
        cli_run, weights_file, seven, tmp_path):
    whole, part = tmp_path / "whole", tmp_path / "part"
    outputs = {"--predictions-out": "run.jsonl", "--misclassified-out": "misses.csv",
               "--confusion-out": "confusion.csv", "--report": "report.html"}

    def run(folder, *args):
        folder.mkdir(exist_ok=True)
        named = [item for option, name in outputs.items() for item in (option, folder / name)]
        return cli_run(*eval_args(weights_file, seven, "--json", *named, *args))

    single = run(whole)
    assert single.exit_code == UNREADABLE
    # Stopped after three images (the same as a run killed there), then resumed over all of them.
    assert run(part, "--limit", "3").exit_code in (0, UNREADABLE)
    assert len(jsonl(part / "run.jsonl")) == 3
    resumed = run(part, "--resume")
    assert resumed.exit_code == UNREADABLE, resumed.stderr
    assert json.loads(resumed.stdout)["resumed"] == 3

    got, want = (list(csv.DictReader((folder / "misses.csv").open())) for folder in (part, whole))
    assert len(want) == 4
    assert [{k: v for k, v in row.items() if k != "probability"} for row in got] == \
        [{k: v for k, v in row.items() if k != "probability"} for row in want]
    assert [float(row["probability"]) for row in got] == pytest.approx(
        [float(row["probability"]) for row in want], rel=1e-4, abs=1e-6)
    assert (part / "confusion.csv").read_text() == (whole / "confusion.csv").read_text()
    assert "6 evaluated, 1 failed" in (part / "report.html").read_text()
    assert sorted(path.name for path in part.iterdir()) == sorted(outputs.values())  # no temporary left


# --- every output is checked before any work ------------------------------------------------------

@pytest.mark.parametrize("option", ["--report", "--misclassified-out", "--predictions-out", "--confusion-out"])
def test_an_eval_output_in_a_folder_that_cannot_be_written_stops_the_run_before_it_starts(
        cli_run, weights_file, seven, tmp_path, option, no_model):
    # /proc takes no new file, even from root (whom a read-only mode does not stop).
    name = {"--report": "report.html", "--confusion-out": "confusion.csv"}.get(option, "run.jsonl")
    path = f"/proc/resclassify-{name}"
    other = tmp_path / ("misses.jsonl" if option == "--predictions-out" else "run.jsonl")
    other_option = "--misclassified-out" if option == "--predictions-out" else "--predictions-out"
    result = cli_run(*eval_args(weights_file, seven, option, path, other_option, other))
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith(f"resclassify: error: {path}: cannot write in /proc: ")
    assert len(result.stderr.splitlines()) == 1
    assert not other.exists()


def test_a_predict_output_in_a_folder_that_cannot_be_written_stops_the_run_before_it_starts(
        cli_run, weights_file, photos, no_model):
    result = cli_run(*predict_args(weights_file, photos, "--output", "/proc/resclassify-labels.jsonl"))
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr.startswith("resclassify: error: /proc/resclassify-labels.jsonl: cannot write in /proc: ")
