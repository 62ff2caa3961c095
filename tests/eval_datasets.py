"""Datasets in every ground-truth layout, made from images whose rankings the test already knows."""

import collections
import re
import shutil

from resclassify.sources.ground_truth import DEVKIT_IMAGE_NAME
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
