"""ONNX Runtime against TensorFlow on the CPU: first result, network, end to end, agreement and memory, side by side.

Run after `pip install -e '.[test,onnx]'`:  python benchmarks/onnxruntime_cpu.py
A quick look:                              python benchmarks/onnxruntime_cpu.py --images 64 --repeats 1
Everything is measured in one run on this machine, in a private KERAS_HOME, with random ResNet50
weights made like the tests' own (speed does not depend on the values); ratios compare figures
from the same run. ONNX Runtime's bare network (an InferenceSession on the cached file, fed a
ready uint8 batch) is the peer the end-to-end figure is held to.
"""

import argparse
import os
import platform
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

import numpy as np  # noqa: E402

import resclassify  # noqa: E402
from resclassify.config import resolve_preprocessing  # noqa: E402
from resclassify.images import load_image  # noqa: E402

IMAGENET_SIZE = (500, 375)

from child_peak import CLI_WITH_PEAK  # noqa: E402


def log(message):
    print(message, file=sys.stderr, flush=True)


def cli_command(*args):
    return [sys.executable, "-c", CLI_WITH_PEAK, *[str(a) for a in args]]


def first_result(command, env):
    """(seconds until the first line on stdout, peak resident MB of the process) for one run of command."""
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    first = child.stdout.readline()
    elapsed = time.perf_counter() - start
    _, stderr = child.communicate()
    if child.returncode != 0 or not first:
        raise RuntimeError(f"{' '.join(command[3:])} failed: {stderr[-800:]}")
    peaks = [int(line.split()[1]) for line in stderr.splitlines() if line.startswith("peak-kib ")]
    return elapsed, (peaks[0] / 1024 if peaks else float("nan")), stderr


def bare_session_rate(onnx_path, batch, repeats, threads=None):
    """images/s of ONNX Runtime alone on a ready uint8 batch: no decoding, no pipeline."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    session.run(None, {"images": batch})
    start = time.perf_counter()
    for _ in range(repeats):
        session.run(None, {"images": batch})
    return len(batch) * repeats / (time.perf_counter() - start)


def network_rate(model, batch, repeats):
    """images/s of resclassify's own network object on a ready uint8 batch (after its first call)."""
    model.predict(batch, pad_to=len(batch))
    start = time.perf_counter()
    for _ in range(repeats):
        model.predict(batch, pad_to=len(batch))
    return len(batch) * repeats / (time.perf_counter() - start)


def end_to_end(model, folder, batch_size):
    records = []
    start = time.perf_counter()
    report = resclassify.evaluate(str(folder), model, batch_size=batch_size, on_record=records.append)
    elapsed = time.perf_counter() - start
    return len(records) / elapsed, report, records


def agreement(reference_model, other_model, paths):
    """(top-5 identical for every image, largest probability difference) on these images."""
    preprocessing = resolve_preprocessing()
    pixels = np.stack([load_image(p, preprocessing) for p in paths])
    expected = np.concatenate([reference_model.predict(pixels[i:i + 8]) for i in range(0, len(pixels), 8)])
    got = np.concatenate([other_model.predict(pixels[i:i + 8]) for i in range(0, len(pixels), 8)])
    same_top5 = bool((np.argsort(-expected, axis=1)[:, :5] == np.argsort(-got, axis=1)[:, :5]).all())
    return same_top5, float(np.abs(expected - got).max())


def self_difference(model, paths):
    """Largest probability difference of a network with itself: one image at a time against batches of 8."""
    preprocessing = resolve_preprocessing()
    pixels = np.stack([load_image(p, preprocessing) for p in paths])
    batched = np.concatenate([model.predict(pixels[i:i + 8]) for i in range(0, len(pixels), 8)])
    single = np.concatenate([model.predict(pixels[i:i + 1]) for i in range(len(pixels))])
    return float(np.abs(batched - single).max())


def report_figures(report):
    """The figures of an eval report that must not depend on the backend."""
    accuracy = report["accuracy"]
    return {k: (v["correct"], v["accuracy_percent"]) for k, v in accuracy.items()}, report["images"]


def machine_description():
    flags = set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    wanted = sorted(f for f in flags if f.startswith(("avx512", "amx")) or f in ("avx2", "fma"))
    from importlib.metadata import version

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "cpu flags": " ".join(wanted) or "unknown",
        "python": platform.python_version(),
        "onnxruntime": version("onnxruntime"),
        "tensorflow": version("tensorflow"),
        "resclassify": resclassify.__version__,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="ImageNet-size JPEGs for the end-to-end runs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="network batches timed, and first-result runs (best kept)")
    parser.add_argument("--weights", help="a ResNet50 weights file (default: make random ones)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="resclassify-onnx-bench-"))
    try:
        run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run(args, workdir):
    from throughput import make_inputs

    os.environ["KERAS_HOME"] = str(workdir / "keras-home")  # a cold ONNX cache, for this run only
    env = dict(os.environ)
    weights = args.weights
    if weights is None:
        from weights_factory import build_random_resnet50, save_keras_h5_weights

        log("making random ResNet50 weights ...")
        weights = save_keras_h5_weights(build_random_resnet50(seed=1234), workdir / "resnet50_random.h5")
    log(f"making {args.images} ImageNet-size JPEGs ...")
    images = make_inputs(workdir / "imagenet_size", args.images, IMAGENET_SIZE, seed=1)
    samples = sorted(str(p) for p in (REPO / "sample_images").glob("*.jpg"))
    one = images[0]

    rows = []

    def report(name, value, unit=""):
        rows.append((name, value, unit))
        log(f"  {name}: {value} {unit}")

    log("measuring ...")
    predict = ["predict", "--json", "--weights", weights, one]
    export_s, _, export_stderr = first_result(cli_command(*predict, "--backend", "onnxruntime"), env)
    said = "exporting resnet50 to ONNX once" in export_stderr
    report("first run ever, onnxruntime (exports the ONNX file)", f"{export_s:.1f}",
           f"s (says so on stderr: {'yes' if said else 'NO'})")
    ort_first = [first_result(cli_command(*predict, "--backend", "onnxruntime"), env) for _ in range(args.repeats)]
    tf_first = [first_result(cli_command(*predict, "--backend", "tensorflow"), env) for _ in range(args.repeats)]
    report("time to first result, one image, onnxruntime (cache warm)", f"{min(t for t, _, _ in ort_first):.2f}",
           "s (target <= 1.5)")
    report("time to first result, one image, tensorflow", f"{min(t for t, _, _ in tf_first):.2f}", "s")
    report("peak memory, predict one image, onnxruntime", f"{min(m for _, m, _ in ort_first):.0f}",
           "MB (target <= 500)")
    report("peak memory, predict one image, tensorflow", f"{min(m for _, m, _ in tf_first):.0f}", "MB")

    ort_model = resclassify.load_model(str(weights), backend="onnxruntime")
    tf_model = resclassify.load_model(str(weights), backend="tensorflow", device="cpu")
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, size=(args.batch_size, 224, 224, 3), dtype=np.uint8)
    bare = bare_session_rate(ort_model.onnx_path, batch, args.repeats)
    ort_network = network_rate(ort_model, batch, args.repeats)
    tf_network = network_rate(tf_model, batch, args.repeats)
    report("network alone, ONNX Runtime's bare session", f"{bare:.1f}", "images/s")
    report("network alone, resclassify onnxruntime", f"{ort_network:.1f}", "images/s")
    report("network alone, resclassify tensorflow", f"{tf_network:.1f}", "images/s")

    ort_e2e, ort_report, ort_records = end_to_end(ort_model, workdir / "imagenet_size", args.batch_size)
    tf_e2e, tf_report, tf_records = end_to_end(tf_model, workdir / "imagenet_size", args.batch_size)
    report("end to end (eval), ImageNet-size JPEGs, onnxruntime", f"{ort_e2e:.1f}", "images/s")
    report("end to end (eval), ImageNet-size JPEGs, tensorflow", f"{tf_e2e:.1f}", "images/s")
    report("ratio onnxruntime end to end / bare session", f"{ort_e2e / bare:.2f}", "(target >= 0.90)")
    report("ratio onnxruntime / tensorflow, end to end", f"{ort_e2e / tf_e2e:.2f}",
           "(target >= 1.4 on AVX2; never below 1)")

    checked = samples + [str(p) for p in images[:32]]
    same_top5, difference = agreement(tf_model, ort_model, checked)
    report("top-5 identical to tensorflow (sample images + 32 JPEGs)", "yes" if same_top5 else "NO")
    report("largest probability difference from tensorflow", f"{difference:.1e}", "(target <= 1e-5)")
    # The floor under that figure: TensorFlow against itself, one image at a time against batches.
    report("  for scale: tensorflow one image at a time vs in batches", f"{self_difference(tf_model, checked):.1e}")
    same_records = all(a["predictions"][0]["index"] == b["predictions"][0]["index"]
                       for a, b in zip(ort_records, tf_records))
    report("eval figures identical to tensorflow",
           "yes" if report_figures(ort_report) == report_figures(tf_report) and same_records else "NO")

    print("resclassify: ONNX Runtime against TensorFlow on the CPU")
    for key, value in machine_description().items():
        print(f"  {key}: {value}")
    print(f"  batch size: {args.batch_size}; threads: all cores; weights: random (speed does not depend on values)")
    print()
    width = max(len(name) for name, _, _ in rows)
    for name, value, unit in rows:
        print(f"{name.ljust(width)}  {value} {unit}".rstrip())


if __name__ == "__main__":
    main()
