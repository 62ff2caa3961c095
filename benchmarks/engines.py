"""Wall time of `resclassify eval` with --engine local and --engine ray on this machine: Ray's overhead.

Run after the README's install (with the ray extra):  python benchmarks/engines.py
Each engine runs `resclassify eval --json` as a command, timed from start to exit, so the times
include what a user waits for: Python and the backend starting, the model loading, and for Ray,
starting Ray on this machine (or connecting to --ray-address), the driver's CPU copy of the model
and the actors loading theirs. Both reports must give the same figures. The weights are random
(speed does not depend on the values); the inputs are ImageNet-size JPEGs made from sample_images/.

It also measures decoding on one core, which says how many CPU cores each GPU actor needs on a
cluster: a GPU actor runs at most as fast as the decoding tasks feed it.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from throughput import IMAGENET_SIZE, log, make_inputs, random_weights_unless  # noqa: E402


def timed_eval(folder, weights, engine, batch_size, ray_address=None):
    """(wall seconds, report) of one `resclassify eval --json` command."""
    command = [sys.executable, "-m", "resclassify", "eval", "--json", "--quiet", "--weights", str(weights),
               "--batch-size", str(batch_size), "--engine", engine, str(folder)]
    if ray_address:
        command += ["--ray-address", ray_address]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    elapsed = time.perf_counter() - start
    if result.returncode != 0 or not result.stdout.strip():
        raise RuntimeError(f"--engine {engine} failed (exit status {result.returncode}): {result.stderr[-800:]}")
    return elapsed, json.loads(result.stdout)


def decode_rate(paths):
    """images/s of images.load_image on one core (this process, one thread)."""
    import resclassify
    from resclassify.images import load_image

    preprocessing = resclassify.resolve_preprocessing()
    start = time.perf_counter()
    for path in paths:
        load_image(path, preprocessing)
    return len(paths) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="ImageNet-size JPEGs to evaluate")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1, help="runs per engine; the fastest is kept")
    parser.add_argument("--ray-address", default=None,
                        help="time --engine ray on this running cluster instead of a Ray started per run")
    parser.add_argument("--weights", help="a ResNet50 weights file (default: make random ones)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="resclassify-engines-"))
    try:
        run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run(args, workdir):
    weights = random_weights_unless(args.weights, workdir)
    log(f"making {args.images} ImageNet-size JPEGs ...")
    paths = make_inputs(workdir / "imagenet_size", args.images, IMAGENET_SIZE, seed=1)

    results = {}
    for engine in ("local", "ray"):
        runs = []
        for n in range(args.repeats):
            log(f"eval --engine {engine}, run {n + 1} of {args.repeats} ...")
            runs.append(timed_eval(workdir / "imagenet_size", weights, engine, args.batch_size,
                                   args.ray_address if engine == "ray" else None))
        results[engine] = min(runs, key=lambda run: run[0])
    local, ray = results["local"], results["ray"]
    if local[1]["accuracy"] != ray[1]["accuracy"]:
        raise RuntimeError("the engines' reports differ: " + json.dumps([local[1]["accuracy"], ray[1]["accuracy"]]))
    decode = decode_rate(paths[:100])

    print("resclassify engines benchmark: eval, --engine local against --engine ray")
    print(f"  cores: {os.cpu_count()}; images: {args.images} ImageNet-size JPEGs; batch size: {args.batch_size}; "
          f"weights: random")
    print(f"  ray: {'the cluster at ' + args.ray_address if args.ray_address else 'started on this machine per run'}; "
          f"{ray[1]['model']['device']}")
    print()
    rows = []
    for engine, (seconds, report) in results.items():
        throughput = report["throughput"]
        rows.append((f"--engine {engine}: wall time, command start to exit", f"{seconds:.1f}", "s"))
        rows.append((f"--engine {engine}: images/s while scoring (after start-up)",
                     f"{throughput['images_per_second']:.1f}", f"({throughput['seconds']:.1f} s scoring)"))
    rows.append(("ray / local wall time", f"{ray[0] / local[0]:.2f}", ""))
    rows.append(("ray start-up and overhead (wall time difference)", f"{ray[0] - local[0]:.1f}", "s"))
    rows.append(("decoding on one core (load_image)", f"{decode:.1f}",
                 "images/s: a GPU actor scoring R images/s needs about R / this decoding cores"))
    rows.append(("same accuracy figures from both engines", "yes", ""))
    width = max(len(name) for name, _, _ in rows)
    for name, value, unit in rows:
        print(f"{name.ljust(width)}  {value} {unit}".rstrip())


if __name__ == "__main__":
    main()
