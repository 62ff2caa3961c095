"""Evaluation: labelled images through the pipeline (or saved prediction files) → records → hits → the report."""

import contextlib
import os
import time

from .archs import ARCH_CHOICES
from .config import Preprocessing
from .sources.ground_truth import FIRST_FEW
from .decoding import plan_for
from .errors import RecordFileError
from .images import DEFAULT_MAX_PIXELS
from .metrics import AccuracyTally, averaged_scores, class_scores, hit_at_k, top_k as ranked_top_k, \
    wilson_interval, worst_by_f1
from .parquet_records import is_parquet, journal_path
from .pipeline import prediction_record
from .sources.remote import is_url
from .records import check_earlier_records as records_check, describe_differences, differences, identity_of, \
    identity_of_run, read_record_file, resumption_for, run_identity

CONFIDENCE_INTERVAL = "Wilson score interval, 95%"
WORST_CLASSES = 10
TOP_CONFUSIONS = 10
PRECISION_RECALL_BASIS = "top-1 class against each image's own class (its folder or labels-file class)"


def reported_ks(k):
    """Top-1 and top-5 always; --top-k adds its own figure."""
    return tuple(sorted({1, 5, k}))


class RecordTally:
    """Counts eval records into the report's figures: a live run's and saved files' go through the same door,
    so a report rebuilt from files matches the run's to the last digit."""

    def __init__(self, ks):
        self.ks = ks
        self.accuracy = AccuracyTally(ks)
        self.failed = []
        self.class_records = {}  # index -> {"index", "wnid", "label"}, as the records name it
        self.backends = set()  # what classified the records: shards and resumes may have run on several

    def add(self, record):
        true = record["true"]
        self.class_records.setdefault(true["index"], true)
        if "error" in record:
            self.failed.append({"path": record["path"], "error": record["error"]})
            return
        if record.get("backend"):
            self.backends.add(record["backend"])
        best = record["predictions"][0]
        self.class_records.setdefault(best["index"], {key: best[key] for key in ("index", "wnid", "label")})
        self.accuracy.add_hits(true["index"], {k: record[f"hit@{k}"] for k in self.ks}, best["index"])


def run_evaluation(ground_truth, model, *, top_k=5, limit=None, shard=None, batch_size=32, preprocessing=None,
                   workers=None, decoding="auto", network_threads=None, max_pixels=DEFAULT_MAX_PIXELS,
                   on_record=None, resume=None, engine=None, on_probabilities=None, on_confusion_matrix=None):
    """Evaluate model on a GroundTruth (sources.inputs.find_ground_truth) and return the report as a dict.

    preprocessing defaults to the model's own (model.preprocessing(): its input size and
    normalization). limit keeps the first images in sorted path order; shard (sources.shards.Shard)
    then keeps its part. on_record, if given, is called with each image's record as soon as it
    is scored, in sorted path order: {"path", "model", "true", "predictions", "hit@1", "hit@5",
    ..., "run"} or {"path", "true", "error"}. resume continues the --predictions-out file of an
    earlier, interrupted run of the same evaluation (its path, or the records.Resumption that
    resume_evaluation made of it): its records are counted, not run again, after checking that
    they come from this model and run and these images (else RecordFileError); a half-written
    last record is cut off the file, so that the records on_record sees can be appended to it.
    engine runs the network (resclassify.engines; default this machine). workers and decoding
    are pipeline.score's; network_threads, if given, is reported beside them.
    on_probabilities(path, probabilities) sees the full probability vector of each image this
    run scores, in the same order as on_record (None for an image that could not be read).
    on_confusion_matrix(rows) gets the top-1 confusion matrix at the end: (true index,
    predicted index, images) for every pair that occurred, earlier records included.
    """
    if preprocessing is None:
        preprocessing = model.preprocessing()
    classes = model.classes
    ks = reported_ks(top_k)
    images = images_to_run(ground_truth, limit, shard)
    run = run_identity(model, preprocessing, top_k)
    tally = RecordTally(ks)
    earlier = []
    if resume is not None:
        resumption = resume_evaluation(resume, images, identity_of_run(model, preprocessing, top_k))
        earlier = resumption.records
    for record in earlier:
        tally.add(record)
    todo = resumption.remaining(images, key=lambda image: image.path) if earlier else images
    if engine is None:
        from .engines import local_engine

        engine = local_engine()
    started = time.perf_counter()
    scored_images = engine.score([image.input for image in todo], model, preprocessing, batch_size=batch_size,
                                 workers=workers, decoding=decoding, max_pixels=max_pixels)
    with contextlib.closing(scored_images):
        for image, scored in zip(todo, scored_images):
            record = evaluation_record(image, scored, classes, ks, top_k, model, run)
            tally.add(record)
            if on_probabilities is not None:
                on_probabilities(image.path, scored.probabilities if scored.error is None else None)
            if on_record is not None:
                on_record(record)
    seconds = time.perf_counter() - started
    if on_confusion_matrix is not None:
        on_confusion_matrix(tally.accuracy.confusion_matrix())
    skipped_reasons = {}
    # Images left out, then folders and links not searched (their reasons say so: "..., not followed").
    for skipped in ground_truth.skipped + ground_truth.not_followed:
        skipped_reasons.setdefault(skipped.reason, []).append(skipped.path)
    return _report(
        tally,
        folder=ground_truth.folder,
        ground_truth={"layout": ground_truth.layout, "labels_file": ground_truth.labels_file,
                      "real_labels_file": ground_truth.real_labels_file,
                      "merged_class_folders": ground_truth.merged_class_folders},
        model={"name": model.name, "arch": model.arch, "weights": model.weights, "backend": model.backend,
               "device": _device(model, engine), "precision": model.precision, "classes": len(model.classes)},
        preprocessing=preprocessing,
        decoding=_decoding_section(engine, decoding, workers, len(todo), model.device, network_threads),
        images={"found": ground_truth.found, "labelled": len(ground_truth.images), "limit": limit,
                "not_run": len(ground_truth.images) - len(images), "skipped": len(ground_truth.skipped)},
        skipped={reason: _first_few(paths) for reason, paths in skipped_reasons.items()},
        labels_without_image={source: _first_few(names)
                              for source, names in ground_truth.labels_without_image.items()},
        throughput=_throughput(len(todo), seconds),
        shard=None if shard is None else str(shard),
        resumed=len(earlier),
    )


def images_to_run(ground_truth, limit=None, shard=None):
    """The images an evaluation runs: the labelled ones in sorted path order, cut by limit, then shard's part."""
    images = ground_truth.images if limit is None else ground_truth.images[:limit]
    if shard is not None and not ground_truth.shard_taken:
        images = shard.take(images, key=lambda image: image.path)
    return images


def resume_evaluation(resume, images, identity):
    """An earlier run's --predictions-out file (its path, or a records.Resumption), read back and checked to be
    continued by the evaluation of images with identity (records.identity_of_run), its half-written tail cut off."""
    def check(records, paths, identity, source):
        return check_earlier_records(records, images, identity, source)

    return resumption_for(resume, [image.path for image in images], identity, check)


def _decoding_section(engine, decoding, workers, images, device, network_threads):
    """How the images were decoded, for the report; None where another engine did it elsewhere."""
    if getattr(engine, "name", None) != "local":
        return None
    plan = plan_for(decoding, workers, images=images, device=device)
    return {**plan.as_dict(), "network_threads": network_threads, "description": plan.describe()}


def _device(model, engine):
    described = getattr(engine, "describe", lambda classifier: None)(model)
    return described or model.device


def evaluation_record(image, scored, classes, ks, top_k, model, run):
    """An image's eval record: its true class, and its top-k with hit@k, or the reason it has none."""
    record = {"path": image.path}
    if scored.error is None:
        record["model"] = model.name
        record["backend"] = scored.backend or model.backend
    record["true"] = class_record(classes, image.true_index)
    if image.real_labels is not None:
        record["real_labels"] = list(image.real_labels)
    if scored.error is not None:
        record["error"] = scored.error.reason
        return record
    ranked = ranked_top_k(scored.probabilities, max(ks))
    record["predictions"] = prediction_record(scored, classes, top_k)["predictions"]
    record.update({f"hit@{k}": hit_at_k(ranked, image.accepted, k) for k in ks})
    record["run"] = run
    return record


def check_earlier_records(previous, images, identity, source="the file"):
    """How many records each image already has (a Counter of paths), after checking they belong to this evaluation.

    Each must be one of this run's images, with the same true class, from the same model and
    run; else RecordFileError, as resuming would mix two runs.
    """
    truth = {image.path: image.true_index for image in images}
    for record in previous:
        path = record["path"]
        if "true" not in record:
            raise RecordFileError(f"{source}: {path}: no true class (a predict --output file?)")
        if path in truth and record["true"]["index"] != truth[path]:
            raise RecordFileError(f"{source}: {path}: true class {record['true']['index']} there, "
                                  f"{truth[path]} in this run's ground truth")
    return records_check(previous, list(truth), identity, source)


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


# ---------------------------------------------------------------------------------------------
# The report from saved prediction files (eval --from-predictions, resclassify report).

def read_prediction_files(paths):
    """The eval records of prediction files (eval --predictions-out, .jsonl, .csv or .parquet), checked to belong together.

    Raises RecordFileError naming the files when one is cut off, holds predict's records rather
    than eval's, shares an image with another (overlapping shards), or comes from another model,
    weights, precision, classes, preprocessing or top-k than the first. Another backend or device
    is the same run (records.run_identity). An empty file (an empty shard) is fine.
    """
    if not paths:
        raise RecordFileError("no prediction files given")
    records, owner, identity, identity_file = [], {}, None, None
    for path in map(str, paths):
        if not is_url(path) and not os.path.isfile(path) and not (is_parquet(path) and
                                                                 os.path.exists(journal_path(path))):
            raise RecordFileError(f"{path}: {'is not a file' if os.path.exists(path) else 'no such file'}")
        read = read_record_file(path)
        if read.parquet == "journal":
            raise RecordFileError(f"{path}: its run did not finish (its records are in {read.path}); finish the run "
                                  "with --resume first")
        if read.cut_off:
            raise RecordFileError(f"{path}: its last record is cut off (a run killed while writing?); finish the "
                                  "run with --resume first")
        for record in read.records:
            if "true" not in record:
                raise RecordFileError(f"{path}: {record['path']}: no true class: --from-predictions reads eval's "
                                      "--predictions-out files, not predict's output")
            if record["path"] in owner:
                first = owner[record["path"]]
                where = f"{path} twice" if first == path else f"both {first} and {path}"
                raise RecordFileError(f"{record['path']} is in {where}: the files overlap")
            owner[record["path"]] = path
            records.append(record)
            found = identity_of(record)
            if found is None:
                continue  # an image that could not be read: no model output to compare
            if identity is None:
                identity, identity_file = found, path
            elif found != identity:
                raise RecordFileError(f"{path} and {identity_file} come from different runs: "
                                      f"{describe_differences(differences(found, identity), path, identity_file)}")
    if identity is None:
        raise RecordFileError(f"{', '.join(map(str, paths))}: no image in them was classified; nothing to report")
    records.sort(key=lambda record: record["path"])
    return records, identity


def report_from_prediction_files(paths):
    """The evaluation report rebuilt from prediction files (e.g. the shards of an array job), and their records.

    Returns (report, records): the report has the figures of one run over all the files' images,
    identical to the last digit; records are every image's record, in sorted path order.
    No network and no model: the files hold the hits.
    """
    records, identity = read_prediction_files(paths)
    ks = reported_ks(identity["top_k"])
    tally = RecordTally(ks)
    for record in records:
        missing = [f"hit@{k}" for k in ks if "error" not in record and f"hit@{k}" not in record]
        if missing:
            raise RecordFileError(f"{record['path']}: its record has no {', '.join(missing)}")
        tally.add(record)
    name = identity["model"]
    report = _report(
        tally,
        folder=None,
        ground_truth={"layout": "prediction files", "labels_file": None, "real_labels_file": None},
        model={"name": name, "arch": name if name in ARCH_CHOICES else "custom", "weights": identity["weights"],
               "backend": None, "device": None, "precision": identity["precision"],
               "classes": identity["classes"]},
        preprocessing=identity["preprocessing"],
        images={"found": None, "labelled": None, "limit": None, "not_run": None, "skipped": None},
        skipped={},
        labels_without_image={},
        throughput={"seconds": None, "images_per_second": None},
        shard=None,
        resumed=0,
        prediction_files=[str(path) for path in paths],
    )
    return report, records


# ---------------------------------------------------------------------------------------------
# The report.

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


def _throughput(processed, seconds):
    return {"seconds": round(seconds, 3),
            "images_per_second": round(processed / seconds, 2) if seconds > 0 else None}


def _preprocessing_section(preprocessing):
    if isinstance(preprocessing, Preprocessing):
        return {**preprocessing.as_dict(), "description": preprocessing.describe()}
    try:
        description = Preprocessing.from_dict(preprocessing).describe()
    except (TypeError, ValueError):  # written by a version with other preprocessing fields or values
        description = ", ".join(f"{key} {value}" for key, value in preprocessing.items())
    return {**preprocessing, "description": description}


def _runtimes(model, backends):
    """The model section with every backend its records came from: "backends" lists them all, and "backend"
    names the one, or is None when a merged or resumed run ran on several."""
    backends = sorted(backends) or ([model["backend"]] if model.get("backend") else [])
    section = {}
    for key, value in model.items():
        section[key] = value
        if key == "backend":
            section["backend"] = backends[0] if len(backends) == 1 else None
            section["backends"] = backends
    return section


def _report(tally, *, folder, ground_truth, model, preprocessing, images, skipped, labels_without_image, throughput,
            shard, resumed, prediction_files=None, decoding=None):
    ks = tally.ks
    model = _runtimes(model, tally.backends)
    accuracy = tally.accuracy
    scores = class_scores(accuracy.top1_pairs)
    score_of = {score.index: score for score in scores}

    def class_row(index, count, correct):
        row = {**tally.class_records[index], "images": count}
        for k in ks:
            row[f"top{k}_correct"] = correct[k]
        row["top1_accuracy_percent"] = _percent(correct[1] / count)
        row.update(_score_fields(score_of[index]))
        return row

    def score_row(score):
        return {**tally.class_records[score.index], "images": score.images, **_score_fields(score)}

    return {
        "folder": folder,
        "prediction_files": prediction_files,
        "ground_truth": ground_truth,
        "model": model,
        "preprocessing": _preprocessing_section(preprocessing),
        "decoding": decoding,
        "images": {
            "found": images["found"],
            "labelled": images["labelled"],
            "limit": images["limit"],
            "not_run": images["not_run"],
            "evaluated": accuracy.images,
            "failed": len(tally.failed),
            "skipped": images["skipped"],
        },
        "shard": shard,
        "resumed": resumed,
        "failed": tally.failed,
        "skipped": skipped,
        "labels_without_image": labels_without_image,
        "accuracy": {f"top{k}": _accuracy(accuracy.correct[k], accuracy.images) for k in ks},
        "confidence_interval": CONFIDENCE_INTERVAL,
        "throughput": throughput,
        "per_class": [class_row(*row) for row in accuracy.per_class()],
        "precision_recall": _precision_recall(scores, score_row),
        "worst_classes": [class_row(*row) for row in accuracy.worst_classes(WORST_CLASSES)],
        "confusions": [{"true": tally.class_records[true], "predicted": tally.class_records[predicted],
                        "count": count}
                       for (true, predicted), count in accuracy.most_frequent_confusions(TOP_CONFUSIONS)],
    }


def _optional_percent(fraction):
    return None if fraction is None else _percent(fraction)


def _score_fields(score):
    """A class's top-1 precision, recall and F1 in % (None where 0/0), and how often it was predicted."""
    return {"predicted": score.predicted, "precision_percent": _optional_percent(score.precision),
            "recall_percent": _optional_percent(score.recall), "f1_percent": _percent(score.f1)}


def _precision_recall(scores, score_row):
    averages = averaged_scores(scores)
    without_image = [s for s in scores if s.images == 0]

    def figures(averaged):
        return {f"{name}_percent": _percent(value) for name, value in averaged.items()}

    return {
        "basis": PRECISION_RECALL_BASIS,
        "classes_averaged": 0 if averages is None else averages["classes"],
        "averaged_over": "classes with at least one evaluated image; a class never predicted counts precision 0",
        "macro": None if averages is None else figures(averages["macro"]),
        "image_weighted": None if averages is None else figures(averages["weighted"]),
        "worst_by_f1": [score_row(score) for score in worst_by_f1(scores, WORST_CLASSES)],
        "predicted_without_image": [score_row(score) for score in without_image],
    }
