"""record_formats.py, render/outputs.py, streams.py: the one table of formats, its writers, what --json stands
for, record files; names that are not text, lines that must stay whole, writes that fail."""

import base64
import csv
import errno
import io
import json
import os

import pytest

from resclassify.errors import OutputError
from resclassify.record_formats import FORMATS, CsvWriter, JsonLinesWriter, file_format, write_json_report
from resclassify.render.outputs import OUTPUTS, formats, json_format, open_writer
from resclassify.render.progress import DownloadProgress
from resclassify.streams import GuardedStream, display_path, json_record


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
    assert str(caught.value) == "run.json: the file name must end in .jsonl, .csv or .parquet"


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


LATIN1 = b"photos/caf\xe9.jpg"  # a name written by a Latin-1 system: not UTF-8


def test_a_name_that_is_not_utf8_stays_valid_json_and_its_bytes_come_back():
    path = os.fsdecode(LATIN1)  # how Python hands such a name over (os.listdir, sys.argv)
    stream = io.StringIO()
    JsonLinesWriter(stream).write({"path": path, "error": "cannot identify image file"})
    line = stream.getvalue()
    line.encode("utf-8", "strict")  # valid UTF-8 text, no lone surrogates
    assert "\\udc" not in line
    record = json.loads(line)
    assert record == {"path": "photos/caf\ufffd.jpg", "path_base64": base64.b64encode(LATIN1).decode(),
                      "error": "cannot identify image file"}
    assert base64.b64decode(record["path_base64"]) == LATIN1  # the README's recipe
    assert os.fsdecode(base64.b64decode(record["path_base64"])) == path


def test_utf8_names_are_written_as_they_are():
    assert json_record({"path": "photos/café.jpg", "error": "x"}) == {"path": "photos/café.jpg", "error": "x"}


def test_csv_and_the_json_report_stay_text():
    path = os.fsdecode(LATIN1)
    stream = io.StringIO()
    CsvWriter(stream).write({"path": path, "error": "cannot identify image file"})
    [row] = csv.DictReader(io.StringIO(stream.getvalue()))
    assert (row["path"], row["error"]) == ("photos/caf\ufffd.jpg", "cannot identify image file")
    report = io.StringIO()
    write_json_report({"folder": path, "failed": [{"path": path, "error": "x"}],
                       "skipped": {"not in a class folder": {"count": 1, "first": [path]}}}, report)
    parsed = json.loads(report.getvalue())
    assert parsed["folder"] == "photos/caf\ufffd.jpg"
    assert base64.b64decode(parsed["failed"][0]["path_base64"]) == LATIN1
    assert parsed["skipped"]["not in a class folder"]["first"] == ["photos/caf\ufffd.jpg"]


@pytest.mark.parametrize("name, shown", [
    ("plain/name.jpg", "plain/name.jpg"),
    ("back\\slash.jpg", "back\\slash.jpg"),  # nothing to escape: shown as it is
    ("new\nline.jpg", "new\\nline.jpg"),
    ("tab\tand\\slash.jpg", "tab\\tand\\\\slash.jpg"),  # escaped names double their backslashes
    (os.fsdecode(LATIN1), "photos/caf\\xe9.jpg"),
    ("bell\x07.jpg", "bell\\x07.jpg"),
])
def test_display_path_keeps_a_name_on_one_printable_line(name, shown):
    assert display_path(name) == shown


class FullDisk(io.StringIO):
    def flush(self):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failed_write_names_the_file_and_closing_does_not_fail_again():
    stream = GuardedStream(FullDisk(), "run.jsonl")
    with pytest.raises(OutputError) as caught:
        JsonLinesWriter(stream).write({"path": "a.jpg", "error": "x"})
    assert str(caught.value) == "run.jsonl: cannot write: No space left on device"
    stream.close()  # what it holds is dropped; no second error


def test_a_closed_pipe_stays_a_broken_pipe():
    class Closed(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    with pytest.raises(BrokenPipeError):
        GuardedStream(Closed(), "stdout").write("x")


def test_the_html_report_links_a_name_that_is_not_utf8_by_its_bytes_and_stays_utf8(tmp_path):
    from resclassify.render.html import _href, write_page

    path = os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9.jpg")
    assert _href(path, str(tmp_path)) == "caf%E9.jpg"  # what a browser opens as the file's own bytes
    page = tmp_path / "report.html"
    write_page(page, f"<p>{path}</p>")
    assert page.read_bytes().decode("utf-8").endswith("/caf\ufffd.jpg</p>")
