"""CSV record files are CSV over the whole file: a file name holding \\r or \\n is one field, not a line end."""

import csv
import json
import shutil

import pytest

from resclassify.errors import RecordFileError
from resclassify.record_formats import PREDICT_CSV_COLUMNS
from resclassify.records import read_record_file

# The names a run must carry through its CSV files and back, each in a field of its own.
ODD_NAMES = {"blue": "a\rcarriage.png", "green": "b\nnewline.png", "red": "c\r\nboth.png"}


def model_args(own_models):
    return ["--model", own_models / "colours.keras", "--classes", own_models / "colours.txt", "--preprocess-mode",
            "tf", "-k", "2", "--batch-size", "2"]


@pytest.fixture
def odd_photos(tmp_path, colour_photos):
    folder = tmp_path / "photos"
    folder.mkdir()
    for colour, name in ODD_NAMES.items():
        shutil.copy(colour_photos[colour], folder / name)
    shutil.copy(colour_photos["red"], folder / "d-plain.png")
    return folder


def python_csv_rows(path):
    """The rows as any CSV reader sees them (Python's, over the file opened with newline="")."""
    with open(path, encoding="utf-8", newline="") as stream:
        return list(csv.DictReader(stream))


def cut_inside(path, name):
    """Cut the file as a killed run would, inside the quoted field holding name, just after its \\n."""
    data = path.read_bytes()
    start = data.index(b'"' + name.encode())
    path.write_bytes(data[:start + name.index("\n") + 2])
    return data[:start]


def test_predict_csv_with_cr_and_newline_in_names_reads_back_and_resumes(cli_run, own_models, odd_photos,
                                                                        tmp_path):
    whole = tmp_path / "whole.csv"
    result = cli_run("predict", *model_args(own_models), odd_photos, "--output", whole)
    assert (result.exit_code, result.stderr) == (0, "")
    names = sorted(str(path) for path in odd_photos.iterdir())
    read = read_record_file(whole)
    assert not read.cut_off and read.whole_bytes == whole.stat().st_size
    assert [record["path"] for record in read.records] == names
    # Every CSV reader gets the names whole, not only ours: the fields are quoted.
    assert [row["path"] for row in python_csv_rows(whole)] == [name for name in names for _ in range(2)]

    # A finished file resumed has nothing left to do.
    finished = whole.read_bytes()
    result = cli_run("predict", *model_args(own_models), odd_photos, "--output", whole, "--resume", "--json")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    assert whole.read_bytes() == finished

    # Killed inside the quoted name with \n in it: that image and those after it are redone, no other.
    cut = tmp_path / "cut.csv"
    shutil.copy(whole, cut)
    kept = cut_inside(cut, str(odd_photos / ODD_NAMES["green"]))
    read = read_record_file(cut)
    assert read.cut_off and read.whole_bytes == len(kept)
    assert [record["path"] for record in read.records] == names[:1]
    result = cli_run("predict", *model_args(own_models), odd_photos, "--output", cut, "--resume", "--json")
    assert result.exit_code == 0, result.stderr
    assert [json.loads(line)["path"] for line in result.stdout.splitlines()] == names[1:]
    assert [(row["path"], row["rank"], row["index"]) for row in python_csv_rows(cut)] == \
        [(row["path"], row["rank"], row["index"]) for row in python_csv_rows(whole)]


def test_eval_csv_with_cr_and_newline_in_names_merges_and_resumes(cli_run, own_models, colour_photos, tmp_path):
    data = tmp_path / "data"
    for colour, name in ODD_NAMES.items():
        (data / colour).mkdir(parents=True)
        shutil.copy(colour_photos[colour], data / colour / name)
        shutil.copy(colour_photos[colour], data / colour / "plain.png")
    run = tmp_path / "run.csv"
    direct = cli_run("eval", data, *model_args(own_models), "--json", "--predictions-out", run)
    assert direct.exit_code == 0, direct.stderr
    report = json.loads(direct.stdout)
    assert report["images"]["evaluated"] == 6

    merged = cli_run("eval", "--from-predictions", run, "--json")
    assert (merged.exit_code, merged.stderr) == (0, "")
    for key in ("accuracy", "per_class", "confusions"):
        assert json.loads(merged.stdout)[key] == report[key], key
    page = cli_run("report", run, "-o", tmp_path / "report.html")
    assert (page.exit_code, page.stderr) == (0, "")

    # Cut inside the quoted name with \n in it, resumed: the same report, the image redone.
    kept = cut_inside(run, str(data / "green" / ODD_NAMES["green"]))
    refused = cli_run("eval", "--from-predictions", run)
    assert refused.exit_code == 1 and "its last record is cut off" in refused.stderr
    resumed = cli_run("eval", data, *model_args(own_models), "--json", "--predictions-out", run, "--resume")
    assert resumed.exit_code == 0, resumed.stderr
    assert json.loads(resumed.stdout)["resumed"] == len(read_record_file_bytes(tmp_path, kept).records)
    assert json.loads(resumed.stdout)["accuracy"] == report["accuracy"]
    merged = cli_run("eval", "--from-predictions", run, "--json")
    assert merged.exit_code == 0 and json.loads(merged.stdout)["per_class"] == report["per_class"]


def read_record_file_bytes(folder, data):
    path = folder / "part.csv"
    path.write_bytes(data)
    return read_record_file(path)


HEADER = ",".join(PREDICT_CSV_COLUMNS) + "\n"
RUN = '"{""top_k"":1,""classes"":3}"'


@pytest.mark.parametrize("tail, cut_off", [
    ("", False),
    ('"x\r\ny.png",m,tensorflow,1,0,,red,0.5,,' + RUN + "\n", False),
    ('"x\r\ny.png",m,tensor', True),  # cut in a plain field, no newline
    ('"x\r\n', True),  # cut inside the quoted name, after its newline
    ('"x\r', True),  # cut inside the quoted name, before its newline
])
def test_a_cut_off_last_row_is_dropped_wherever_it_was_cut(tmp_path, tail, cut_off):
    first = '"a\rb.png",m,tensorflow,1,2,,blue,0.9,,' + RUN + "\n"
    read = read_record_file_bytes(tmp_path, (HEADER + first + tail).encode())
    assert read.cut_off == cut_off
    assert [record["path"] for record in read.records] == ["a\rb.png"] + (["x\r\ny.png"] if tail and not cut_off
                                                                          else [])
    assert read.whole_bytes == len((HEADER + first + (tail if not cut_off else "")).encode())


def test_a_broken_row_before_the_end_is_an_error_not_a_cut(tmp_path):
    rows = '"a.png"x,m,tensorflow,1,2,,blue,0.9,,' + RUN + "\n" + 'b.png,m,tensorflow,1,2,,blue,0.9,,' + RUN + "\n"
    with pytest.raises(RecordFileError, match="part.csv: line 2: not CSV"):
        read_record_file_bytes(tmp_path, (HEADER + rows).encode())
