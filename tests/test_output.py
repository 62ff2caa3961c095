"""output.py's one table of formats: every kind of output, its writers, what --json stands for, record files."""

import io

import pytest

from resclassify.output import FORMATS, OUTPUTS, DownloadProgress, file_format, formats, json_format, open_writer


def test_every_writer_is_under_a_format_of_the_one_list():
    for kind, output in OUTPUTS.items():
        assert set(output.writers) <= set(FORMATS), kind
        assert output.json in (None, *output.writers), kind


def test_json_is_json_lines_for_record_streams_and_one_object_for_a_report():
    assert {kind: json_format(kind) for kind in OUTPUTS} == {
        "predictions": "jsonl", "report": "json", "predict-records": None, "eval-records": None, "misclassified": None,
        "confusion": None, "weights": "jsonl", "info": "json"}


def test_a_kind_refuses_a_format_it_does_not_come_in():
    assert formats("report") == ("table", "json")
    with pytest.raises(ValueError, match="no csv format for report output; choose from table, json"):
        open_writer("report", "csv", io.StringIO())


@pytest.mark.parametrize("kind, path, expected", [
    ("eval-records", "run.jsonl", "jsonl"), ("eval-records", "RUN.CSV", "csv"), ("misclassified", "m.csv", "csv"),
    ("confusion", "matrix.csv", "csv")])
def test_record_file_format_from_the_extension(kind, path, expected):
    assert file_format(kind, path) == expected


def test_record_file_with_another_extension_is_refused():
    with pytest.raises(ValueError) as caught:
        file_format("eval-records", "run.json")
    assert str(caught.value) == "run.json: the file name must end in .jsonl or .csv"


def test_weights_table_aligns_columns_and_leaves_the_path_unpadded():
    stream = io.StringIO()
    writer = open_writer("weights", "table", stream, cache_folder="/cache", approx_mib={"resnet50": 98})
    writer.write({"model": "resnet50", "file": "r50.h5", "size": None, "md5": "abc", "cached": False,
                  "state": "missing", "path": "/cache/r50.h5", "url": "u"})
    writer.write({"model": "resnet152v2", "file": "r152v2.h5", "size": 3 * 2**20, "md5": "def", "cached": False,
                  "state": "damaged", "path": "/cache/r152v2.h5", "url": "u"})
    writer.close()
    assert stream.getvalue() == (
        "cache folder: /cache\n"
        "model        file       size     md5  cached               path\n"
        "resnet50     r50.h5     ~98 MiB  abc  no                   /cache/r50.h5\n"
        "resnet152v2  r152v2.h5  3.0 MiB  def  damaged (wrong md5)  /cache/r152v2.h5\n")


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_download_progress_draws_what_the_library_reports_only_when_enabled():
    terminal = Terminal()
    with DownloadProgress(terminal, enabled=True) as progress:
        for done in (0, 50_000, 100_000):
            progress("r50.h5", done, 100_000)
    assert "downloading r50.h5" in terminal.getvalue()
    assert progress.progress is None  # stopped on the way out
    quiet = Terminal()
    with DownloadProgress(quiet, enabled=False) as progress:
        progress("r50.h5", 0, None)
    assert quiet.getvalue() == ""
