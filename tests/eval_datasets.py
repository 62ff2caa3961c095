"""Datasets in every ground-truth layout, made from images whose rankings the test already knows."""

import collections
import re
import shutil

from resclassify.datasets import DEVKIT_IMAGE_NAME
from resclassify.labels import ilsvrc2012_id_to_wnid, imagenet_classes

CLASSES = imagenet_classes()
ILSVRC_ID_OF_WNID = {wnid: ilsvrc_id for ilsvrc_id, wnid in ilsvrc2012_id_to_wnid().items()}


def planned_labels(predicted):
    """True classes for six images: two top-1 hits, one top-5-only hit, one top-10-only hit, two misses."""
    ranks = [ranked for _, ranked in predicted[:6]]
    labels = [ranks[0][0], ranks[1][0], ranks[2][3], ranks[3][7], ranks[0][0], ranks[2][3]]
    assert labels[4] not in ranks[4] and labels[5] not in ranks[5], "pick other labels for the misses"
    assert not any(len(CLASSES.indices_of_label[CLASSES.labels[i]]) > 1 for i in labels)
    return labels


def expected_figures(ranks, labels, ks=(1, 5)):
    """Hits counted by hand from classify's rankings: what eval must report."""
    correct = {k: sum(label in ranked[:k] for ranked, label in zip(ranks, labels)) for k in ks}
    per_class = collections.defaultdict(lambda: [0] + [0] * len(ks))
    confusions = collections.Counter()
    for ranked, label in zip(ranks, labels):
        per_class[label][0] += 1
        for n, k in enumerate(ks, start=1):
            per_class[label][n] += label in ranked[:k]
        if ranked[0] != label:
            confusions[(label, ranked[0])] += 1
    per_class = [(index, *counts) for index, counts in sorted(per_class.items())]
    confusions = sorted(confusions.items(), key=lambda item: (-item[1], item[0]))
    return correct, per_class, confusions


def class_folders(naming):
    def build(root, paths, labels):
        for n, (path, label) in enumerate(zip(paths, labels)):
            name = {"wnid": CLASSES.wnids[label], "label": CLASSES.labels[label], "index": str(label)}[naming]
            (root / name).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, root / name / f"image{n}.jpg")
        return root, {}
    return build


def table_file(delimiter):
    def build(root, paths, labels):
        root.mkdir()
        lines = [delimiter.join(["image", "class"])]
        for n, (path, label) in enumerate(zip(paths, labels)):
            shutil.copy(path, root / f"image{n}.jpg")
            # Every way a labels file may name a class and an image.
            value = [CLASSES.wnids[label], CLASSES.labels[label], str(label)][n % 3]
            lines.append(delimiter.join([f"image{n}" if n % 2 else f"image{n}.jpg", value]))
        labels_file = root.parent / "labels.txt"
        labels_file.write_text("\n".join(lines) + "\n")
        return root, {"labels": labels_file}
    return build


def kaggle(root, paths, labels):
    root.mkdir()
    lines = ["ImageId,PredictionString"]
    for n, (path, label) in enumerate(zip(paths, labels), start=1):
        shutil.copy(path, root / (DEVKIT_IMAGE_NAME.format(n) + ".JPEG"))
        lines.append(f"{DEVKIT_IMAGE_NAME.format(n)},{CLASSES.wnids[label]} 1 2 30 40 {CLASSES.wnids[label]} 5 6 7 8")
    labels_file = root.parent / "LOC_val_solution.csv"
    # Rows in reverse order: images are found by name, not by position.
    labels_file.write_text("\n".join([lines[0]] + lines[:0:-1]) + "\n")
    return root, {"labels": labels_file}


def devkit(root, paths, labels):
    root.mkdir()
    for n, path in enumerate(paths, start=1):
        shutil.copy(path, root / (DEVKIT_IMAGE_NAME.format(n) + ".JPEG"))
    labels_file = root.parent / "ILSVRC2012_validation_ground_truth.txt"
    labels_file.write_text("".join(f"{ILSVRC_ID_OF_WNID[CLASSES.wnids[label]]}\n" for label in labels))
    return root, {"labels": labels_file}


LAYOUTS = {
    "wnid folders": class_folders("wnid"),
    "label folders": class_folders("label"),
    "index folders": class_folders("index"),
    "csv": table_file(","),
    "tsv": table_file("\t"),
    "kaggle": kaggle,
    "devkit": devkit,
}


def source_number(path):
    """Which of the six images a dataset file is: image{n}.jpg, or ILSVRC2012_val_{n + 1}."""
    match = re.search(r"(?:image(\d+)\.jpg|ILSVRC2012_val_(\d{8})\.JPEG)$", path)
    return int(match.group(1)) if match.group(1) is not None else int(match.group(2)) - 1


def test_report_records_model_and_preprocessing(tmp_path, model, predicted_images, weights_file):
    folder, _ = class_folders("wnid")(tmp_path / "data", [predicted_images[0][0]], [predicted_images[0][1][0]])
    preprocessing = resclassify.resolve_preprocessing("squash")
    report = resclassify.evaluate(folder, model, preprocessing=preprocessing)
    assert report["model"] == {"arch": "resnet50", "weights": str(weights_file), "device": "cpu"}
    assert report["preprocessing"] == {"name": "squash", "size": 224, "interpolation": "nearest", "mode": "caffe",
                                       "exact_decode": False,
                                       "description": "squash (resized to 224x224, no crop, nearest), "
                                                      "caffe normalization"}
    assert report["confidence_interval"] == "Wilson score interval, 95%"
    json.dumps(report, allow_nan=False)


def test_failed_images_are_left_out_of_numerator_and_denominator(tmp_path, model, predicted_images):
    (path0, ranks0), (path1, ranks1) = predicted_images[:2]
    folder = tmp_path / "data"
    folder.joinpath(CLASSES.wnids[ranks0[0]]).mkdir(parents=True)
    shutil.copy(path0, folder / CLASSES.wnids[ranks0[0]] / "good.jpg")
    (folder / CLASSES.wnids[ranks0[0]] / "broken.jpg").write_bytes(b"not an image")
    folder.joinpath(CLASSES.wnids[ranks0[0]], "truncated.jpg").write_bytes(path1.read_bytes()[:3000])
    report = resclassify.evaluate(folder, model)
    assert report["images"]["evaluated"] == 1 and report["images"]["failed"] == 2
    assert report["accuracy"]["top1"]["correct"] == 1
    assert report["accuracy"]["top1"]["accuracy_percent"] == 100.0
    assert [failure["path"] for failure in report["failed"]] == [
        str(folder / CLASSES.wnids[ranks0[0]] / name) for name in ("broken.jpg", "truncated.jpg")]
    assert report["failed"][0]["error"] == "cannot identify image file"
    assert report["failed"][1]["error"].startswith("cannot decode image: image file is truncated")


def test_real_labels_rule(tmp_path, model, predicted_images):
    """A hit is any top-k class in the image's ReaL set; an empty set takes the image out."""
    paths = [path for path, _ in predicted_images[:4]]
    ranks = [ranked for _, ranked in predicted_images[:4]]
    not_predicted = next(i for i in range(1000) if not any(i in r for r in ranks))
    # Original labels all miss; ReaL sets: top-1 among others, 4th-ranked only, none, nothing predicted.
    original = [not_predicted] * 4
    real = [[not_predicted, ranks[0][0]], [ranks[1][3]], [], [not_predicted]]
    folder, options = devkit(tmp_path / "data", paths, original)
    real_file = tmp_path / "real.json"
    real_file.write_text(json.dumps(real))
    report = resclassify.evaluate(folder, model, real_labels=real_file, **options)
    assert report["images"]["evaluated"] == 3 and report["images"]["skipped"] == 1
    assert report["skipped"] == {"no ReaL label (excluded by ReaL)": {
        "count": 1, "first": [str(folder / "ILSVRC2012_val_00000003.JPEG")]}}
    assert report["accuracy"]["top1"]["correct"] == 1
    assert report["accuracy"]["top5"]["correct"] == 2
    assert report["ground_truth"]["real_labels_file"] == str(real_file)
    # Per-class figures stay under the original label.
    assert [(row["index"], row["images"], row["top1_correct"]) for row in report["per_class"]] == [
        (not_predicted, 3, 1)]


def test_limit_takes_the_first_images_in_sorted_order(tmp_path, model, predicted_images):
    paths = [path for path, _ in predicted_images[:3]]
    folder, options = table_file(",")(tmp_path / "data", paths, [1, 2, 3])
    records = []
    report = resclassify.evaluate(folder, model, limit=2, on_record=records.append, **options)
    assert [r["path"] for r in records] == [str(folder / "image0.jpg"), str(folder / "image1.jpg")]
    assert report["images"] == {"found": 3, "labelled": 3, "limit": 2, "not_run": 1, "evaluated": 2, "failed": 0,
                                "skipped": 0}


def test_top_k_beyond_5_reports_1_5_and_k(tmp_path, model, predicted_images):
    labels = planned_labels(predicted_images)
    paths = [path for path, _ in predicted_images[:6]]
    ranks = [ranked for _, ranked in predicted_images[:6]]
    folder, _ = class_folders("wnid")(tmp_path / "data", paths, labels)
    report = resclassify.evaluate(folder, model, top_k=10)
    correct, per_class, _ = expected_figures(ranks, labels, ks=(1, 5, 10))
    assert list(report["accuracy"]) == ["top1", "top5", "top10"]
    assert {k: report["accuracy"][f"top{k}"]["correct"] for k in (1, 5, 10)} == correct == {1: 2, 5: 3, 10: 4}
    assert [(row["index"], row["images"], row["top1_correct"], row["top5_correct"], row["top10_correct"])
            for row in report["per_class"]] == per_class
