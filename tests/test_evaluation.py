"""resclassify.evaluate over every ground-truth layout, against hits counted by hand from classify's rankings."""

import json
import shutil

import pytest

import resclassify
from eval_datasets import CLASSES, LAYOUTS, class_folders, devkit, expected_figures, planned_labels, source_number, \
    table_file


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_counts_the_hits_counted_by_hand(tmp_path, model, predicted_images, layout):
    labels = planned_labels(predicted_images)
    paths = [path for path, _ in predicted_images[:6]]
    ranks = [ranked for _, ranked in predicted_images[:6]]
    folder, options = LAYOUTS[layout](tmp_path / "data", paths, labels)
    records = []
    report = resclassify.evaluate(folder, model, on_record=records.append, **options)

    correct, per_class, confusions = expected_figures(ranks, labels)
    assert report["images"] == {"found": 6, "labelled": 6, "limit": None, "not_run": 0, "evaluated": 6,
                                "failed": 0, "skipped": 0}
    assert {k: report["accuracy"][f"top{k}"]["correct"] for k in (1, 5)} == correct == {1: 2, 5: 3}
    assert report["accuracy"]["top1"]["accuracy_percent"] == pytest.approx(100 * 2 / 6, abs=1e-4)
    assert report["accuracy"]["top5"]["error_percent"] == pytest.approx(50.0)
    assert [(row["index"], row["images"], row["top1_correct"], row["top5_correct"])
            for row in report["per_class"]] == per_class
    assert [((row["true"]["index"], row["predicted"]["index"]), row["count"])
            for row in report["confusions"]] == confusions
    # One record per image, each with classify's own top-5 and the true class of its file.
    assert len(records) == 6
    assert [record["path"] for record in records] == sorted(record["path"] for record in records)
    for record in records:
        n = source_number(record["path"])
        assert record["true"] == {"index": labels[n], "wnid": CLASSES.wnids[labels[n]],
                                  "label": CLASSES.labels[labels[n]]}
        assert [p["index"] for p in record["predictions"]] == ranks[n][:5]
        assert (record["hit@1"], record["hit@5"]) == (labels[n] == ranks[n][0], labels[n] in ranks[n][:5])


def test_report_records_model_and_preprocessing(tmp_path, model, predicted_images, weights_file):
    folder, _ = class_folders("wnid")(tmp_path / "data", [predicted_images[0][0]], [predicted_images[0][1][0]])
    preprocessing = resclassify.resolve_preprocessing("squash")
    report = resclassify.evaluate(folder, model, preprocessing=preprocessing)
    assert report["model"] == {"name": "resnet50", "arch": "resnet50", "weights": str(weights_file),
                               "backend": "tensorflow", "backends": ["tensorflow"], "device": "cpu",
                               "precision": "float32", "classes": 1000}
    assert report["preprocessing"] == {"name": "squash", "size": 224, "interpolation": "nearest", "mode": "caffe",
                                       "exact_decode": False, "tta": "none",
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
