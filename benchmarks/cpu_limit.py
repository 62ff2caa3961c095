"""The default CPU path against the machine's limit: R (bare runtimes), D (one core decoding), C, the limit, end to end.

    python benchmarks/cpu_limit.py            # about 4 minutes on 2 cores (the first run also exports, ~1 min)
    python benchmarks/cpu_limit.py --quick    # one repeat, fewer images, no memory pair: a quick look

On a CPU every core-second goes to the network or to decoding, so no pipeline beats

    limit = 1 / (1/R + 1/(C x D))

R: the fastest of a bare ONNX Runtime session (as it comes, and with its idle threads not
spinning, as resclassify runs it) and a bare TensorFlow tf.function on preloaded uint8 batches
(batch 32, same network, all cores); C: the cores this process may use; D: one
core's rate at decoding + resizing + cropping the same images with a plain Pillow script (JPEG
draft mode on). `resclassify predict` end to end (default backend; its steady rate, in a window
of each run past its start-up and before its read-ahead drains) is held to the limit, for
ImageNet-size JPEGs (500x375) and 12 MP JPEGs (4000x3000). Each figure also comes in core-ms per
image (CPU time of all the process's threads), which other work on the machine disturbs less.
Each figure is measured in a child process of its own, the repeats are
interleaved (A, B, C, A, B, C, ...) so that a machine's load falls on all of them alike, and
ratios use the medians. Images (smooth seeded noise, JPEG quality 90) and random seeded ResNet50
weights are made once into a cache folder (--cache), with the ONNX export, and reused.
"""

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
IMAGENET_SIZE = (500, 375)
PHOTO_SIZE = (4000, 3000)
BATCH = 32
# The end-to-end window stops this many images before the last: the pipeline reads ahead two
# batches and a few images, and the window must end before that read-ahead drains.
STEADY_TAIL = 4 * BATCH
# Distinct images made; a run of more reuses them under other names (hard links).
DISTINCT_SMALL, DISTINCT_PHOTOS = 256, 96

from child_peak import CLI_WITH_PEAK  # noqa: E402


def log(message):
    print(message, file=sys.stderr, flush=True)


def loadavg():
    try:
        return open("/proc/loadavg").read().split()[0]
    except OSError:
        return "?"


def child_env(cache, code=REPO):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code), env.get("PYTHONPATH")]))
    env["KERAS_HOME"] = str(cache / "keras-home")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


# --- inputs, made once ----------------------------------------------------------------------

def smooth_noise_jpeg(path, size, rng):
    """A seeded JPEG that compresses like a photo: smooth colour fields, a gradient and fine grain."""
    import numpy as np
    from PIL import Image

    width, height = size
    coarse = rng.integers(0, 256, size=(max(2, height // 48), max(2, width // 48), 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC), dtype=np.int16)
    image += np.linspace(-30, 30, width, dtype=np.int16)[None, :, None]
    image += rng.integers(-5, 6, size=(height, width, 1), dtype=np.int16)
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path, quality=90)


def make_images(folder, count, size, seed):
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"img_{i:05d}.jpg" for i in range(count)]
    missing = [p for p in paths if not p.exists()]
    if missing:
        log(f"making {len(missing)} {size[0]}x{size[1]} JPEGs in {folder} ...")
    for i, path in enumerate(paths):
        if not path.exists():
            smooth_noise_jpeg(path.with_suffix(".part.jpg"), size, np.random.default_rng([seed, i]))
            path.with_suffix(".part.jpg").rename(path)
    return paths


def linked_folder(folder, sources, count):
    """count names for the files in sources (hard links, round robin): a long run without making its images."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        path = folder / f"img_{i:05d}.jpg"
        if not path.exists():
            os.link(sources[i % len(sources)], path)
    return folder


def make_weights(cache):
    path = cache / "resnet50_random_seed1234.h5"
    if not path.exists():
        log("making random ResNet50 weights (once) ...")
        code = ("import sys; sys.path.insert(0, sys.argv[2]); "
                "from weights_factory import build_random_resnet50, save_keras_h5_weights; "
                "save_keras_h5_weights(build_random_resnet50(seed=1234), sys.argv[1] + '.part')")
        subprocess.run([sys.executable, "-c", code, str(path), str(REPO / "tests")], check=True,
                       env=child_env(cache))
        Path(str(path) + ".part").rename(path)
    return path


def onnx_file(cache, weights, one_image):
    """The ONNX export of weights, made by resclassify itself (once, into the cache's KERAS_HOME)."""
    folder = cache / "keras-home" / "models" / "onnx"
    subprocess.run([sys.executable, "-m", "resclassify", "predict", "--format", "jsonl", "--backend", "onnxruntime",
                    "--weights", str(weights), str(one_image)], check=True, stdout=subprocess.DEVNULL,
                   env=child_env(cache))
    files = sorted(folder.glob("resnet50-224px-caffe-float32-*.onnx"), key=lambda p: p.stat().st_mtime)
    return files[-1]


# --- the measurements, each run in a child ----------------------------------------------------

def timed(step, steps, images_per_step):
    """{"rate": images/s, "core_ms": CPU milliseconds of all this process's threads per image} of step run steps times."""
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    images = steps * images_per_step
    return {"rate": images / (time.perf_counter() - start), "core_ms": (time.process_time() - cpu) * 1000 / images}


def child_ort(onnx_path, batches, spinning=True):
    import numpy as np
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(0).integers(0, 256, size=(BATCH, 224, 224, 3), dtype=np.uint8)
    session.run(None, {"images": batch})
    return timed(lambda: session.run(None, {"images": batch}), batches, BATCH)


def child_tf(weights, batches):
    import numpy as np
    import tensorflow as tf
    import keras

    model = keras.applications.ResNet50(weights=str(weights))
    preprocess = keras.applications.resnet50.preprocess_input

    @tf.function
    def network(images):
        return model(preprocess(tf.cast(images, tf.float32)), training=False)

    batch = np.random.default_rng(0).integers(0, 256, size=(BATCH, 224, 224, 3), dtype=np.uint8)
    network(batch).numpy()
    return timed(lambda: network(batch).numpy(), batches, BATCH)


def child_decode(paths):
    """One core's rate at the recipe as a plain Pillow script: open, draft, RGB, bicubic short side 256, crop 224."""
    import numpy as np
    from PIL import Image

    def one(path):
        with Image.open(path) as img:
            width, height = img.size
            scale = 512 / min(width, height)
            if scale < 0.5:
                img.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
            img = img.convert("RGB")
            width, height = img.size
            new = (256, int(256 * height / width)) if width <= height else (int(256 * width / height), 256)
            img = img.resize(new, Image.Resampling.BICUBIC)
            left, top = round((new[0] - 224) / 2), round((new[1] - 224) / 2)
            return np.asarray(img.crop((left, top, left + 224, top + 224)))

    one(paths[0])
    remaining = iter(paths)
    return timed(lambda: one(next(remaining)), len(paths), 1)


def run_child(cache, mode, *args):
    command = [sys.executable, __file__, "--cache", str(cache), "--child", mode, *[str(a) for a in args]]
    result = subprocess.run(command, capture_output=True, text=True, env=child_env(cache))
    if result.returncode != 0:
        raise RuntimeError(f"measuring {mode} failed: {result.stderr[-800:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def end_to_end(cache, folder, weights, images, backend=None, code=REPO):
    """`resclassify predict` (the code in folder `code`) on folder: its steady rate and core-ms per image, and peak MB.

    The steady window runs from the end of the second batch to the end of the batch STEADY_TAIL
    images before the last: past the start-up and the first calls, and before the read-ahead
    drains at the end of the input, so the decoding done in the window is the window's own.
    The CPU time is the predict process's (all its threads; not decode worker processes).
    """
    command = [sys.executable, "-c", CLI_WITH_PEAK, "predict", "--format", "jsonl", "--weights", str(weights),
               str(folder)]
    if backend:
        command += ["--backend", backend]
    first, last = 2 * BATCH - 1, images - STEADY_TAIL - 1
    marks = {}
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=child_env(cache, code))
    count = 0
    for count, _ in enumerate(child.stdout, start=1):
        if count - 1 in (first, last):
            marks[count - 1] = (time.perf_counter(), cpu_seconds(child.pid))
    stderr = child.stderr.read()
    child.wait()
    wall = time.perf_counter() - start
    if child.returncode != 0 or count != images or len(marks) != 2:
        raise RuntimeError(f"predict on {folder} failed ({count} of {images} records): {stderr[-800:]}")
    window = last - first
    seconds, cpu = (marks[last][0] - marks[first][0]), (marks[last][1] - marks[first][1])
    peaks = [int(line.split()[1]) for line in stderr.splitlines() if line.startswith("peak-kib ")]
    return {"rate": window / seconds, "core_ms": cpu * 1000 / window, "wall": images / wall,
            "peak_mb": peaks[0] / 1024 if peaks else float("nan")}


def cpu_seconds(pid):
    """User + system CPU seconds of a live process, all its threads (from /proc)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the report -------------------------------------------------------------------------------

def cpu_description():
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and model in ("", platform.machine(), platform.processor()):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    shown = [f for f in ("avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "avx2", "fma") if f in flags]
    return model, " ".join(shown) or "no AVX2/AVX-512 flags seen"


def limit(r, c, d):
    return 1 / (1 / r + 1 / (c * d))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=640, help="ImageNet-size JPEGs per end-to-end run (default 640)")
    parser.add_argument("--photos", type=int, default=352, help="12 MP JPEGs per end-to-end run (default 352)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats of every figure (default 2)")
    parser.add_argument("--batches", type=int, default=4, help="batches of 32 timed for each bare runtime")
    parser.add_argument("--memory", type=int, nargs=2, default=(300, 3000), metavar=("SMALL", "LARGE"),
                        help="peak memory of predict on this many ImageNet-size images, and on this many "
                             "(default 300 3000; 0 0 skips it)")
    parser.add_argument("--no-tensorflow-end-to-end", action="store_true",
                        help="skip `predict --backend tensorflow` (the TF path's regression check)")
    parser.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                        help="also run predict from this checkout of resclassify (e.g. `git worktree add /tmp/old "
                             "HEAD~3`), interleaved with this one's, for a before/after in one run")
    parser.add_argument("--quick", action="store_true", help="--repeats 1 --images 384 --photos 256 --memory 0 0")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                        / "resclassify-cpu-limit", help="where the images, weights and ONNX export are kept")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, *rest = args.child
        if mode in ("ort", "ort-no-spinning"):
            print(json.dumps(child_ort(rest[0], int(rest[1]), spinning=mode == "ort")))
        elif mode == "tf":
            print(json.dumps(child_tf(rest[0], int(rest[1]))))
        else:
            folder = Path(rest[0])
            print(json.dumps(child_decode(sorted(str(p) for p in folder.glob("*.jpg")))))
        return
    if args.quick:
        args.repeats, args.images, args.photos, args.memory = 1, 384, 256, (0, 0)
    for name in ("images", "photos"):
        if getattr(args, name) < 2 * BATCH + STEADY_TAIL + BATCH:
            parser.error(f"--{name} must be at least {2 * BATCH + STEADY_TAIL + BATCH}")
    run(args)


def run(args):
    sys.path.insert(0, str(REPO))
    from resclassify.machine import available_cores

    cache = args.cache.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    small = make_images(cache / "imagenet-size", DISTINCT_SMALL, IMAGENET_SIZE, seed=1)
    photos = make_images(cache / "photos", DISTINCT_PHOTOS, PHOTO_SIZE, seed=2)
    small_run = linked_folder(cache / f"imagenet-size-x{args.images}", small, args.images)
    photo_run = linked_folder(cache / f"photos-x{args.photos}", photos, args.photos)
    weights = make_weights(cache)
    onnx_path = onnx_file(cache, weights, small[0])
    cores = available_cores()
    start_load = loadavg()
    log(f"measuring: {args.repeats} interleaved repeats; load average {start_load} ...")

    figures = {}

    def add(name, result):
        figures.setdefault(name, []).append(result)
        log(f"  {name}: {result['rate']:.1f} images/s, {result['core_ms']:.1f} core-ms/image   (load {loadavg()})")

    codes = [("", REPO)] + ([(" (baseline)", args.baseline.resolve())] if args.baseline else [])
    for _ in range(args.repeats):
        add("R_ort", run_child(cache, "ort", onnx_path, args.batches))
        add("R_ort_nospin", run_child(cache, "ort-no-spinning", onnx_path, args.batches))
        add("R_tf", run_child(cache, "tf", weights, args.batches))
        add("D_small", run_child(cache, "decode", small[0].parent))
        add("D_photo", run_child(cache, "decode", photos[0].parent))
        for suffix, code in codes:
            add("E_small" + suffix, end_to_end(cache, small_run, weights, args.images, code=code))
            add("E_photo" + suffix, end_to_end(cache, photo_run, weights, args.photos, code=code))
        if not args.no_tensorflow_end_to_end:
            for suffix, code in codes:
                add("E_small_tf" + suffix, end_to_end(cache, small_run, weights, args.images, "tensorflow", code))

    memory = []
    if all(args.memory):
        log("peak memory, default backend ...")
        for count in args.memory:
            folder = linked_folder(cache / f"imagenet-size-x{count}", small, count)
            memory.append((count, end_to_end(cache, folder, weights, count)["peak_mb"]))
    report(args, figures, cores, memory, start_load, loadavg())


def report(args, figures, cores, memory, start_load, end_load):
    def median(name, key="rate"):
        return statistics.median(result[key] for result in figures[name])

    def shown(name, key="rate"):
        values = [result[key] for result in figures[name]]
        text = f"{statistics.median(values):.1f}"
        return text + (f" ({min(values):.1f}-{max(values):.1f})" if len(values) > 1 else "")

    r = max(median("R_ort"), median("R_ort_nospin"), median("R_tf"))
    limits = {kind: limit(r, cores, median(f"D_{kind}")) for kind in ("small", "photo")}
    # The same bound in core time: the network's core-ms per image plus decoding's.
    network_ms = min(median(name, "core_ms") for name in ("R_ort", "R_ort_nospin", "R_tf"))
    core_limits = {kind: network_ms + median(f"D_{kind}", "core_ms") for kind in ("small", "photo")}
    model, flags = cpu_description()
    from importlib.metadata import version

    print("resclassify: the default CPU path against the machine's limit, 1 / (1/R + 1/(C x D))")
    print(f"  CPU: {model}; {flags}")
    print(f"  C = {cores} cores; batch {BATCH}; onnxruntime {version('onnxruntime')}, tensorflow "
          f"{version('tensorflow')}, Pillow {version('pillow')}")
    print(f"  load average: {start_load} at start, {end_load} at end; median (min-max) of {args.repeats} "
          "interleaved repeats")
    print(f"  command: python benchmarks/{Path(__file__).name} " + " ".join(sys.argv[1:]))
    print()
    rows = [("", "images/s", "core-ms/image"),
            ("R, bare ONNX Runtime session", shown("R_ort"), shown("R_ort", "core_ms")),
            ("R, the same, idle threads not spinning", shown("R_ort_nospin"), shown("R_ort_nospin", "core_ms")),
            ("R, bare TensorFlow tf.function", shown("R_tf"), shown("R_tf", "core_ms")),
            ("D, one core decoding, ImageNet-size", shown("D_small"), shown("D_small", "core_ms")),
            ("D, one core decoding, 12 MP", shown("D_photo"), shown("D_photo", "core_ms")),
            ("limit, ImageNet-size", f"{limits['small']:.1f}", f"{core_limits['small']:.1f}"),
            ("limit, 12 MP", f"{limits['photo']:.1f}", f"{core_limits['photo']:.1f}")]
    targets = {"small": 0.90, "photo": 0.85}
    for suffix in ("", " (baseline)"):
        for kind, label in (("small", "ImageNet-size"), ("photo", "12 MP")):
            name = f"E_{kind}{suffix}"
            if name not in figures:
                continue
            rows.append((f"predict end to end{suffix}, {label}", shown(name), shown(name, "core_ms")))
            rows.append((f"  of the limit (target >= {targets[kind]:.2f})", f"{median(name) / limits[kind]:.2f}",
                         f"{core_limits[kind] / median(name, 'core_ms'):.2f}"))
    for suffix in ("", " (baseline)"):
        name = f"E_small_tf{suffix}"
        if name in figures:
            rows.append((f"predict --backend tensorflow{suffix}, ImageNet-size", shown(name), shown(name, "core_ms")))
            rows.append(("  of bare TensorFlow", f"{median(name) / median('R_tf'):.2f}",
                         f"{median('R_tf', 'core_ms') / median(name, 'core_ms'):.2f}"))
    rows.append(("  (end to end: steady window of each run; whole runs with start-up, ImageNet-size / 12 MP: "
                 f"{median('E_small', 'wall'):.1f} / {median('E_photo', 'wall'):.1f} images/s)", "", ""))
    width = max(len(name) for name, _, _ in rows[:-1])
    for name, rate, core in rows:
        print(f"{name.ljust(width)}  {rate:>16}  {core:>16}".rstrip() if rate or core else name)
    if memory:
        print(f"peak memory of predict (default backend), {' / '.join(f'{n:,}' for n, _ in memory)} ImageNet-size "
              f"images: {' / '.join(f'{mb:.0f}' for _, mb in memory)} MB")
    print("A figure in core-ms/image is CPU time per image, less disturbed by other work on the machine than images/s.")


if __name__ == "__main__":
    main()
