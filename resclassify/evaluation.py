"""Evaluation: runs a folder's labelled images through the one pipeline, counts hits, builds the report."""

import time

from .datasets import FIRST_FEW
from .images import DEFAULT_MAX_PIXELS
from .metrics import AccuracyTally, top_k as ranked_top_k, wilson_interval
from .pipeline import prediction_record, score

CONFIDENCE_INTERVAL = "Wilson score interval, 95%"
WORST_CLASSES = 10
TOP_CONFUSIONS = 10


def reported_ks(k):
    """Top-1 and top-5 always; --top-k adds its own figure."""
    return tuple(sorted({1, 5, k}))


def run_evaluation(ground_truth, model, *, top_k=5, limit=None, batch_size=32, preprocessing=None,
                   workers=None, max_pixels=DEFAULT_MAX_PIXELS, on_record=None):
    """Evaluate model on a GroundTruth (datasets.find_ground_truth) and return the report as a dict.

    preprocessing defaults to the model's own (model.preprocessing(): its input size and
    normalization). on_record, if given, is called with each image's record as soon as it is
    scored, in sorted path order: {"path", "true", "predictions", "hit@1", "hit@5", ...} or
    {"path", "true", "error"}.
    """
    if preprocessing is None:
        preprocessing = model.preprocessing()
    classes = model.classes
    ks = reported_ks(top_k)
    images = ground_truth.images if limit is None else ground_truth.images[:limit]
    tally = AccuracyTally(ks)
    failed = []
    started = time.perf_counter()
    scored_images = score((image.path for image in images), model, preprocessing, batch_size=batch_size,
                          workers=workers, max_pixels=max_pixels)
    for image, scored in zip(images, scored_images):
        record = {"path": image.path, "true": class_record(classes, image.true_index)}
        if image.real_labels is not None:
            record["real_labels"] = list(image.real_labels)
        if scored.error is not None:
            failed.append({"path": image.path, "error": scored.error.reason})
            record["error"] = scored.error.reason
        else:
            ranked = ranked_top_k(scored.probabilities, max(ks))
            hits = tally.add(image.true_index, ranked, image.accepted)
            record["predictions"] = prediction_record(scored, classes, top_k)["predictions"]
            record.update({f"hit@{k}": hit for k, hit in hits.items()})
        if on_record is not None:
            on_record(record)
    seconds = time.perf_counter() - started
    return _report(ground_truth, model, preprocessing, ks, limit, len(images), tally, failed, seconds)


def class_record(classes, index):
    return {"index": index, "wnid": classes.wnid(index), "label": classes.labels[index]}


def misclassified_record(record):
    """The --misclassified-out row for a scored record whose top-1 missed; None for a hit or a failure."""
    if "error" in record or record["hit@1"]:
        return None
    true, best = record["true"], record["predictions"][0]
    row = {"path": record["path"], "true_index": true["index"], "true_wnid": true["wnid"], "true_label": true["label"],
           "predicted_index": best["index"], "predicted_wnid": best["wnid"], "predicted_label": best["label"],
           "probability": best["probability"]}
    if "real_labels" in record:
        row["real_labels"] = record["real_labels"]
    return row


def _percent(fraction):
    return round(100.0 * fraction, 4)


def _accuracy(correct, images):
    interval = wilson_interval(correct, images)
    if interval is None:
        return {"correct": correct, "accuracy_percent": None, "error_percent": None, "ci95_percent": None}
    return {"correct": correct,
            "accuracy_percent": _percent(correct / images),
            "error_percent": _percent(1 - correct / images),
            "ci95_percent": [_percent(interval[0]), _percent(interval[1])]}


def _first_few(names):
    return {"count": len(names), "first": list(names[:FIRST_FEW])}


def _report(truth, model, preprocessing, ks, limit, run, tally, failed, seconds):
    classes = model.classes
    skipped_reasons = {}
    for skipped in truth.skipped:
        skipped_reasons.setdefault(skipped.reason, []).append(skipped.path)

    def class_row(index, images, correct):
        row = {**class_record(classes, index), "images": images}
        for k in ks:
            row[f"top{k}_correct"] = correct[k]
        row["top1_accuracy_percent"] = _percent(correct[1] / images)
        return row

    processed = tally.images + len(failed)
    return {
        "folder": truth.folder,
        "ground_truth": {"layout": truth.layout, "labels_file": truth.labels_file,
                         "real_labels_file": truth.real_labels_file},
        "model": {"name": model.name, "arch": model.arch, "weights": model.weights,
                  "backend": model.backend, "device": model.device,
                  "precision": model.precision, "classes": len(model.classes)},
        "preprocessing": {**preprocessing.as_dict(), "description": preprocessing.describe()},
        "images": {
            "found": truth.found,
            "labelled": len(truth.images),
            "limit": limit,
            "not_run": len(truth.images) - run,
            "evaluated": tally.images,
            "failed": len(failed),
            "skipped": len(truth.skipped),
        },
        "failed": failed,
        "skipped": {reason: _first_few(paths) for reason, paths in skipped_reasons.items()},
        "labels_without_image": {source: _first_few(names) for source, names in truth.labels_without_image.items()},
        "accuracy": {f"top{k}": _accuracy(tally.correct[k], tally.images) for k in ks},
        "confidence_interval": CONFIDENCE_INTERVAL,
        "throughput": {"seconds": round(seconds, 3),
                       "images_per_second": round(processed / seconds, 2) if seconds > 0 else None},
        "per_class": [class_row(*row) for row in tally.per_class()],
        "worst_classes": [class_row(*row) for row in tally.worst_classes(WORST_CLASSES)],
        "confusions": [{"true": class_record(classes, true), "predicted": class_record(classes, predicted),
                        "count": count}
                       for (true, predicted), count in tally.most_frequent_confusions(TOP_CONFUSIONS)],
    }
