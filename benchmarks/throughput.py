"""Throughput and memory of resclassify against the raw network, the CPU decode ceiling, a PyTorch
DataLoader pipeline and the seed's per-image Keras recipe.

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
from resclassify.config import resolve_preprocessing  # noqa: E402
from resclassify.sources.local import find_images  # noqa: E402
from resclassify.decoding import open_decoder, plan_decoding  # noqa: E402
from resclassify.machine import available_cores  # noqa: E402
from resclassify.images import load_image  # noqa: E402

SAMPLES = sorted(str(p) for p in (REPO / "sample_images").glob("*.jpg"))
CENTER = resolve_preprocessing("center-crop")
IMAGENET_SIZE = (500, 375)
PHOTO_SIZE = (4000, 3000)
# Class folders named by WordNet id, so the folders are an ImageNet-style eval set.
CLASS_FOLDERS = ("n02123045", "n03063599", "n04099969", "n04266014")


from child_peak import CLI_WITH_PEAK  # noqa: E402


def log(message):
    print(message, file=sys.stderr, flush=True)


def random_weights_unless(weights, workdir):
    """weights (a ResNet50 weights file the user gave), or random ones with a fixed seed made in workdir: speed does
    not depend on the values."""
    if weights is not None:
        return weights
    from weights_factory import build_random_resnet50, save_keras_h5_weights

    log("making random ResNet50 weights ...")
    return save_keras_h5_weights(build_random_resnet50(seed=1234), workdir / "resnet50_random.h5")


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
    """images/s of model.predict alone, on one batch already in memory, fed the way the pipeline feeds it."""
    rng = np.random.default_rng(0)
    # uint8, as the pipeline hands it over: normalization runs inside the network function.
    batch = rng.integers(0, 256, size=(batch_size, 224, 224, 3), dtype=np.uint8)
    model.predict(batch, pad_to=batch_size)  # trace once, as a real run does
    start = time.perf_counter()
    for _ in range(batches):
        model.predict(batch, pad_to=batch_size)
    return batch_size * batches / (time.perf_counter() - start)


def trace_batch_shape(model, batch_size, preprocessing, images):
    """Run the network once on the batch shape a run of `images` images will use (views included)."""
    from resclassify.pipeline import images_per_batch

    rows = max(1, min(images_per_batch(batch_size, preprocessing.views), images)) * preprocessing.views
    size = preprocessing.size
    model.predict(np.zeros((rows, size, size, 3), dtype=np.uint8), pad_to=rows, normalization=preprocessing.mode)


def end_to_end(model, folder, batch_size, preprocessing, decoding="auto"):
    """images/s of resclassify.evaluate over a class-folder tree (the model already loaded), and its records."""
    records = []
    start = time.perf_counter()
    report = resclassify.evaluate(str(folder), model, batch_size=batch_size, preprocessing=preprocessing,
                                  decoding=decoding, on_record=records.append)
    elapsed = time.perf_counter() - start
    if report["images"]["failed"]:
        raise RuntimeError(f"{report['images']['failed']} images failed in {folder}")
    return len(records) / elapsed, records


def predict_end_to_end(model, paths, batch_size, preprocessing, decoding="auto"):
    """images/s of resclassify.classify (predict's path) over a list of files, the model already loaded."""
    start = time.perf_counter()
    records = list(resclassify.classify(paths, model, batch_size=batch_size, preprocessing=preprocessing,
                                        decoding=decoding))
    elapsed = time.perf_counter() - start
    if any("error" in r for r in records):
        raise RuntimeError("some images failed")
    return len(records) / elapsed


def _decode_only(path):
    # The pixels stay in the worker: the ceiling is decoding alone, not shipping the result back.
    return load_image(path, CENTER).shape


def decode_ceiling(paths, workers):
    """images/s of load_image over paths on `workers` processes (a warm pool): what the CPUs can decode."""
    import multiprocessing

    with multiprocessing.get_context("forkserver").Pool(workers) as pool:
        pool.map(_decode_only, paths[:workers * 2], chunksize=1)  # every worker up and warm
        start = time.perf_counter()
        for _ in pool.imap_unordered(_decode_only, paths, chunksize=4):
            pass
        return len(paths) / (time.perf_counter() - start)


def decode_on_threads(paths, workers):
    """images/s of load_image over paths on `workers` threads of one process (GIL-bound)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        start = time.perf_counter()
        for _ in pool.map(_decode_only, paths):
            pass
        return len(paths) / (time.perf_counter() - start)


def started_decoder(images, args, device):
    """A decoder opened and warmed before the clock starts, as predict and eval open theirs while the model loads."""
    decoder = open_decoder(plan_decoding(images, workers=args.workers, mode=args.decoding, device=device))
    start = time.perf_counter()
    for _ in decoder.map(SAMPLES[:1], CENTER):
        pass
    return decoder, time.perf_counter() - start


def resident_mb(pids):
    sizes = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                sizes += [int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:")]
        except OSError:
            pass
    return sizes


def torch_pipeline(paths, batch_size, workers, precision, device):
    """images/s of a plain PyTorch script: DataLoader with worker processes, Pillow + torchvision
    transforms (the same crop written with Pillow and NumPy where torchvision is missing), and
    torchvision's ResNet50 (or, without torchvision, the loader alone). None without PyTorch."""
    try:
        import torch
    except ImportError:
        return None
    try:
        import torchvision
        from torchvision import transforms
    except ImportError:
        torchvision = transforms = None
    from PIL import Image as PILImage

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    if transforms is not None:
        transform = transforms.Compose([transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
                                        transforms.CenterCrop(224), transforms.ToTensor(),
                                        transforms.Normalize(mean, std)])
    else:
        def transform(image):
            width, height = image.size
            scale = 256 / min(width, height)
            image = image.resize((max(256, int(width * scale)), max(256, int(height * scale))),
                                 PILImage.Resampling.BICUBIC)
            left, top = (image.size[0] - 224) // 2, (image.size[1] - 224) // 2
            x = np.asarray(image.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255.0
            x = (x - np.float32(mean)) / np.float32(std)
            return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))

    class Files(torch.utils.data.Dataset):
        def __len__(self):
            return len(paths)

        def __getitem__(self, i):
            with PILImage.open(paths[i]) as image:
                return transform(image.convert("RGB"))

    cuda = device != "cpu" and torch.cuda.is_available()
    target = torch.device("cuda" if cuda else "cpu")
    loader = torch.utils.data.DataLoader(Files(), batch_size=batch_size, num_workers=workers, pin_memory=cuda,
                                         persistent_workers=False, prefetch_factor=4)
    network = None
    if torchvision is not None:
        network = torchvision.models.resnet50(weights=None).eval().to(target, memory_format=torch.channels_last)
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(precision)

    def run(batch):
        batch = batch.to(target, non_blocking=True).to(memory_format=torch.channels_last)
        if network is None:
            return batch.sum()
        with torch.inference_mode(), torch.autocast(target.type, dtype=dtype, enabled=dtype is not None):
            return network(batch).float().softmax(-1)

    with torch.inference_mode():
        run(torch.zeros(batch_size, 3, 224, 224))  # warm: cuDNN picks its kernels
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for batch in loader:
            out = run(batch)
        out.cpu()
        elapsed = time.perf_counter() - start
    what = "torchvision ResNet50" if network is not None else "the loader alone (no torchvision)"
    return len(paths) / elapsed, what


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




def peak_memory_mb(weights, folder, batch_size, backend):
    """Peak resident memory of `resclassify eval --json FOLDER`, as the child process itself saw it."""
    result = subprocess.run([sys.executable, "-c", CLI_WITH_PEAK, "eval", "--json", "--weights", str(weights),
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
    from resclassify import backends, machine

    runtime = backends.module(model.backend)
    gpus = [d for d in runtime.devices() if not d.lower().startswith("cpu")]
    description = {
        "cpu": platform.processor() or platform.machine(),
        "cores": f"{os.cpu_count()} ({available_cores()} available to this process)",
        "cpu flags": " ".join(wanted) or "unknown",
        "gpu": ", ".join(gpus) or "none",
        "python": platform.python_version(),
        "backend": f"{model.backend} {machine.version(model.backend)} on {model.device}",
        "keras": machine.version("keras"),
        "resclassify": resclassify.__version__,
    }
    try:
        import torch

        description["torch"] = torch.__version__ + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available()
                                                   else "")
    except ImportError:
        description["torch"] = "not installed (the DataLoader comparison is skipped)"
    return description


def load(weights, args, precision):
    return resclassify.load_model(str(weights), device=args.device, precision=precision, backend=args.backend)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500, help="ImageNet-size JPEGs for the end-to-end run")
    parser.add_argument("--photos", type=int, default=64, help="12-megapixel JPEGs for the end-to-end run")
    parser.add_argument("--seed-images", type=int, default=100,
                        help="images for the seed's per-image recipe (0 skips it)")
    parser.add_argument("--tta-images", type=int, default=100,
                        help="ImageNet-size JPEGs for the --tta none / flip / ten-crop comparison (0 skips it)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--precisions", default="float32,bfloat16",
                        help="compute precisions to run end to end, comma-separated (float16 on a GPU only)")
    parser.add_argument("--memory-runs", default="500,5000", help="input counts for the peak-memory runs ('' skips)")
    parser.add_argument("--weights", help="a ResNet50 weights file (default: make random ones)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "gpu"))
    parser.add_argument("--backend", choices=("tensorflow", "jax"), default=None,
                        help="Keras backend [default: $KERAS_BACKEND, else tensorflow when installed]")
    parser.add_argument("--workers", type=int, default=None, help="decode workers, as --workers [default: the plan's]")
    parser.add_argument("--decoding", default="auto", choices=("auto", "threads", "processes"),
                        help="as --decoding")
    parser.add_argument("--torch-workers", type=int, default=None,
                        help="DataLoader worker processes for the PyTorch comparison [default: all cores]")
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
    weights = random_weights_unless(args.weights, workdir)
    log(f"making {args.images} ImageNet-size and {args.photos} 12-megapixel JPEGs ...")
    small = make_inputs(workdir / "imagenet_size", args.images, IMAGENET_SIZE, seed=1)
    photos = make_inputs(workdir / "photos", args.photos, PHOTO_SIZE, seed=2)
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]

    rows = []

    def report(name, value, unit=""):
        rows.append((name, value, unit))
        log(f"  {name}: {value} {unit}")

    def section(title):
        rows.append((title, None, None))
        log(title)

    model = load(weights, args, "float32")
    machine = machine_description(model)
    center = model.preprocessing("center-crop")
    cores = available_cores()
    log("measuring ...")

    section("Decoding alone (load_image, no network)")
    ceiling_workers = args.workers or cores
    ceiling = decode_ceiling(small, ceiling_workers)
    report(f"D1. decode ceiling: {ceiling_workers} processes, ImageNet-size JPEGs", f"{ceiling:.1f}", "images/s")
    report(f"D2. {ceiling_workers} threads of one process, ImageNet-size JPEGs",
           f"{decode_on_threads(small, ceiling_workers):.1f}", "images/s")
    photo_ceiling = decode_ceiling(photos, ceiling_workers)
    report(f"D3. decode ceiling: {ceiling_workers} processes, 12 MP JPEGs", f"{photo_ceiling:.1f}", "images/s")
    decoder, start_seconds = started_decoder(len(small), args, model.device)
    report("decoding in predict and eval", decoder.plan.describe(),
           f"(started in {start_seconds:.2f} s, before the clock, as the CLI starts it while the model loads)")

    batches = max(4, args.images // args.batch_size)
    reference_records = None
    with decoder:
        for precision in precisions:
            if precision == "float16" and model.device != "gpu":
                continue
            network = model if precision == "float32" else load(weights, args, precision)
            section(f"{precision}, batch {args.batch_size}, on {network.device}")
            raw = raw_network(network, args.batch_size, batches)
            report("N. raw network", f"{raw:.1f}", "images/s")
            e2e, records = end_to_end(network, workdir / "imagenet_size", args.batch_size, center, decoder)
            report("E1. eval end to end, ImageNet-size JPEGs", f"{e2e:.1f}", "images/s")
            predicted = predict_end_to_end(network, small, args.batch_size, center, decoder)
            report("E2. predict end to end, ImageNet-size JPEGs", f"{predicted:.1f}", "images/s")
            e2e_photos, photo_records = end_to_end(network, workdir / "photos", args.batch_size, center, decoder)
            report("E3. eval end to end, 12 MP JPEGs (reduced-scale decode)", f"{e2e_photos:.1f}", "images/s")
            report("ratio E1 / N (2 cores: >= 0.90)", f"{e2e / raw:.2f}")
            report("ratio E3 / N (2 cores: >= 0.60)", f"{e2e_photos / raw:.2f}")
            report("ratio E1 / D1 (GPU: >= 0.90)", f"{e2e / ceiling:.2f}")
            report("ratio E2 / D1 (GPU: >= 0.90)", f"{predicted / ceiling:.2f}")
            report("ratio E3 / D3", f"{e2e_photos / photo_ceiling:.2f}")
            torch_figure = torch_pipeline(small, args.batch_size, args.torch_workers or cores, precision, args.device)
            if torch_figure is not None:
                rate, what = torch_figure
                report(f"T. PyTorch DataLoader, {args.torch_workers or cores} workers, {what}", f"{rate:.1f}",
                       "images/s")
                report("ratio E1 / T (GPU: > 1)", f"{e2e / rate:.2f}")
            if precision == "float32":
                reference_records, reference_photo_records, float32_e1 = records, photo_records, e2e
            elif reference_records is not None:
                same1, same5 = agreement(reference_records, records)
                report("top-1 / top-5 agreement with float32", f"{same1:.3f} / {same5:.3f}")
        if args.tta_images:
            # The same images for the single crop and each protocol, so the ratios compare like with
            # like; each batch shape is traced before the clock starts, as a long run has it traced.
            section(f"Test-time augmentation (float32; --batch-size {args.batch_size} counts network inputs, views)")
            subset = linked_copies(small, min(args.tta_images, len(small)), workdir / "tta")
            count = len(find_images(subset))
            rates = {}
            for name, tta in (("A1", "none"), ("A2", "flip"), ("A3", "ten-crop")):
                preprocessing = model.preprocessing(tta=tta)
                trace_batch_shape(model, args.batch_size, preprocessing, count)
                rates[tta], _ = end_to_end(model, subset, args.batch_size, preprocessing, decoder)
                views = preprocessing.views
                relative = "images/s" if tta == "none" else (
                    f"images/s ({rates[tta] / rates['none']:.2f}x the single crop; {views} views' network work "
                    f"alone would give {1 / views:.2f}x)")
                report(f"{name}. eval end to end, --tta {tta}, {count} ImageNet-size JPEGs", f"{rates[tta]:.1f}",
                       relative)
        workers_mb = resident_mb(getattr(decoder, "worker_frameworks", {}))

    section("Reduced-scale JPEG decode (float32)")
    exact_photos, exact_records = end_to_end(model, workdir / "photos", args.batch_size,
                                             model.preprocessing(exact_decode=True))
    report("eval end to end, 12 MP JPEGs, --exact-decode", f"{exact_photos:.1f}", "images/s")
    mean_diff, p999_diff, max_diff = pixel_difference(photos[:16] + SAMPLES, center)
    report("|crop pixel difference| from a full decode: mean / 99.9th pct / max",
           f"{mean_diff:.2f} / {p999_diff:.0f} / {max_diff}", "of 255")
    if reference_records is not None:
        same1, same5 = agreement(exact_records, reference_photo_records)
        report("top-1 / top-5 agreement with a full decode (12 MP)", f"{same1:.3f} / {same5:.3f}")

    section("Start-up and memory")
    if args.seed_images:
        seed = seed_recipe(weights, small[: args.seed_images])
        report("S. seed's per-image recipe (load_img, preprocess_input, predict)", f"{seed:.1f}", "images/s")
        if reference_records is not None:
            report("ratio E1 (float32) / S (target >= 6)", f"{float32_e1 / seed:.1f}")
    one = small[0]
    ours_first = min(time_to_first_line([sys.executable, "-m", "resclassify", "predict", "--json", "--weights",
                                         str(weights), "--backend", args.backend, one]) for _ in range(2))
    seed_first = min(time_to_first_line([sys.executable, "-c", SEED_ONE_SHOT, str(weights), one]) for _ in range(2))
    report("time to first result, resclassify predict ONE.jpg", f"{ours_first:.2f}", "s")
    report("time to first result, seed's one-shot script", f"{seed_first:.2f}", "s")

    for count in [int(c) for c in args.memory_runs.split(",") if c.strip()]:
        folder = linked_copies(small, count, workdir / f"memory_{count}")
        peak = peak_memory_mb(weights, folder, args.batch_size, args.backend)
        report(f"peak resident memory, eval over {count} images (the main process)", f"{peak:.0f}", "MB")
    if workers_mb:
        report("resident memory of each decode worker process", f"{max(workers_mb):.0f}",
               f"MB (x {len(workers_mb)} workers)")

    print("resclassify throughput benchmark")
    for key, value in machine.items():
        print(f"  {key}: {value}")
    print(f"  batch size: {args.batch_size}; network threads: all cores; weights: random (speed does not depend "
          "on values)")
    width = max(len(name) for name, value, _ in rows if value is not None)
    for name, value, unit in rows:
        if value is None:
            print(f"\n{name}")
        else:
            print(f"  {name.ljust(width)}  {value} {unit}".rstrip())



if __name__ == "__main__":
    main()
