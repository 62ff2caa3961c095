"""Size and build time of the HTML eval report (eval --report, resclassify report) for thousands of images.

Run after the README's install:  python benchmarks/report_size.py [--images 3000]

How the run is made: a small real evaluation (--real images cut from sample_images/, random test
weights, `resclassify eval --predictions-out`) gives real prediction records. Those records are then
repeated over --images image files — hard links to the real run's JPEGs, spread over class folders
for all 1000 classes — each copy getting its new path and a true class of its own (its number modulo
1000, so the per-class table has 1000 rows), hit@1 and hit@5 recomputed, everything else (the run's
identity, the top-5) kept. They are written as one prediction file, and the page is built from it as
`resclassify report FILE -o PAGE` builds it: read back and tallied (evaluation.report_from_prediction_files),
seen by the report's collector, thumbnails made, page rendered and written (output.write_html_report).
Each step's time and the page's size are printed; then the command itself runs once, for its wall time.
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from resclassify.evaluation import class_record, report_from_prediction_files  # noqa: E402
from resclassify.labels import imagenet_classes  # noqa: E402
from resclassify.render.html import DEFAULT_REPORT_IMAGES, ReportCollector, write_html_report  # noqa: E402


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


def synthesize(folder, real_records, count, out):
    """count records in the file out: the real ones repeated, each with a hard-linked image file of its own
    and a true class of its own."""
    classes = imagenet_classes()
    scored = [record for record in real_records if "predictions" in record]
    with open(out, "w", encoding="utf-8") as stream:
        for i in range(count):
            record = dict(scored[i % len(scored)])
            true = i % 1000
            path = folder / "images" / classes.wnids[true] / f"img_{i:06d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                os.link(record["path"], path)
            ranked = [p["index"] for p in record["predictions"]]
            record.update({"path": str(path), "true": class_record(classes, true)})
            for key in [key for key in record if key.startswith("hit@")]:
                record[key] = true in ranked[:int(key[4:])]
            stream.write(json.dumps(record) + "\n")


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
        predictions = folder / "run.jsonl"
        synthesize(folder, real_records, args.images, predictions)

        started = time.perf_counter()
        report, records = report_from_prediction_files([predictions])
        loaded = time.perf_counter() - started
        started = time.perf_counter()
        collector = ReportCollector(args.report_images)
        for record in records:
            collector.add(record)
        collected = time.perf_counter() - started
        del records
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
        log("resclassify report, end to end ...")
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "resclassify", "report", str(predictions), "-o",
                        str(folder / "command.html")], check=True)
        command = time.perf_counter() - started
        command_size = (folder / "command.html").stat().st_size

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{platform.platform()}")
    print(f"run: {args.images:,} images ({len(real_records)} real records repeated), "
          f"{collector.misclassified:,} misclassified, {len(report['per_class']):,} classes")
    print(f"page: {size:,} bytes ({size / 2**20:.2f} MiB), {thumbnails} thumbnails "
          f"({thumbnail_bytes / 2**20:.2f} MiB of base64), --report-images {args.report_images}")
    print(f"time: {loaded:.2f} s to read and tally the prediction file, {collected:.2f} s for the collector to "
          f"see the records, {built:.2f} s for thumbnails, page and write")
    print(f"resclassify report {args.images:,} records -o page: {command:.2f} s wall, Python start-up included "
          f"({command_size:,} bytes)")
    print(f"peak memory of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
