"""The HTML report keeps every value from a record file as text: labels, WordNet ids, paths, class indices."""

import os

import pytest

import resclassify
from crafted_records import eval_record, write_jsonl
from html_page import parse_page
from resclassify.render.html import SCRIPT, ReportCollector, write_html_report

# The report runs no model.
pytestmark = pytest.mark.usefixtures("no_model")

HOSTILE_LABELS = ['<script>alert("label")</script>', "</script><img src=x onerror=alert(1)>",
                  "it's \"quoted\" & <b>bold</b>"]
HOSTILE_PATHS = ['<script>alert("path")</script>.jpg', "x\" onmouseover=\"alert('path')\".jpg",
                 "</td></tr></table></section><script>alert(3)</script>.jpg", "'single'.jpg", "&amp;.jpg",
                 "</script>.jpg"]
HOSTILE_WNIDS = [f'n0{n}"><script>alert("wnid")</script>' for n in range(3)]
HOSTILE_INDEX = '</span><script>alert("index")</script><span x="'


def hostile_records(folder):
    records = [eval_record(str(folder / path), true, ranked, HOSTILE_LABELS)
               for path, (true, ranked) in zip(HOSTILE_PATHS, [(0, [0, 1]), (0, [1, 0]), (1, [1, 2]), (1, [2, 0]),
                                                               (2, [2, 1]), (2, [0, 2])])]
    for record in records:
        record["model"] = '<script>alert("model")</script>'
        for cls in [record["true"], *record["predictions"]]:
            cls["wnid"] = HOSTILE_WNIDS[cls["index"]]
    return records


def assert_only_the_pages_own_markup(page):
    """Nothing from the records became markup: one script, the page's own; no handler attributes; no
    element the page does not make itself (the parser also refuses an end tag that closes nothing)."""
    dom = parse_page(page)
    scripts = dom.find_all("script")
    assert [script.children for script in scripts] == [[SCRIPT]]
    elements = list(dom.iter())
    assert not [e.attrs for e in elements if any(name.startswith("on") for name in e.attrs)]
    assert not dom.find_all("img")  # no thumbnail (the files are not there), and no injected one
    assert not [e for e in dom.find_all("b") if e.parent.attrs.get("class") != "truth"]
    return dom


def test_hostile_labels_paths_and_model_name_stay_text(cli_run, tmp_path):
    records = hostile_records(tmp_path)
    run = write_jsonl(tmp_path / "run.jsonl", records)
    result = cli_run("report", run, "-o", tmp_path / "report.html")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    dom = assert_only_the_pages_own_markup((tmp_path / "report.html").read_text(encoding="utf-8"))

    assert dom.find("h1").text == "Evaluation from 1 prediction file"
    assert dom.find("header").find("p").text.endswith('eval report · <script>alert("model")</script>')
    class_cells = [row.find("td").text for row in dom.find(id="class-table").find("tbody").find_all("tr")]
    assert sorted(class_cells) == sorted(f"{index} {label}" for index, label in enumerate(HOSTILE_LABELS))
    wnids = [row.find_all("td")[1].text for row in dom.find(id="class-table").find("tbody").find_all("tr")]
    assert sorted(wnids) == HOSTILE_WNIDS
    # The misclassified cards: the full path in the title, the name as text, top-1 labels as text.
    cards = dom.find_all("figure", class_="card")
    missed = [record for record in records if not record["hit@1"]]
    assert sorted(card.find("div", class_="path").attrs["title"] for card in cards) == \
        sorted(record["path"] for record in missed)
    assert sorted(card.find("div", class_="path").text for card in cards) == \
        sorted(os.path.basename(record["path"]) for record in missed)
    assert sorted(card.find("span", class_="plabel").text for card in cards) == \
        sorted(record["predictions"][0]["label"] for record in missed)
    # The class filter reads the labels as they are, lower-cased.
    assert any(HOSTILE_LABELS[1].lower() in row.attrs["data-text"] for row in dom.find_all("tr", attrs=None)
               if "data-text" in row.attrs)


def test_a_class_index_that_is_no_integer_is_refused(cli_run, tmp_path):
    records = hostile_records(tmp_path)
    records[3]["true"]["index"] = HOSTILE_INDEX
    run = write_jsonl(tmp_path / "run.jsonl", records)
    for command in (["report", run, "-o", tmp_path / "report.html"], ["eval", "--from-predictions", run]):
        result = cli_run(*command)
        assert (result.exit_code, result.stdout) == (1, "")
        assert result.stderr == (f"resclassify: error: {run}: line 4: the class index {HOSTILE_INDEX!r} is not an "
                                 "integer\n")
    assert not (tmp_path / "report.html").exists()


def test_a_class_index_is_escaped_wherever_the_page_shows_it(tmp_path):
    """A report handed to the page by a program (the library's API) with an index that is no number."""
    records = hostile_records(tmp_path)
    run = write_jsonl(tmp_path / "run.jsonl", records)
    report, records = resclassify.report_from_prediction_files([run])
    collector = ReportCollector()
    for record in records:
        collector.add(record)
    hostile = {0: HOSTILE_INDEX, 1: "1\"'&", 2: "</script>2"}  # all strings: the page sorts by them
    for row in report["per_class"] + report["worst_classes"]:
        row["index"] = hostile[row["index"]]
    for confusion in report["confusions"]:
        for side in ("true", "predicted"):
            confusion[side] = {**confusion[side], "index": hostile[confusion[side]["index"]]}
    write_html_report(tmp_path / "page.html", report, collector)
    dom = assert_only_the_pages_own_markup((tmp_path / "page.html").read_text(encoding="utf-8"))
    rows = dom.find(id="class-table").find("tbody").find_all("tr")
    shown = [row for row in rows if row.find("td").attrs["data-value"] == HOSTILE_INDEX]
    assert len(shown) == 1
    assert shown[0].find("span", class_="idx").text == " ".join(HOSTILE_INDEX.split())
    assert shown[0].attrs["data-classes"] == HOSTILE_INDEX
    assert any(HOSTILE_INDEX in element.text for element in dom.find_all("span", class_="true"))
