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
