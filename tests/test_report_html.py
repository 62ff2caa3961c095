"""The HTML eval report: what the page says (read back with an HTML parser), what it loads, how it is written."""

import base64
import io
import json
import os
import random
import re
import shutil

import numpy as np
import pytest
from PIL import Image

import resclassify
from conftest import SAMPLE_IMAGES
from eval_datasets import CLASSES
from html_page import parse_page
from resclassify.errors import ImageError
from resclassify.images import thumbnail_jpeg
from resclassify.render.html import EXAMPLES_PER_CONFUSION, ReportCollector, plan_thumbnails, write_html_report
from resclassify.render.summary import print_eval_summary, summary_fields

SCRIPT_NAME = '<script>alert(1)<script> & "q".jpg'
# What each sample photo shows, as an ImageNet class: tabby, espresso, missile, space_shuttle.
PHOTO_CLASSES = {"cat": 281, "coffee": 967, "rocket": 657, "astronaut": 812}
SECTIONS = ["summary", "classes", "confusions", "misclassified", "unreadable"]


def arrange_sample_images(root, model):
    """sample_images/ as a class-folder eval set: three views of each photo, labelled from the model's own
    rankings so the page has top-1 hits, top-5-only hits and misses; a broken file, and a name with markup."""
    views = []
    for source in sorted(SAMPLE_IMAGES.glob("*.jpg")):
        image = Image.open(source).convert("RGB")
        width, height = image.size
        for n, view in enumerate([image, image.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
                                  image.crop((width // 5, height // 5, width, height))]):
            path = root / "views" / f"{source.stem}_{n}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            view.save(path, quality=90)
            views.append(path)
    ranked = [[p["index"] for p in record["predictions"]]
              for record in resclassify.classify([str(p) for p in views], model, top_k=10)]
    folder = root / "data"
    for n, (path, ranks) in enumerate(zip(views, ranked)):
        # A third hit at top-1, a third at rank 3 only, and a third are labelled with what the photo
        # shows, which random weights miss.
        shows = PHOTO_CLASSES[path.stem.split("_")[0]]
        miss = shows if shows not in ranks[:5] else next(i for i in range(1000) if i not in ranks)
        label = [ranks[0], ranks[2], miss][n % 3]
        (folder / CLASSES.wnids[label]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / CLASSES.wnids[label] / path.name)
    cat_class = folder / CLASSES.wnids[ranked[3][4]]
    cat_class.mkdir(exist_ok=True)
    shutil.copy(views[3], cat_class / SCRIPT_NAME)
    (cat_class / "broken.jpg").write_bytes(b"not an image")
    return folder


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, model):
    """One evaluation over the arranged sample images: its folder, report and records, in the order they came."""
    root = tmp_path_factory.mktemp("report")
    folder = arrange_sample_images(root, model)
    records = []
    report = resclassify.evaluate(folder, model, on_record=records.append)
    return root, folder, report, records


def build_page(path, report, records, max_images=200, force=False):
    collector = ReportCollector(max_images)
    for record in records:
        collector.add(record)
    write_html_report(path, report, collector, force=force)
    return path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def page(evaluated):
    root, folder, report, records = evaluated
    text = build_page(root / "report.html", report, records)
    return root / "report.html", text, parse_page(text)


def misses(records):
    return [r for r in records if "error" not in r and not r["hit@1"]]


def test_sections_and_summary_say_what_the_terminal_says(page, evaluated):
    _, _, report, _ = evaluated
    _, _, dom = page
    assert [section.attrs["id"] for section in dom.find_all("section")] == SECTIONS
    assert dom.find("h1").text == f"Evaluation of {report['folder']}"
    terminal = io.StringIO()
    print_eval_summary(report, terminal)
    terminal_lines = terminal.getvalue().splitlines()
    fields = summary_fields(report)
    assert ("Images", "13 evaluated, 1 failed, 0 skipped (of 14 image files found)") in fields
    summary = dom.find(id="summary")
    shown = [(dt.text, dd.text) for dt, dd in zip(summary.find_all("dt"), summary.find_all("dd"))]
    assert shown == fields
    # The terminal prints the very same text after its 15-column label.
    for label, text in fields:
        assert f"{label + ':' if label else '':<15}{text}" in terminal_lines
    assert any(text.startswith("resnet50, weights ") for label, text in shown if label == "Model")
    tiles = [[div.text for div in tile.find_all("div")] for tile in summary.find_all("div", class_="tile")]
    table_rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in terminal_lines
                  if re.match(r"│ top-\d+ ", line)]
    assert [[tile[0].lower(), tile[1], tile[2].removeprefix("95% CI "), tile[3].removeprefix("error "),
             tile[4].removeprefix("correct ")] for tile in tiles] == table_rows
    assert tiles[0][4] == f"correct {report['accuracy']['top1']['correct']}/13"
    assert "Confidence intervals: Wilson score interval, 95%." in summary.text


def test_per_class_table_lists_every_class_worst_first(page, evaluated):
    _, _, report, records = evaluated
    _, _, dom = page
    rows = dom.find(id="class-table").find("tbody").find_all("tr")
    expected = sorted(report["per_class"], key=lambda r: (r["top1_correct"] / r["images"], -r["images"], r["index"]))
    assert [(row.find_all("td")[0].text, row.find_all("td")[2].text) for row in rows] == [
        (f"{r['index']} {r['label']}", str(r["images"])) for r in expected]
    assert sum(int(row.find_all("td")[2].text) for row in rows) == 13
    for row, figures in zip(rows, expected):
        accuracy = row.find("td", class_="acc")
        assert accuracy.find("span", class_="frac").text == f"{figures['top1_correct']}/{figures['images']}"
        bar = accuracy.find("span", class_="bar").find("span")
        assert bar.attrs["style"].startswith(f"width:{100 * figures['top1_correct'] / figures['images']:.1f}%")
    headers = [th.text for th in dom.find(id="class-table").find("thead").find_all("th")]
    assert headers == ["class", "WordNet id", "images", "top-1", "top-5", "missed"]


def test_confusions_with_their_examples(page, evaluated):
    _, _, report, records = evaluated
    _, _, dom = page
    rows = dom.find(id="confusions").find_all("div", class_="confusion")
    assert len(rows) == len(report["confusions"]) > 0
    wrong = misses(records)
    for row, confusion in zip(rows, report["confusions"]):
        true, predicted = confusion["true"], confusion["predicted"]
        assert row.find("span", class_="true").text == f"{true['index']} {true['label']}"
        assert row.find("span", class_="wrong").text == f"{predicted['index']} {predicted['label']}"
        pair = [r for r in wrong if (r["true"]["index"], r["predictions"][0]["index"]) ==
                (true["index"], predicted["index"])]
        assert len(pair) == confusion["count"]
        expected = sorted(pair, key=lambda r: (-r["predictions"][0]["probability"], r["path"]))
        titles = [img.attrs["title"] for img in row.find_all("img")]
        assert titles == [r["path"] for r in expected[:EXAMPLES_PER_CONFUSION]]


def test_misclassified_grid_most_confident_first(page, evaluated):
    _, _, report, records = evaluated
    _, _, dom = page
    wrong = sorted(misses(records), key=lambda r: (-r["predictions"][0]["probability"], r["path"]))
    assert len(wrong) == 13 - report["accuracy"]["top1"]["correct"]
    section = dom.find(id="misclassified")
    assert section.find("h2").text == f"Misclassified images {len(wrong)}"
    cards = section.find_all("figure", class_="card")
    assert [card.find("img").attrs["title"] for card in cards] == [r["path"] for r in wrong]
    for card, record in zip(cards, wrong):
        true = record["true"]
        assert card.find("div", class_="truth").text == f"true: {true['index']} {true['label']}"
        items = card.find("ol", class_="preds").find_all("li")
        assert [(li.find("span", class_="plabel").text, li.find("span", class_="pvalue").text) for li in items] == [
            (p["label"], f"{100 * p['probability']:.1f}%") for p in record["predictions"]]
        assert "wrong" in items[0].attrs["class"]
        # The true class, where it is among the five, is marked.
        assert [("hit" in li.attrs["class"]) for li in items] == [
            p["index"] == true["index"] for p in record["predictions"]]


def test_unreadable_images_with_their_reason(page, evaluated):
    _, folder, report, _ = evaluated
    _, _, dom = page
    section = dom.find(id="unreadable")
    assert section.find("h2").text == "Images that could not be read 1"
    cells = [td.text for td in section.find("tbody").find_all("td")]
    broken = next(folder.rglob("broken.jpg"))
    assert cells == [str(broken), "cannot identify image file"]


def test_names_and_labels_stay_text(page):
    _, text, dom = page
    # Only the page's own script; the file name with markup in it is text wherever it shows.
    assert len(dom.find_all("script")) == 1
    assert "<script>alert" not in text
    assert "&lt;script&gt;alert(1)&lt;script&gt; &amp; &quot;q&quot;.jpg" in text
    names = [div.text for div in dom.find_all("div", class_="path")]
    assert SCRIPT_NAME in names


def test_nothing_is_loaded_from_anywhere_else(page):
    _, text, dom = page
    assert not re.search(r"https?:|//", "".join(re.findall(r"url\(([^)]*)\)", text)))
    for element in dom.iter():
        for name in ("src", "href", "action", "srcset", "poster", "data"):
            value = element.attrs.get(name)
            if value is None:
                continue
            assert not value.startswith("//") and "://" not in value, (element.tag, name, value)
            assert re.match(r"^(data:image/jpeg;base64,|#|[^:]*$)", value), (element.tag, name, value)
    assert not re.search(r"https?://", text)
    policy = dom.find("meta", attrs={"http-equiv": "Content-Security-Policy"}).attrs["content"]
    assert policy.startswith("default-src 'none'; img-src data:;")
    assert {tag.tag for tag in dom.iter()}.isdisjoint({"link", "iframe", "object", "embed", "base"})


def decoded_thumbnails(dom):
    images = []
    for img in dom.find_all("img"):
        data = img.attrs["src"].removeprefix("data:image/jpeg;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        assert image.format == "JPEG"
        assert image.size == (int(img.attrs["width"]), int(img.attrs["height"]))
        images.append(image)
    return images


def test_thumbnails_are_small_jpegs(page, evaluated):
    _, _, report, records = evaluated
    _, _, dom = page
    images = decoded_thumbnails(dom)
    assert len(images) == len(misses(records)) + sum(
        min(c["count"], EXAMPLES_PER_CONFUSION) for c in report["confusions"])
    assert all(max(image.size) <= 160 for image in images)
    assert max(max(image.size) for image in images) == 160


@pytest.mark.parametrize("budget", [0, 1, 5])
def test_report_images_bounds_the_thumbnails(tmp_path, evaluated, budget):
    _, _, report, records = evaluated
    dom = parse_page(build_page(tmp_path / "small.html", report, records, max_images=budget))
    assert len(dom.find_all("img")) == budget
    cards = dom.find(id="misclassified").find_all("figure", class_="card")
    confusion_images = dom.find(id="confusions").find_all("img")
    assert len(confusion_images) == budget // 4
    assert len(cards) == budget - budget // 4
    wrong = sorted(misses(records), key=lambda r: (-r["predictions"][0]["probability"], r["path"]))
    assert [card.find("img").attrs["title"] for card in cards] == [r["path"] for r in wrong[:len(cards)]]
    note = dom.find(id="misclassified").find("p").text
    assert note.startswith(f"The {len(cards)} most confident of {len(wrong)} misclassified images")


def test_the_page_does_not_depend_on_record_order(evaluated, page):
    root, _, report, records = evaluated
    shuffled = list(records)
    random.Random(5).shuffle(shuffled)
    # Beside the first page: links to the images are relative to where the page is.
    assert build_page(root / "shuffled.html", report, shuffled) == page[1]


def test_a_vanished_image_gets_a_placeholder(tmp_path, evaluated):
    _, _, report, records = evaluated
    wrong = misses(records)
    gone = dict(wrong[0], path=str(tmp_path / "gone.jpg"))
    dom = parse_page(build_page(tmp_path / "page.html", report, [gone]))
    card = dom.find(id="misclassified").find("figure", class_="card")
    placeholder = card.find("div", class_="missing")
    assert placeholder.find("span").text == "no preview"
    assert placeholder.find("small").text == "no such file or directory"
    assert card.find("img") is None


def test_existing_file_kept_without_force_and_no_half_page_left(tmp_path, evaluated, monkeypatch):
    _, _, report, records = evaluated
    path = tmp_path / "report.html"
    path.write_text("keep me")
    with pytest.raises(FileExistsError):
        build_page(path, report, records)
    assert path.read_text() == "keep me"
    assert os.listdir(tmp_path) == ["report.html"]
    assert "<!DOCTYPE html>" in build_page(path, report, records, force=True)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    fresh = tmp_path / "fresh" / "report.html"
    fresh.parent.mkdir()
    monkeypatch.setattr("resclassify.render.html._failed_section", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_page(fresh, report, records)
    assert os.listdir(fresh.parent) == []


def test_a_run_where_nothing_could_be_read(tmp_path, model):
    folder = tmp_path / "data" / CLASSES.wnids[281]
    folder.mkdir(parents=True)
    (folder / "a.jpg").write_bytes(b"not an image")
    records = []
    report = resclassify.evaluate(tmp_path / "data", model, on_record=records.append)
    dom = parse_page(build_page(tmp_path / "report.html", report, records))
    tiles = dom.find(id="summary").find_all("div", class_="tile-value")
    assert [tile.text for tile in tiles] == ["n/a", "n/a"]
    assert dom.find(id="class-table").find("tbody").find_all("tr") == []
    assert dom.find(id="misclassified").find("p").text == "No image was evaluated."
    assert [td.text for td in dom.find(id="unreadable").find_all("td")] == [
        str(folder / "a.jpg"), "cannot identify image file"]


def test_memory_stays_bounded_and_the_choice_is_fixed(tmp_path):
    """20,000 mistakes in random order: the collector keeps 50, the 50 most confident, ties by path."""
    rng = np.random.default_rng(0)
    probabilities = np.round(rng.uniform(0.2, 1.0, 20_000), 2)  # many ties
    records = []
    for n, p in enumerate(probabilities):
        true, wrong = int(rng.integers(0, 20)), int(rng.integers(20, 40))
        records.append({"path": f"img/{n:05d}.jpg",
                        "true": {"index": true, "wnid": CLASSES.wnids[true], "label": CLASSES.labels[true]},
                        "predictions": [{"rank": 1, "index": wrong, "wnid": CLASSES.wnids[wrong],
                                         "label": CLASSES.labels[wrong], "probability": float(p)}],
                        "hit@1": False, "hit@5": False})
    collector = ReportCollector(50)
    for record in reversed(records):
        collector.add(record)
    assert len(collector._mistakes) == 50
    assert all(len(heap) <= EXAMPLES_PER_CONFUSION for heap in collector._examples.values())
    expected = sorted(records, key=lambda r: (-r["predictions"][0]["probability"], r["path"]))[:50]
    assert [entry["path"] for entry in collector.most_confident_mistakes()] == [r["path"] for r in expected]
    assert collector.misclassified == 20_000
    report = {"confusions": [{"true": {"index": 3}, "predicted": {"index": 25}, "count": 9}]}
    examples, grid = plan_thumbnails(report, collector)
    pair = [r for r in records if (r["true"]["index"], r["predictions"][0]["index"]) == (3, 25)]
    pair.sort(key=lambda r: (-r["predictions"][0]["probability"], r["path"]))
    assert examples == {0: [r["path"] for r in pair[:EXAMPLES_PER_CONFUSION]]}
    assert len(grid) == 50 - EXAMPLES_PER_CONFUSION


def test_thumbnail_is_oriented_rgb_and_small(tmp_path):
    pixels = np.zeros((200, 400, 3), dtype=np.uint8)
    pixels[:, :200] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display: 200x400, red on top
    Image.fromarray(pixels).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    jpeg, width, height = thumbnail_jpeg(tmp_path / "rotated.jpg", 160)
    image = Image.open(io.BytesIO(jpeg))
    assert (image.format, image.mode, image.size, (width, height)) == ("JPEG", "RGB", (80, 160), (80, 160))
    top, bottom = np.asarray(image)[20, 40], np.asarray(image)[140, 40]
    assert top[0] > 200 and bottom[0] < 60
    Image.new("LA", (30, 20), (0, 0)).save(tmp_path / "tiny.png")  # never enlarged; alpha over white
    jpeg, width, height = thumbnail_jpeg(tmp_path / "tiny.png", 160)
    assert (width, height) == (30, 20) and np.asarray(Image.open(io.BytesIO(jpeg))).min() > 240
    with pytest.raises(ImageError, match="no such file or directory"):
        thumbnail_jpeg(tmp_path / "missing.jpg", 160)
    os.mkfifo(tmp_path / "fifo.jpg")
    with pytest.raises(ImageError, match="not a regular file"):
        thumbnail_jpeg(tmp_path / "fifo.jpg", 160)


# --- the command line ---------------------------------------------------------------------------

def test_eval_report_option(cli_run, weights_file, evaluated, tmp_path):
    _, folder, _, _ = evaluated
    out = tmp_path / "report.html"
    result = cli_run("eval", folder, "--weights", weights_file, "--device", "cpu", "--report", out,
                     "--report-images", "3")
    assert result.exit_code == 3  # the broken file
    assert result.stdout.startswith(f"Evaluation of {folder}\n")
    dom = parse_page(out.read_text(encoding="utf-8"))
    assert len(dom.find_all("img")) == 3
    summary = dom.find(id="summary")
    for label, text in [(dt.text, dd.text) for dt, dd in zip(summary.find_all("dt"), summary.find_all("dd"))]:
        assert f"{label + ':' if label else '':<15}{text}" in result.stdout.splitlines()


def test_eval_report_refused_before_the_model_loads(cli_run, weights_file, evaluated, tmp_path, monkeypatch):
    _, folder, _, _ = evaluated
    out = tmp_path / "report.html"
    out.write_text("keep me")

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not load when the report cannot be written")

    monkeypatch.setattr(resclassify, "load_model", no_model)
    result = cli_run("eval", folder, "--weights", weights_file, "--report", out)
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == f"resclassify: error: {out}: already exists; pass --force to overwrite it\n"
    assert out.read_text() == "keep me"
    result = cli_run("eval", folder, "--weights", weights_file, "--report", tmp_path / "p.jsonl",
                     "--predictions-out", tmp_path / "p.jsonl")
    assert result.exit_code == 2
    assert "--predictions-out and --report name the same file" in result.stderr
    result = cli_run("eval", folder, "--weights", weights_file, "--report", tmp_path / "r.html",
                     "--report-images", "-1")
    assert result.exit_code == 2 and "-1 is not in the range x>=0" in result.stderr


# --- in a real browser --------------------------------------------------------------------------

@pytest.mark.browser
def test_page_loads_in_a_headless_browser_without_errors(page):
    from browser import dump_dom

    path, _, _ = page
    dom = parse_page(dump_dom(path))
    root = dom.find("html")
    assert root.attrs.get("data-report-ready") == "yes", "the page's script did not run to its end"
    assert "data-report-error" not in root.attrs, root.attrs["data-report-error"]
    assert "data-report-blocked" not in root.attrs, root.attrs["data-report-blocked"]
    assert [section.attrs["id"] for section in dom.find_all("section")] == SECTIONS
    assert dom.find("h1").text.startswith("Evaluation of ")


@pytest.mark.browser
def test_sorting_and_the_class_filter_work_in_the_browser(page, evaluated, tmp_path):
    from browser import dump_dom, with_test_script

    path, text, _ = page
    _, _, report, records = evaluated
    wnid = misses(records)[0]["true"]["wnid"]
    probe = """
    var result = {};
    var table = document.getElementById("class-table");
    function column(n) { return [].map.call(table.tBodies[0].rows, function (r) { return r.cells[n].getAttribute("data-value"); }); }
    var header = table.tHead.rows[0].cells[0];
    header.click(); result.ascending = column(0); result.sortAfterOne = header.getAttribute("aria-sort");
    header.click(); result.descending = column(0); result.sortAfterTwo = header.getAttribute("aria-sort");
    var input = document.getElementById("class-filter");
    input.value = WNID; input.dispatchEvent(new Event("input"));
    function visible(selector) { return [].filter.call(document.querySelectorAll(selector), function (e) { return !e.classList.contains("hidden"); }).length; }
    result.cards = visible("#misclassified figure.card"); result.rows = visible("#class-table tbody tr");
    input.value = "999999"; input.dispatchEvent(new Event("input"));
    result.none = visible("[data-classes]");
    document.documentElement.setAttribute("data-probe", JSON.stringify(result));
    """.replace("WNID", json.dumps(wnid.upper()))
    probed = tmp_path / "probed.html"
    probed.write_text(with_test_script(text, probe), encoding="utf-8")
    dom = parse_page(dump_dom(probed))
    assert dom.find("html").attrs.get("data-report-ready") == "yes"
    result = json.loads(dom.find("html").attrs["data-probe"])
    indices = sorted(row["index"] for row in report["per_class"])
    assert [int(i) for i in result["ascending"]] == indices
    assert [int(i) for i in result["descending"]] == indices[::-1]
    assert (result["sortAfterOne"], result["sortAfterTwo"]) == ("ascending", "descending")
    wrong = misses(records)
    assert result["cards"] == sum(wnid in (r["true"]["wnid"], r["predictions"][0]["wnid"]) for r in wrong) > 0
    assert result["rows"] == 1
    assert result["none"] == 0


# --- resclassify report: the same page from prediction files -------------------------------------

def section_html(text, name):
    """One section's markup, as it stands in the page."""
    return re.search(rf'<section id="{name}">.*?</section>', text, re.S).group(0)


@pytest.fixture(scope="module")
def from_eval(tmp_path_factory, evaluated, weights_file):
    """eval --report and --predictions-out over the arranged images, and the same run in two shards."""
    from click.testing import CliRunner

    from resclassify.cli import cli

    _, folder, _, _ = evaluated
    out = tmp_path_factory.mktemp("from-eval")
    args = ["eval", str(folder), "--weights", str(weights_file), "--device", "cpu", "--quiet"]
    result = CliRunner().invoke(cli, args + ["--predictions-out", str(out / "run.jsonl"), "--report",
                                             str(out / "eval.html")])
    assert result.exit_code == 3, result.output  # the broken file
    for k in (1, 2):
        result = CliRunner().invoke(cli, args + ["--shard", f"{k}/2", "--predictions-out", str(out / f"shard{k}.jsonl")])
        assert result.exit_code in (0, 3), result.output
    return out


def test_report_command_builds_the_eval_page_from_prediction_files(cli_run, from_eval, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("report runs no model")

    monkeypatch.setattr(resclassify, "load_model", no_model)
    result = cli_run("report", from_eval / "run.jsonl", "-o", from_eval / "report.html")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    page = (from_eval / "report.html").read_text(encoding="utf-8")
    eval_page = (from_eval / "eval.html").read_text(encoding="utf-8")
    for name in SECTIONS[1:]:
        assert section_html(page, name) == section_html(eval_page, name)
    dom = parse_page(page)
    summary = dict((dt.text, dd.text) for dt, dd in zip(dom.find(id="summary").find_all("dt"),
                                                        dom.find(id="summary").find_all("dd")) if dt.text)
    assert summary["Files"] == str(from_eval / "run.jsonl")
    assert summary["Images"] == "13 evaluated, 1 failed"
    eval_tiles = [tile.text for tile in parse_page(eval_page).find_all("div", class_="tile")]
    assert [tile.text for tile in dom.find_all("div", class_="tile")] == eval_tiles


def test_report_command_merges_shards(cli_run, from_eval):
    shards = [from_eval / "shard1.jsonl", from_eval / "shard2.jsonl"]
    assert all(path.read_text().strip() for path in shards)
    result = cli_run("report", *shards, "-o", from_eval / "merged.html", "--report-images", "200")
    assert result.exit_code == 0, result.stderr
    page = (from_eval / "merged.html").read_text(encoding="utf-8")
    eval_page = (from_eval / "eval.html").read_text(encoding="utf-8")
    for name in SECTIONS[1:]:
        assert section_html(page, name) == section_html(eval_page, name)


def test_report_command_errors(cli_run, from_eval, tmp_path):
    run = from_eval / "run.jsonl"
    out = tmp_path / "report.html"
    out.write_text("keep me")
    result = cli_run("report", run, "-o", out)
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == f"resclassify: error: {out}: already exists; pass --force to overwrite it\n"
    assert out.read_text() == "keep me"
    assert cli_run("report", run, "-o", out, "--force", "--report-images", "2").exit_code == 0
    assert len(parse_page(out.read_text(encoding="utf-8")).find_all("img")) == 2
    result = cli_run("report", run, "-o", run, "--force")
    assert result.exit_code == 2 and "is one of the prediction files" in result.stderr
    predict_output = tmp_path / "predict.jsonl"
    predict_output.write_text(json.dumps({"path": "a.jpg", "predictions": []}) + "\n")
    result = cli_run("report", predict_output, "-o", tmp_path / "other.html")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith(f"resclassify: error: {predict_output}: a.jpg: no true class")
    assert len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "other.html").exists()
    result = cli_run("report", "-o", tmp_path / "x.html")
    assert result.exit_code == 2 and "Missing argument" in result.stderr
