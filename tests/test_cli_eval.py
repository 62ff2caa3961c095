import collections
import csv
import io
import json
import re
import shutil

import pytest

import resclassify
from conftest import eval_args
from eval_datasets import CLASSES, class_folders, expected_figures, planned_labels, table_file
from resclassify.metrics import wilson_interval
from resclassify.render.progress import EvalProgress


@pytest.fixture
def six(tmp_path, predicted_images):
    """Six images in WordNet-id class folders: 2 top-1 hits, 3 top-5 hits; labels and rankings known."""
    labels = planned_labels(predicted_images)
    paths = [path for path, _ in predicted_images[:6]]
    ranks = [ranked for _, ranked in predicted_images[:6]]
    folder, _ = class_folders("wnid")(tmp_path / "data", paths, labels)
    return folder, labels, ranks


def hand_counted(labels, top1):
    """{class: (images, times predicted, right)} for every true or predicted class."""
    return {c: (labels.count(c), top1.count(c), sum(1 for label, best in zip(labels, top1) if label == best == c))
            for c in set(labels) | set(top1)}


def test_human_summary(cli_run, weights_file, six):
    folder, labels, ranks = six
    broken = folder / CLASSES.wnids[labels[0]] / "broken.jpg"
    broken.write_bytes(b"not an image")
    shutil.copy(folder / CLASSES.wnids[labels[0]] / "image0.jpg", folder / "loose.jpg")
    result = cli_run(*eval_args(weights_file, folder, "--workers", "3", "--threads", "2"))
    assert result.exit_code == 3
    assert result.stderr == (
        f"resclassify: warning: 1 image skipped, not in a class folder: {folder / 'loose.jpg'}\n"
        f"resclassify: error: {broken}: cannot identify image file\n"
        f"resclassify: warning: 1 of 7 images could not be read; they are left out of the figures\n")
    lines = result.stdout.splitlines()
    assert lines[:10] == [
        f"Evaluation of {folder}",
        "Ground truth:  class folders named by WordNet ids",
        f"Model:         resnet50, weights {weights_file}, on cpu, float32, tensorflow backend",
        "Preprocessing: center-crop (short side 256, centre 224x224, bicubic), caffe normalization",
        "Decoding:      on 3 threads; network on 2 CPU threads",
        "",
        "Images:        6 evaluated, 1 failed, 1 skipped (of 8 image files found)",
        "               failed images are left out of every figure below, numerator and denominator",
        f"  skipped, not in a class folder: 1 ({folder / 'loose.jpg'})",
        "",
    ]
    low, high = (100 * x for x in wilson_interval(2, 6))
    assert re.search(rf"│ top-1 │ +33\.33% │ +{low:.2f}–{high:.2f}% │ +66\.67% │ +2/6 │", result.stdout)
    low, high = (100 * x for x in wilson_interval(3, 6))
    assert re.search(rf"│ top-5 │ +50\.00% │ +{low:.2f}–{high:.2f}% │ +50\.00% │ +3/6 │", result.stdout)
    assert "Confidence intervals: Wilson score interval, 95%." in lines
    assert any(re.fullmatch(r"Throughput: [\d,.]+ images/s \(7 images in \d+\.\d\d s\)", line) for line in lines)
    # Worst classes: 0/2, 0/1 (more images first among equals), 1/2, 1/1.
    _, per_class, confusions = expected_figures(ranks, labels)
    worst_start = lines.index("Worst classes by top-1 accuracy")
    worst_rows = [line for line in lines[worst_start:] if line.startswith("│")][:len(per_class)]
    assert [tuple(cell.strip() for cell in row.split("│")[1:6]) for row in worst_rows] == [
        (f"{labels[2]} {CLASSES.labels[labels[2]]}", CLASSES.wnids[labels[2]], "2", "0/2", "1/2"),
        (f"{labels[3]} {CLASSES.labels[labels[3]]}", CLASSES.wnids[labels[3]], "1", "0/1", "0/1"),
        (f"{labels[0]} {CLASSES.labels[labels[0]]}", CLASSES.wnids[labels[0]], "2", "1/2", "1/2"),
        (f"{labels[1]} {CLASSES.labels[labels[1]]}", CLASSES.wnids[labels[1]], "1", "1/1", "1/1"),
    ]
    confusion_start = lines.index("Most frequent confusions (top-1)")
    confusion_rows = [line for line in lines[confusion_start:] if line.startswith("│")]
    assert [tuple(int(cell.split()[0]) for cell in row.split("│")[1:3]) for row in confusion_rows] == [
        pair for pair, _ in confusions]


@pytest.mark.parametrize("json_option", [["--json"], ["--format", "json"]])
def test_json_report(cli_run, weights_file, six, json_option):
    folder, labels, ranks = six
    result = cli_run(*eval_args(weights_file, folder, *json_option))
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    report = json.loads(result.stdout)
    correct, per_class, confusions = expected_figures(ranks, labels)
    assert report["images"] == {"found": 6, "labelled": 6, "limit": None, "not_run": 0, "evaluated": 6,
                                "failed": 0, "skipped": 0}
    low, high = wilson_interval(2, 6)
    assert report["accuracy"]["top1"] == {"correct": 2, "accuracy_percent": 33.3333, "error_percent": 66.6667,
                                          "ci95_percent": [round(100 * low, 4), round(100 * high, 4)]}
    assert report["accuracy"]["top5"]["correct"] == correct[5] == 3
    assert [(r["index"], r["images"], r["top1_correct"], r["top5_correct"]) for r in report["per_class"]] == per_class
    assert report["per_class"][0].keys() == {"index", "wnid", "label", "images", "top1_correct", "top5_correct",
                                             "top1_accuracy_percent", "predicted", "precision_percent",
                                             "recall_percent", "f1_percent"}
    # Precision, recall and F1 of the top-1 class, counted here from the rankings and the labels.
    counts = hand_counted(labels, [ranked[0] for ranked in ranks])
    for row in report["per_class"]:
        images, predicted, hits = counts[row["index"]]
        assert (row["images"], row["predicted"]) == (images, predicted)
        assert row["precision_percent"] == (None if predicted == 0 else round(100 * hits / predicted, 4))
        assert row["recall_percent"] == round(100 * hits / images, 4)
        assert row["f1_percent"] == round(100 * 2 * hits / (images + predicted), 4)
    with_images = [c for c in counts if counts[c][0]]
    precision = [counts[c][2] / counts[c][1] if counts[c][1] else 0.0 for c in with_images]
    recall = [counts[c][2] / counts[c][0] for c in with_images]
    f1 = [2 * counts[c][2] / (counts[c][0] + counts[c][1]) for c in with_images]
    weights = [counts[c][0] / 6 for c in with_images]
    scores = report["precision_recall"]
    assert scores["classes_averaged"] == len(with_images) == 4
    assert scores["macro"] == pytest.approx({"precision_percent": 100 * sum(precision) / 4,
                                             "recall_percent": 100 * sum(recall) / 4,
                                             "f1_percent": 100 * sum(f1) / 4}, abs=1e-4)
    assert scores["image_weighted"] == pytest.approx({
        "precision_percent": 100 * sum(w * p for w, p in zip(weights, precision)),
        "recall_percent": 100 * 2 / 6,  # image-weighted recall is top-1 accuracy
        "f1_percent": 100 * sum(w * f for w, f in zip(weights, f1))}, abs=1e-4)
    assert [(r["index"], r["images"], r["predicted"]) for r in scores["predicted_without_image"]] == [
        (c, 0, counts[c][1]) for c in sorted(counts) if counts[c][0] == 0]
    assert {r["index"] for r in scores["worst_by_f1"]} == set(with_images)
    assert [r["f1_percent"] for r in scores["worst_by_f1"]] == sorted(r["f1_percent"] for r in scores["worst_by_f1"])
    assert [((c["true"]["index"], c["predicted"]["index"]), c["count"]) for c in report["confusions"]] == confusions
    assert report["preprocessing"]["description"] == (
        "center-crop (short side 256, centre 224x224, bicubic), caffe normalization")
    assert report["throughput"]["images_per_second"] > 0


def test_json_report_says_how_images_were_decoded_and_worker_processes_give_the_same_figures(
        cli_run, weights_file, six):
    folder, _, _ = six
    threads = json.loads(cli_run(*eval_args(weights_file, folder, "--json", "--workers", "2", "--threads", "1",
                                            "--decoding", "threads")).stdout)
    result = cli_run(*eval_args(weights_file, folder, "--json", "--workers", "2", "--threads", "1",
                                "--decoding", "processes"))
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    processes = json.loads(result.stdout)
    assert threads["decoding"] == {"mode": "threads", "workers": 2, "network_threads": 1,
                                   "description": "2 threads"}
    assert processes["decoding"] == {"mode": "processes", "workers": 2, "network_threads": 1,
                                     "description": "2 processes"}
    assert processes["accuracy"] == threads["accuracy"]
    assert processes["per_class"] == threads["per_class"]


def test_predictions_out_jsonl(cli_run, weights_file, six, tmp_path):
    folder, labels, ranks = six
    out = tmp_path / "predictions.jsonl"
    result = cli_run(*eval_args(weights_file, folder, "--json", "--predictions-out", out))
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    expected = {str(path): record for path, record in zip(
        sorted(folder.rglob("*.jpg")), resclassify.classify(sorted(map(str, folder.rglob("*.jpg"))),
                                                             resclassify.load_model(str(weights_file), device="cpu")))}
    assert [r["path"] for r in records] == sorted(expected)
    for record in records:
        n = int(re.search(r"image(\d)\.jpg$", record["path"]).group(1))
        assert list(record) == ["path", "model", "backend", "true", "predictions", "hit@1", "hit@5", "run"]
        assert record["model"] == "resnet50" and record["run"]["top_k"] == 5
        assert record["run"] == expected[record["path"]]["run"]  # eval and predict name a run alike
        assert record["true"] == {"index": labels[n], "wnid": CLASSES.wnids[labels[n]], "label": CLASSES.labels[labels[n]]}
        assert [p["index"] for p in record["predictions"]] == ranks[n][:5]
        classify_predictions = expected[record["path"]]["predictions"]
        assert [p["probability"] for p in record["predictions"]] == pytest.approx(
            [p["probability"] for p in classify_predictions], abs=1e-4)
        assert (record["hit@1"], record["hit@5"]) == (labels[n] == ranks[n][0], labels[n] in ranks[n][:5])


def test_predictions_out_csv_and_misclassified_out(cli_run, weights_file, six, tmp_path):
    folder, labels, ranks = six
    predictions, misclassified = tmp_path / "predictions.csv", tmp_path / "misses.csv"
    result = cli_run(*eval_args(weights_file, folder, "--json", "--predictions-out", predictions,
                                "--misclassified-out", misclassified))
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(predictions.open()))
    assert list(rows[0]) == ["path", "true_index", "true_wnid", "true_label", "hit@1", "hit@5", "predicted_indices",
                             "predicted_wnids", "predicted_labels", "predicted_probabilities", "error", "model",
                             "backend", "run"]
    for row in rows:
        n = int(re.search(r"image(\d)\.jpg$", row["path"]).group(1))
        assert (row["true_index"], row["true_label"]) == (str(labels[n]), CLASSES.labels[labels[n]])
        assert row["predicted_indices"] == " ".join(map(str, ranks[n][:5]))
        assert row["predicted_wnids"] == " ".join(CLASSES.wnids[i] for i in ranks[n][:5])
        assert row["predicted_labels"] == "|".join(CLASSES.labels[i] for i in ranks[n][:5])
        assert row["model"] == "resnet50" and json.loads(row["run"])["weights"] == "resnet50_random.h5"
        assert (row["hit@1"], row["hit@5"]) == (str(int(labels[n] == ranks[n][0])), str(int(labels[n] in ranks[n][:5])))
        assert row["error"] == ""
    misses = list(csv.DictReader(misclassified.open()))
    assert list(misses[0]) == ["path", "true_index", "true_wnid", "true_label", "predicted_index", "predicted_wnid",
                               "predicted_label", "probability"]
    expected_misses = sorted((str(next(folder.rglob(f"image{n}.jpg"))), labels[n], ranks[n][0])
                             for n in range(6) if labels[n] != ranks[n][0])
    assert [(m["path"], int(m["true_index"]), int(m["predicted_index"])) for m in misses] == expected_misses
    assert misses[0]["predicted_label"] == CLASSES.labels[expected_misses[0][2]]


def test_summary_shows_precision_recall_and_the_worst_classes_by_f1(cli_run, weights_file, six, tmp_path):
    folder, labels, ranks = six
    confusion = tmp_path / "confusion.csv"
    result = cli_run(*eval_args(weights_file, folder, "--confusion-out", confusion))
    assert result.exit_code == 0, result.stderr
    report = json.loads(cli_run(*eval_args(weights_file, folder, "--json")).stdout)["precision_recall"]
    lines = result.stdout.splitlines()
    start = lines.index("Precision, recall and F1 of the top-1 class, averaged over the 4 classes with images")
    rows = [line for line in lines[start:start + 8] if line.startswith("│ ")]
    figures = [f"{report[key][f'{name}_percent']:.2f}%" for key in ("macro", "image_weighted")
               for name in ("precision", "recall", "f1")]
    assert [[cell.strip() for cell in row.split("│")[1:5]] for row in rows] == [
        ["macro", *figures[:3]], ["image-weighted", *figures[3:]]]
    start = lines.index("Worst classes by F1 (top-1)")
    worst = [[cell.strip() for cell in line.split("│")[1:8]] for line in lines[start:] if line.startswith("│ ")][:4]
    counts = hand_counted(labels, [ranked[0] for ranked in ranks])
    assert [int(row[0].split()[0]) for row in worst] == [r["index"] for r in report["worst_by_f1"]]
    for row, figures in zip(worst, report["worst_by_f1"]):
        images, predicted, _ = counts[int(row[0].split()[0])]
        assert (row[2], row[3]) == (str(images), str(predicted))
        assert row[4:] == [("n/a" if figures[f"{name}_percent"] is None else f"{figures[f'{name}_percent']:.2f}%")
                           for name in ("precision", "recall", "f1")]
        assert (row[4] == "n/a") == (predicted == 0)
    # The confusion matrix: one true,predicted,count row (class indices) per pair that occurred.
    top1 = collections.Counter((labels[n], ranks[n][0]) for n in range(6))
    assert confusion.read_text() == "true,predicted,count\n" + "".join(
        f"{true},{predicted},{count}\n" for (true, predicted), count in sorted(top1.items()))


def test_existing_output_is_kept_without_force_and_checked_before_the_model_loads(
        cli_run, weights_file, six, tmp_path, monkeypatch):
    folder, _, _ = six
    out = tmp_path / "predictions.jsonl"
    out.write_text("keep me\n")

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not load when the output cannot be written")

    monkeypatch.setattr(resclassify, "load_model", no_model)
    result = cli_run(*eval_args(weights_file, folder, "--predictions-out", out))
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == f"resclassify: error: {out}: already exists; pass --force to overwrite it\n"
    assert out.read_text() == "keep me\n"
    monkeypatch.undo()
    result = cli_run(*eval_args(weights_file, folder, "--json", "--predictions-out", out, "--force"))
    assert result.exit_code == 0, result.stderr
    assert len(out.read_text().splitlines()) == 6


@pytest.mark.parametrize("threshold, status", [("33", 0), ("33.3333", 0), ("40", 1)])
def test_fail_under(cli_run, weights_file, six, threshold, status):
    folder, _, _ = six
    result = cli_run(*eval_args(weights_file, folder, "--json", "--fail-under", threshold))
    assert result.exit_code == status
    assert json.loads(result.stdout)["accuracy"]["top1"]["accuracy_percent"] == 33.3333
    assert result.stderr == ("" if status == 0 else
                             "resclassify: error: top-1 accuracy 33.33% is below --fail-under 40%\n")


def test_limit(cli_run, weights_file, six, tmp_path):
    folder, labels, _ = six
    out = tmp_path / "p.jsonl"
    result = cli_run(*eval_args(weights_file, folder, "--json", "--limit", "2", "--predictions-out", out))
    assert result.exit_code == 0, result.stderr
    images = json.loads(result.stdout)["images"]
    assert (images["evaluated"], images["limit"], images["not_run"]) == (2, 2, 4)
    first_two = sorted(str(p) for p in folder.rglob("*.jpg"))[:2]
    assert [json.loads(line)["path"] for line in out.read_text().splitlines()] == first_two


def test_top_k_beyond_5_in_the_human_summary(cli_run, weights_file, six):
    folder, _, _ = six
    result = cli_run(*eval_args(weights_file, folder, "--top-k", "10"))
    assert result.exit_code == 0, result.stderr
    assert [line.split("│")[1].strip() for line in result.stdout.splitlines()
            if re.match(r"│ top-\d+ ", line)] == ["top-1", "top-5", "top-10"]


def test_imagenetv2_integer_folders(cli_run, weights_file, tmp_path, predicted_images):
    folder = tmp_path / "imagenetv2"
    for index in range(11):
        (folder / str(index)).mkdir(parents=True)
        shutil.copy(predicted_images[index % 8][0], folder / str(index) / f"{index}.jpeg")
    out = tmp_path / "p.jsonl"
    result = cli_run(*eval_args(weights_file, folder, "--json", "--predictions-out", out))
    assert result.exit_code == 0, result.stderr
    for record in map(json.loads, out.read_text().splitlines()):
        assert record["true"]["index"] == int(record["path"].split("/")[-2])
    report = json.loads(result.stdout)
    assert report["ground_truth"]["layout"] == "class folders named by class indices"
    assert [(row["index"], row["images"]) for row in report["per_class"]] == [(i, 1) for i in range(11)]


def test_label_file_naming_missing_images(cli_run, weights_file, tmp_path, predicted_images):
    folder, options = table_file(",")(tmp_path / "data", [p for p, _ in predicted_images[:2]], [1, 2])
    labels = options["labels"]
    labels.write_text(labels.read_text() + "gone.jpg,tabby\nalso_gone,tabby\n")
    shutil.copy(predicted_images[2][0], folder / "stray.jpg")
    result = cli_run(*eval_args(weights_file, folder, "--labels", labels))
    assert result.exit_code == 0
    assert result.stderr == (
        f"resclassify: warning: 1 image skipped, no label in the labels file: {folder / 'stray.jpg'}\n"
        f"resclassify: warning: {labels}: 2 labels with no image: gone.jpg, also_gone\n")
    assert f"  skipped, no label in the labels file: 1 ({folder / 'stray.jpg'})" in result.stdout.splitlines()
    assert f"  labels with no image, in {labels}: 2 (gone.jpg, also_gone)" in result.stdout.splitlines()
    assert "Ground truth:  labels file (CSV)" in result.stdout.splitlines()
    quiet = cli_run(*eval_args(weights_file, folder, "--labels", labels, "--quiet"))
    assert quiet.stderr == ""


@pytest.mark.parametrize("folder_name, message", [
    ("crane", '"crane" names 2 ImageNet classes, n02012849 (index 134, crane) and n03126707 (index 517, crane); '
              "use the WordNet id instead"),
    ("tabbby", '"tabbby" is not an ImageNet class (a WordNet id, a Keras label or an index 0..999); '
               "nearest labels: tabby, tray"),
])
def test_bad_class_folder_is_one_error_line(cli_run, weights_file, tmp_path, predicted_images, folder_name, message):
    (tmp_path / "data" / folder_name).mkdir(parents=True)
    shutil.copy(predicted_images[0][0], tmp_path / "data" / folder_name / "a.jpg")
    result = cli_run(*eval_args(weights_file, tmp_path / "data"))
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == f"resclassify: error: {tmp_path / 'data' / folder_name}: {message}\n"


def test_bad_class_folder_with_a_classes_file_names_that_file(cli_run, tmp_path, predicted_images):
    # The folders are checked against the classes in use, before the model is even loaded.
    (tmp_path / "flowers.txt").write_text("rose\ntulip\n")
    for name in ("rose", "tabby"):
        (tmp_path / "data" / name).mkdir(parents=True)
        shutil.copy(predicted_images[0][0], tmp_path / "data" / name / "a.jpg")
    result = cli_run("eval", "--model", tmp_path / "flowers.keras", "--classes", tmp_path / "flowers.txt",
                     tmp_path / "data")
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == (f"resclassify: error: {tmp_path / 'data' / 'tabby'}: \"tabby\" is not a class of "
                             "flowers.txt (a label or an index 0..1); no label is close\n")


def test_flat_folder_without_labels(cli_run, weights_file, tmp_path, predicted_images):
    (tmp_path / "data").mkdir()
    shutil.copy(predicted_images[0][0], tmp_path / "data" / "a.jpg")
    result = cli_run(*eval_args(weights_file, tmp_path / "data"))
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr.startswith(f"resclassify: error: {tmp_path / 'data'}: no class folders in it, and no "
                                    f"--labels FILE")
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (["--predictions-out", "out.txt"], "out.txt: the file name must end in .jsonl, .csv or .parquet"),
    (["--predictions-out", "same.csv", "--misclassified-out", "same.csv"],
     "--predictions-out and --misclassified-out name the same file"),
    (["--confusion-out", "same.csv", "--misclassified-out", "same.csv"],
     "--misclassified-out and --confusion-out name the same file"),
    (["--confusion-out", "matrix.txt"], "matrix.txt: the file name must end in .csv"),
    (["--probabilities-out", "p.txt"], "p.txt: the file name must end in .npy"),
    (["--fail-under", "101"], "101.0 is not in the range 0<=x<=100"),
    (["--limit", "0"], "0 is not in the range x>=1"),
    (["--workers", "0"], "0 is not in the range x>=1"),
    (["--decoding", "fork"], "'fork' is not one of 'auto', 'threads', 'processes'"),
])
def test_usage_errors_exit_2(cli_run, weights_file, six, args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder, _, _ = six
    result = cli_run(*eval_args(weights_file, folder, *args))
    assert result.exit_code == 2
    assert message in result.stderr
    assert not (tmp_path / "same.csv").exists()


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_only_when_enabled():
    terminal = FakeTerminal()
    with EvalProgress(3, terminal, enabled=True) as progress:
        for _ in range(3):
            progress.advance()
        progress.line("resclassify: error: x.jpg: cannot identify image file")
    assert "evaluating" in terminal.getvalue()
    assert "resclassify: error: x.jpg: cannot identify image file" in terminal.getvalue()
    plain = io.StringIO()
    with EvalProgress(3, plain, enabled=False) as progress:
        progress.advance()
        progress.line("resclassify: error: x.jpg: cannot identify image file")
    assert plain.getvalue() == "resclassify: error: x.jpg: cannot identify image file\n"


def test_hostile_folder_links_fifos_loops_and_merged_class_folders(cli_run, weights_file, tmp_path):
    import os

    from conftest import save_image
    from resclassify.render.summary import print_eval_summary

    data = tmp_path / "data"
    for n, folder in enumerate(["n02123045", "tabby", "281", "tiger_cat"]):
        save_image(data / folder / f"image{n}.jpg", seed=n, size=(64, 48), quality=90)
    (data / "tabby" / "up").symlink_to("..")  # would count every other class's images as tabby
    os.mkfifo(data / "tiger_cat" / "pipe.jpg")
    (data / "loop.jpg").symlink_to("loop.jpg")
    result = cli_run(*eval_args(weights_file, data, "--json"))
    assert result.exit_code == 3  # the FIFO could not be read
    report = json.loads(result.stdout)
    assert report["images"] == {"found": 6, "labelled": 5, "limit": None, "not_run": 0, "evaluated": 4,
                                "failed": 1, "skipped": 1}
    assert report["failed"] == [{"path": str(data / "tiger_cat" / "pipe.jpg"),
                                 "error": "not a regular file: a FIFO (named pipe)"}]
    assert report["skipped"] == {
        "symbolic link loop": {"count": 1, "first": [str(data / "loop.jpg")]},
        "symbolic link loop, not followed": {"count": 1, "first": [str(data / "tabby" / "up")]},
    }
    assert report["ground_truth"]["merged_class_folders"] == [
        {"index": 281, "wnid": "n02123045", "label": "tabby", "folders": ["281", "n02123045", "tabby"]}]
    assert [(row["index"], row["images"]) for row in report["per_class"]] == [(281, 3), (282, 1)]
    assert result.stderr.splitlines() == [
        f"resclassify: warning: 1 image skipped, symbolic link loop: {data / 'loop.jpg'}",
        f"resclassify: warning: {data / 'tabby' / 'up'}: symbolic link loop, not followed",
        "resclassify: warning: class folders 281, n02123045 and tabby all name class 281 (tabby, n02123045); "
        "their images are counted together",
        f"resclassify: error: {data / 'tiger_cat' / 'pipe.jpg'}: not a regular file: a FIFO (named pipe)",
        "resclassify: warning: 1 of 5 images could not be read; they are left out of the figures",
    ]
    summary = io.StringIO()
    print_eval_summary(report, summary)
    lines = summary.getvalue().splitlines()
    assert f"{'':15}class folders 281, n02123045 and tabby all name 281 tabby: counted together" in lines
    assert f"  skipped, symbolic link loop, not followed: 1 ({data / 'tabby' / 'up'})" in lines
