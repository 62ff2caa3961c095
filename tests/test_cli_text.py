"""Text is text: class names and file names reach the terminal literally, whatever the terminal's encoding."""

import csv
import io
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO
from crafted_records import eval_record, write_jsonl

# Class names a user may well have: rich would read them as markup ([/b] closes nothing: an
# error; [background] is a style: it vanished).
MARKUP_LIKE = ["a[/b]", "[background]", "café"]


def table_rows(text):
    """The cells of every body row of the tables in text (rich's box or its ASCII stand-in)."""
    rows = []
    for line in text.splitlines():
        if line[:1] in ("│", "|") and not set(line) <= set("|-+ "):
            rows.append([cell.strip() for cell in line.replace("│", "|").strip()[1:-1].split("|")])
    return rows


@pytest.fixture
def markup_classes(tmp_path, own_models):
    path = tmp_path / "classes.txt"
    path.write_text("\n".join(MARKUP_LIKE) + "\n", encoding="utf-8")
    return path


def test_class_names_in_the_table_are_not_markup(cli_run, own_models, markup_classes, colour_photos):
    result = cli_run("predict", "--model", own_models / "colours.keras", "--classes", markup_classes,
                     "--preprocess-mode", "tf", "-k", "3", *colour_photos.values())
    assert result.exit_code == 0, result.stderr
    assert "internal error" not in result.stderr
    labels = [row[1] for row in table_rows(result.stdout) if row[0] != "#"]
    assert sorted(labels) == sorted(MARKUP_LIKE * len(colour_photos))


def crafted_eval_file(folder, labels):
    """Six images over three classes, two of them missed, so every table of the summary names classes."""
    records = [eval_record(f"img{n}.jpg", true, ranked, labels) for n, (true, ranked) in enumerate(
        [(0, [0, 1]), (0, [1, 0]), (1, [1, 2]), (1, [2, 0]), (2, [2, 1]), (2, [2, 0])])]
    return write_jsonl(folder / "run.jsonl", records)


def test_class_names_in_the_eval_summary_are_not_markup(cli_run, tmp_path):
    result = cli_run("eval", "--from-predictions", crafted_eval_file(tmp_path, MARKUP_LIKE))
    assert (result.exit_code, result.stderr) == (0, "")
    rows = table_rows(result.stdout)
    named = [f"{index} {label}" for index, label in enumerate(MARKUP_LIKE)]
    worst_by_accuracy = [row[0] for row in rows if len(row) == 6 and row[0] != "class"]
    assert sorted(worst_by_accuracy) == sorted(named)
    worst_by_f1 = [row[0] for row in rows if len(row) == 7 and row[0] != "class"]
    assert sorted(worst_by_f1) == sorted(named)
    confusions = [row[:2] for row in rows if len(row) == 3 and row[0] != "true class"]
    assert sorted(confusions) == [["0 a[/b]", "1 [background]"], ["1 [background]", "2 café"]]


# --- terminals that are not UTF-8 ---------------------------------------------------------------
# Real processes: the encoding of stdout is chosen when Python starts. LC_ALL=C with
# PYTHONUTF8=0 is what LC_ALL=C gives a Python that does not switch to UTF-8 by itself (PEP 540
# made 3.7+ switch); plain LC_ALL=C is checked too, where Python writes UTF-8.
ASCII_TERMINALS = {"PYTHONIOENCODING=ascii": {"PYTHONIOENCODING": "ascii", "LANG": "C.UTF-8"},
                   "LC_ALL=C, PYTHONUTF8=0": {"LC_ALL": "C", "PYTHONUTF8": "0"}}
TERMINALS = {**ASCII_TERMINALS, "LC_ALL=C": {"LC_ALL": "C"}}


def run_cli(args, terminal, **env):
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("PYTHONIOENCODING", "PYTHONUTF8", "LANG", "LANGUAGE") and not key.startswith("LC_")}
    environment.update(PYTHONPATH=os.pathsep.join([str(REPO), environment.get("PYTHONPATH", "")]), **terminal, **env)
    return subprocess.run([sys.executable, "-m", "resclassify", *map(str, args)], capture_output=True,
                          env=environment, timeout=300)


def ascii_text(data):
    """Output for an ASCII terminal: nothing else in it."""
    return data.decode("ascii")


@pytest.fixture
def non_ascii_photos(tmp_path, colour_photos):
    folder = tmp_path / "phötos"
    folder.mkdir()
    for colour, path in colour_photos.items():
        shutil.copy(path, folder / f"{colour}-é.png")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("terminal", ASCII_TERMINALS)
def test_predict_table_on_an_ascii_terminal(terminal, tmp_path, own_models, markup_classes, non_ascii_photos):
    result = run_cli(["predict", "--model", own_models / "colours.keras", "--classes", markup_classes,
                      "--preprocess-mode", "tf", "-k", "3", "--workers", "1", non_ascii_photos,
                      "--format", "table", "--output", tmp_path / "records.jsonl"], ASCII_TERMINALS[terminal])
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 0, stderr
    assert "internal error" not in stderr
    text = ascii_text(result.stdout)
    lines = text.splitlines()
    # The run line's middle dots become |; the tables are drawn in ASCII; é is shown escaped.
    assert lines[0].startswith("colours.keras (3 classes) | tensorflow on cpu | center-crop")
    assert "+---" in text
    rows = table_rows(text)
    assert sorted(row[1] for row in rows if row[0] != "#") == sorted(["a[/b]", "[background]", "caf\\xe9"] * 3)
    titles = [line for line in lines if line.endswith(".png")]
    # A file name Python read as UTF-8 shows é as \xe9; one it read as ASCII shows its two bytes.
    escaped = "\\xe9" if terminal == "PYTHONIOENCODING=ascii" else "\\xc3\\xa9"
    folder = str(non_ascii_photos).replace("ö", "\\xf6" if escaped == "\\xe9" else "\\xc3\\xb6")
    assert titles == [f"{folder}/{colour}-{escaped}.png" for colour in ("blue", "green", "red")]
    # The results themselves are whole: the record file has the names and labels as they are.
    records = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [os.path.basename(record["path"]) for record in records] == ["blue-é.png", "green-é.png", "red-é.png"]
    assert sorted(p["label"] for record in records for p in record["predictions"]) == sorted(MARKUP_LIKE * 3)


@pytest.mark.parametrize("terminal", TERMINALS)
def test_eval_summary_on_any_terminal(terminal, tmp_path):
    folder = tmp_path / "é"
    folder.mkdir()
    result = run_cli(["eval", "--from-predictions", crafted_eval_file(folder, MARKUP_LIKE)], TERMINALS[terminal])
    assert (result.returncode, result.stderr) == (0, b"")
    if terminal in ASCII_TERMINALS:
        text = ascii_text(result.stdout)
        assert "| top-1 |   66.67% | 30.00-90.32% | 33.33% |     4/6 |" in text  # – became -
        cafe = "caf\\xe9"
    else:
        text = result.stdout.decode("utf-8")
        assert "│ top-1 │   66.67% │ 30.00–90.32% │ 33.33% │     4/6 │" in text
        cafe = "café"
    confusions = [row[:2] for row in table_rows(text) if len(row) == 3 and row[0] != "true class"]
    assert sorted(confusions) == [["0 a[/b]", "1 [background]"], ["1 [background]", f"2 {cafe}"]]


@pytest.mark.slow  # a child process that imports the frameworks for `info`
@pytest.mark.parametrize("terminal", ASCII_TERMINALS)
def test_weights_and_info_on_an_ascii_terminal(terminal, tmp_path):
    home = tmp_path / "kéras"
    shown = str(home).replace("é", "\\xe9")
    env = {"KERAS_HOME": str(home)}
    listing = run_cli(["weights", "list"], ASCII_TERMINALS[terminal], **env)
    info = run_cli(["info"], ASCII_TERMINALS[terminal], **env)
    for result in (listing, info):
        assert (result.returncode, result.stderr) == (0, b"")
    if terminal == "PYTHONIOENCODING=ascii":
        # Shown, escaped, where people read it.
        assert ascii_text(listing.stdout).splitlines()[0] == f"cache folder: {shown}/models"
        assert f"cache folder    {shown}/models\n" in ascii_text(info.stdout)
    else:
        # Python read the name's bytes as undecodable: they are written back as they were.
        assert listing.stdout.splitlines()[0] == f"cache folder: {home}/models".encode("utf-8")
        assert f"cache folder    {home}/models\n".encode("utf-8") in info.stdout
    # Results stay exact: JSON is ASCII with escapes, CSV is UTF-8 whatever the terminal.
    as_json = run_cli(["weights", "list", "--json"], ASCII_TERMINALS[terminal], **env)
    assert as_json.returncode == 0
    assert json.loads(ascii_text(as_json.stdout).splitlines()[0])["path"].startswith(f"{home}/models/")
    as_csv = run_cli(["weights", "list", "--format", "csv"], ASCII_TERMINALS[terminal], **env)
    assert as_csv.returncode == 0, as_csv.stderr
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout.decode("utf-8"), newline="")))
    assert rows[0]["path"].startswith(f"{home}/models/")
