"""Size and build time of the HTML eval report (eval --report) for a run of thousands of images.

Run after the README's install:  python benchmarks/report_size.py [--images 3000]

How the run is made: a small real evaluation (--real images cut from sample_images/, random test
weights, `resclassify eval --predictions-out`) gives real prediction records. Those records are then
repeated over --images image files — hard links to the real run's JPEGs, spread over class folders
n0..n999 — each repeated record getting its new path and a true class of its own (path number modulo
1000, so the per-class table has up to 1000 rows); hit@1 and hit@5 are recomputed. The report's figures
come from those records with the same tally eval uses. Then the page is built from them exactly as
`eval --report` builds it (output.write_html_report) and its size and time are printed.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from resclassify.evaluation import _report, class_record, reported_ks  # noqa: E402
from resclassify.labels import imagenet_classes  # noqa: E402
from resclassify.metrics import AccuracyTally  # noqa: E402
from resclassify.output import write_html_report  # noqa: E402
from resclassify.report_html import DEFAULT_REPORT_IMAGES, ReportCollector  # noqa: E402


def log(message):
    print(message, file=sys.stderr, flush=True)


def real_run(folder, count, weights):
    """count JPEGs from the sample photos, evaluated for real; their records and the report."""
    from throughput import make_inputs

    make_inputs(folder / "real", count, (500, 375), seed=7)
    out = folder / "real.jsonl"
    command = [sys.executable, "-m", "resclassify", "eval", str(folder / "real"), "--weights", str(weights),
               "--device", "cpu", "--json", "--quiet", "--predictions-out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"the real run failed: {result.stderr}")
    return [json.loads(line) for line in out.read_text().splitlines()], json.loads(result.stdout)


def synthesize(folder, real_records, count):
    """count records: the real ones repeated, each with a hard-linked image file of its own and a new true class."""
    classes = imagenet_classes()
    records = []
    for i in range(count):
        source = real_records[i % len(real_records)]
        true = i % 1000
        path = folder / "images" / classes.wnids[true] / f"img_{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            os.link(source["path"], path)
        record = {"path": str(path), "true": class_record(classes, true), "predictions": source["predictions"]}
        ranked = [p["index"] for p in source["predictions"]]
        record["hit@1"], record["hit@5"] = true in ranked[:1], true in ranked[:5]
        records.append(record)
    return records


def report_for(records, real_report):
    """The report eval would give for these records: the same tally, the real run's model and preprocessing."""
    ks = reported_ks(5)
    tally = AccuracyTally(ks)
    for record in records:
        tally.add(record["true"]["index"], [p["index"] for p in record["predictions"]])
    classes = imagenet_classes()
    truth = SimpleNamespace(folder=str(Path(records[0]["path"]).parents[1]), layout="class folders named by WordNet ids",
                            labels_file=None, real_labels_file=None, skipped=[], labels_without_image={},
                            found=len(records), images=records)
    model = SimpleNamespace(classes=classes, **{key: real_report["model"][key] for key in
                                                 ("name", "arch", "weights", "device", "precision")})
    preprocessing = SimpleNamespace(as_dict=lambda: {k: v for k, v in real_report["preprocessing"].items()
                                                     if k != "description"},
                                    describe=lambda: real_report["preprocessing"]["description"])
    report = _report(truth, model, preprocessing, ks, None, len(records), tally, [], 1.0)
    report["throughput"] = None  # no network ran for these records: the page says no speed
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000, help="images in the synthesized run")
    parser.add_argument("--real", type=int, default=64, help="images in the real run whose records are repeated")
    parser.add_argument("--report-images", type=int, default=DEFAULT_REPORT_IMAGES)
    parser.add_argument("--weights", help="a ResNet50 weights file (default: make random ones)")
    parser.add_argument("--keep", help="also copy the page to this path")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="resclassify-report-bench-") as tmp:
        folder = Path(tmp)
        weights = args.weights
        if weights is None:
            from weights_factory import build_random_resnet50, save_keras_h5_weights

            log("making random weights ...")
            weights = save_keras_h5_weights(build_random_resnet50(seed=1234), folder / "weights.h5")
        log(f"real run over {args.real} images ...")
        real_records, real_report = real_run(folder, args.real, weights)
        log(f"synthesizing {args.images:,} records over {args.images:,} hard-linked image files ...")
        records = synthesize(folder, real_records, args.images)
        report = report_for(records, real_report)

        started = time.perf_counter()
        collector = ReportCollector(args.report_images)
        for record in records:
            collector.add(record)
        collected = time.perf_counter() - started
        page = folder / "report.html"
        started = time.perf_counter()
        write_html_report(page, report, collector)
        built = time.perf_counter() - started
        text = page.read_text(encoding="utf-8")
        size = page.stat().st_size
        thumbnails = text.count('src="data:image/jpeg;base64,')
        thumbnail_bytes = sum(len(part.split('"', 1)[0]) for part in text.split('src="data:image/jpeg;base64,')[1:])
        if args.keep:
            Path(args.keep).write_text(text, encoding="utf-8")

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{platform.platform()}")
    print(f"run: {len(records):,} images ({args.real} real records repeated), "
          f"{report['images']['evaluated'] - report['accuracy']['top1']['correct']:,} misclassified, "
          f"{len(report['per_class']):,} classes")
    print(f"page: {size:,} bytes ({size / 2**20:.2f} MiB), {thumbnails} thumbnails "
          f"({thumbnail_bytes / 2**20:.2f} MiB of base64), --report-images {args.report_images}")
    print(f"time: {collected:.3f} s to see the {len(records):,} records, {built:.2f} s for thumbnails, page and "
          f"write")
    print(f"peak memory of the whole process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
