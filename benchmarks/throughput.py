"""Throughput and memory of resclassify against the raw network and the seed's per-image Keras recipe.

Run after the README's install:  python benchmarks/throughput.py
Everything is measured side by side in one run on this machine; ratios compare figures from
the same run. The weights are random (made like the tests' own, speed does not depend on the
values); the inputs are made from sample_images/.
"""

import argparse
import dataclasses
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
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import resclassify  # noqa: E402
from resclassify.datasets import find_images  # noqa: E402
from resclassify.images import load_image  # noqa: E402
from resclassify.metrics import top_k  # noqa: E402

IMAGENET_SIZE = (500, 375)
PHOTO_SIZE = (4000, 3000)
# Class folders named by WordNet id, so the folders are an ImageNet-style eval set.
CLASS_FOLDERS = ("n02123045", "n03063599", "n04099969", "n04266014")


def log(message):
    print(message, file=sys.stderr, flush=True)


def make_inputs(folder, count, size, seed):
    """count JPEGs (quality 90) of the given size cut from the sample photos, with varied crops and noise."""
    rng = np.random.default_rng(seed)
    sources = [Image.open(p).convert("RGB") for p in sorted((REPO / "sample_images").glob("*.jpg"))]
    for i in range(count):
        source = sources[i % len(sources)]
        w, h = source.size
        crop_w, crop_h = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
        left, top = rng.integers(0, w - crop_w + 1), rng.integers(0, h - crop_h + 1)
        image = source.crop((left, top, left + crop_w, top + crop_h)).resize(size, Image.Resampling.BICUBIC)
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        # Sensor-like noise, so an upscaled photo costs what a real one does to decode.
        noisy = np.asarray(image, dtype=np.int16) + rng.integers(-6, 7, size=(size[1], size[0], 3), dtype=np.int16)
        path = folder / CLASS_FOLDERS[i % len(CLASS_FOLDERS)] / f"img_{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path, quality=90)
    return sorted(find_images(folder))


def raw_network(model, batch_size, batches):
    rng = np.random.default_rng(0)
    # uint8, as the pipeline hands it over: normalization runs inside the network function.
    batch = rng.integers(0, 256, size=(batch_size, 224, 224, 3), dtype=np.uint8)
    model.predict(batch, pad_to=batch_size)  # trace once, as a real run does
    start = time.perf_counter()
    for _ in range(batches):
        model.predict(batch, pad_to=batch_size)
    return batch_size * batches / (time.perf_counter() - start)


def end_to_end(model, folder, batch_size, preprocessing):
    """images/s of resclassify.evaluate over a class-folder tree (the model already loaded), and its records."""
    records = []
    start = time.perf_counter()
    report = resclassify.evaluate(str(folder), model, batch_size=batch_size, preprocessing=preprocessing,
                                  on_record=records.append)
    elapsed = time.perf_counter() - start
    if report["images"]["failed"]:
        raise RuntimeError(f"{report['images']['failed']} images failed in {folder}")
    return len(records) / elapsed, records


def seed_recipe(weights, paths):
    """The seed's loop: per image load_img(target_size=(224, 224)), preprocess_input, model.predict."""
    import keras
    from keras.applications.resnet50 import preprocess_input

    model = keras.applications.ResNet50(weights=None)
    model.load_weights(str(weights))
    model.predict(np.zeros((1, 224, 224, 3), np.float32), verbose=0)
    start = time.perf_counter()
    for path in paths:
        x = keras.utils.img_to_array(keras.utils.load_img(path, target_size=(224, 224)))
        model.predict(preprocess_input(x[None]), verbose=0)
    return len(paths) / (time.perf_counter() - start)


def linked_copies(paths, count, folder):
    """A class-folder tree of count images: hard links to paths, repeated as often as needed."""
    for i in range(count):
        source = Path(paths[i % len(paths)])
        target = folder / source.parent.name / f"copy_{i:06d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(source, target)
    return folder


# The child reports its own peak (VmHWM): a forked child's ru_maxrss would count the parent's
# pages from before exec, and this parent holds TensorFlow and several models.
_REPORT_PEAK = """
import atexit, sys
def report():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            sys.stderr.write("peak-kib " + line.split()[1] + "\\n")
atexit.register(report)
from resclassify.cli import main
sys.argv = ["resclassify"] + sys.argv[1:]
main()
"""


def peak_memory_mb(weights, folder, batch_size, backend):
    """Peak resident memory of `resclassify eval --json FOLDER`, as the child process itself saw it."""
    result = subprocess.run([sys.executable, "-c", _REPORT_PEAK, "eval", "--json", "--weights", str(weights),
                             "--batch-size", str(batch_size), "--backend", backend, str(folder)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"resclassify eval failed on {folder}: {result.stderr[-500:]}")
    [kib] = [line.split()[1] for line in result.stderr.splitlines() if line.startswith("peak-kib ")]
    return int(kib) / 1024


SEED_ONE_SHOT = """
import sys
import numpy as np
import keras
from keras.applications.resnet50 import preprocess_input
model = keras.applications.ResNet50(weights=None)
model.load_weights(sys.argv[1])
x = keras.utils.img_to_array(keras.utils.load_img(sys.argv[2], target_size=(224, 224)))
probabilities = model.predict(preprocess_input(x[None]), verbose=0)[0]
print(int(np.argmax(probabilities)), flush=True)
"""


def time_to_first_line(command):
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    first = child.stdout.readline()
    elapsed = time.perf_counter() - start
    child.communicate()
    if child.returncode != 0 or not first:
        raise RuntimeError(f"{command[:4]} failed")
    return elapsed


def pixel_difference(paths, preprocessing):
    """How far the reduced-scale JPEG decode moves the 224x224 crop from a full decode."""
    exact = dataclasses.replace(preprocessing, exact_decode=True)
    diffs = [np.abs(load_image(p, preprocessing).astype(np.int16) - load_image(p, exact).astype(np.int16))
             for p in paths]
    stacked = np.stack(diffs)
    return float(stacked.mean()), float(np.percentile(stacked, 99.9)), int(stacked.max())


def agreement(reference, other, k=5):
    """Share of images whose top-1 is the same, and whose top-k sets are the same."""
    same1 = sum(a["predictions"][0]["index"] == b["predictions"][0]["index"] for a, b in zip(reference, other))
    samek = sum({p["index"] for p in a["predictions"][:k]} == {p["index"] for p in b["predictions"][:k]}
                for a, b in zip(reference, other))
    return same1 / len(reference), samek / len(reference)


def machine_description(model):
    flags = set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    wanted = sorted(f for f in flags if f.startswith(("avx512", "amx")) or f in ("avx2", "fma"))
    from resclassify import backends

    runtime = backends.module(model.backend)
    gpus = [d for d in runtime.devices() if not d.lower().startswith("cpu")]
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "cpu flags": " ".join(wanted) or "unknown",
        "gpu": ", ".join(gpus) or "none",
        "python": platform.python_version(),
        "backend": f"{model.backend} {backends.version(model.backend)} on {model.device}",
        "keras": backends.version("keras"),
        "resclassify": resclassify.__version__,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500, help="ImageNet-size JPEGs for the end-to-end run")
    parser.add_argument("--photos", type=int, default=64, help="12-megapixel JPEGs for the end-to-end run")
    parser.add_argument("--seed-images", type=int, default=100, help="images for the seed's per-image recipe")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--memory-runs", default="500,5000", help="input counts for the peak-memory runs ('' skips)")
    parser.add_argument("--weights", help="a ResNet50 weights file (default: make random ones)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "gpu"))
    parser.add_argument("--backend", choices=("tensorflow", "jax"), default=None,
                        help="Keras backend [default: $KERAS_BACKEND, else tensorflow when installed]")
    args = parser.parse_args()
    from resclassify import backends

    # Before anything imports Keras (the random weights below): Keras picks its backend at import.
    args.backend = backends.resolve(args.backend)
    os.environ["KERAS_BACKEND"] = args.backend

    workdir = Path(tempfile.mkdtemp(prefix="resclassify-bench-"))
    try:
        run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run(args, workdir):
    weights = args.weights
    if weights is None:
        from weights_factory import build_random_resnet50, save_keras_h5_weights

        log("making random ResNet50 weights ...")
        weights = save_keras_h5_weights(build_random_resnet50(seed=1234), workdir / "resnet50_random.h5")
    log(f"making {args.images} ImageNet-size and {args.photos} 12-megapixel JPEGs ...")
    small = make_inputs(workdir / "imagenet_size", args.images, IMAGENET_SIZE, seed=1)
    photos = make_inputs(workdir / "photos", args.photos, PHOTO_SIZE, seed=2)
    samples = sorted(str(p) for p in (REPO / "sample_images").glob("*.jpg"))

    rows = []

    def report(name, value, unit=""):
        rows.append((name, value, unit))
        log(f"  {name}: {value} {unit}")

    model = resclassify.load_model(str(weights), device=args.device, backend=args.backend)
    machine = machine_description(model)
    center = model.preprocessing("center-crop")
    log("measuring ...")
    batches = max(4, args.images // args.batch_size)
    raw = raw_network(model, args.batch_size, batches)
    report("1. raw network, float32", f"{raw:.1f}", "images/s")
    e2e_small, small_records = end_to_end(model, workdir / "imagenet_size", args.batch_size, center)
    report("2a. end to end (eval), ImageNet-size JPEGs", f"{e2e_small:.1f}", "images/s")
    e2e_photos, photo_records = end_to_end(model, workdir / "photos", args.batch_size, center)
    report("2b. end to end (eval), 12 MP JPEGs (reduced-scale decode)", f"{e2e_photos:.1f}", "images/s")
    exact_photos, exact_records = end_to_end(model, workdir / "photos", args.batch_size,
                                             model.preprocessing(exact_decode=True))
    report("2c. end to end (eval), 12 MP JPEGs (--exact-decode)", f"{exact_photos:.1f}", "images/s")
    seed = seed_recipe(weights, small[: args.seed_images])
    report("3. seed's per-image recipe", f"{seed:.1f}", "images/s")
    report("ratio 2a / 1", f"{e2e_small / raw:.2f}", "(target >= 0.90)")
    report("ratio 2b / 1", f"{e2e_photos / raw:.2f}", "(target >= 0.60)")
    report("ratio 2a / 3", f"{e2e_small / seed:.1f}", "(target >= 6)")

    mean_diff, p999_diff, max_diff = pixel_difference(photos[:16] + samples, center)
    report("reduced-scale decode: |crop pixel difference| mean / 99.9th pct / max", f"{mean_diff:.2f} / {p999_diff:.0f} / {max_diff}", "of 255")
    same1, same5 = agreement(exact_records, photo_records)
    report("reduced-scale decode: top-1 / top-5 agreement with full decode (12 MP)", f"{same1:.3f} / {same5:.3f}")

    for precision in ("bfloat16", "float16"):
        if precision == "float16" and model.device != "gpu":
            continue
        low = resclassify.load_model(str(weights), device=args.device, precision=precision, backend=args.backend)
        low_raw = raw_network(low, args.batch_size, batches)
        low_e2e, low_records = end_to_end(low, workdir / "imagenet_size", args.batch_size, center)
        same1, same5 = agreement(small_records, low_records)
        report(f"raw network, {precision}", f"{low_raw:.1f}", f"images/s ({low_raw / raw:.2f}x float32)")
        report(f"end to end (eval), ImageNet-size JPEGs, {precision}", f"{low_e2e:.1f}",
               f"images/s ({low_e2e / seed:.1f}x the seed's recipe)")
        report(f"{precision}: top-1 / top-5 agreement with float32", f"{same1:.3f} / {same5:.3f}")

    one = small[0]
    ours_first = min(time_to_first_line([sys.executable, "-m", "resclassify", "predict", "--json", "--weights",
                                         str(weights), "--backend", args.backend, one]) for _ in range(2))
    seed_first = min(time_to_first_line([sys.executable, "-c", SEED_ONE_SHOT, str(weights), one]) for _ in range(2))
    report("time to first result, resclassify predict ONE.jpg", f"{ours_first:.2f}", "s")
    report("time to first result, seed's one-shot script", f"{seed_first:.2f}", "s")

    for count in [int(c) for c in args.memory_runs.split(",") if c.strip()]:
        folder = linked_copies(small, count, workdir / f"memory_{count}")
        peak = peak_memory_mb(weights, folder, args.batch_size, args.backend)
        report(f"peak resident memory, eval over {count} images", f"{peak:.0f}", "MB")

    print("resclassify throughput benchmark")
    for key, value in machine.items():
        print(f"  {key}: {value}")
    print(f"  batch size: {args.batch_size}; threads: all cores; weights: random (speed does not depend on values)")
    print()
    width = max(len(name) for name, _, _ in rows)
    for name, value, unit in rows:
        print(f"{name.ljust(width)}  {value} {unit}".rstrip())


if __name__ == "__main__":
    main()
