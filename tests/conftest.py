"""Shared fixtures: a seeded random-weights ResNet50 file, images made on the fly, a CLI runner."""

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# With the onnx extra installed, a CPU run would default to ONNX Runtime and every test that
# makes a weights file would export it (half a minute each). Keras's own backend is named
# instead (unless the caller set one), so the tests run Keras as they say; test_onnxruntime.py
# covers ONNX Runtime, with one export for the session.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, str(Path(__file__).parent))

from weights_factory import build_random_resnet50, save_keras_h5_weights  # noqa: E402
from weights_server import WeightsServer  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SAMPLE_IMAGES = REPO / "sample_images"
# Nothing in the suite may reach a real server: "imagenet" downloads go to a closed local port
# unless a test starts its own server on 127.0.0.1 and points the mirror there.
CLOSED_LOCAL_URL = "http://127.0.0.1:9/"
# A proxy in the environment would route the tests' 127.0.0.1 downloads elsewhere.
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """A browser test without a browser: skipped with the reason, or failed where one is required (CI)."""
    if item.get_closest_marker("browser") is None:
        return
    from browser import NO_BROWSER, REQUIRE_VARIABLE, browser_required, find_chromium

    if find_chromium() is None:
        if browser_required():
            pytest.fail(f"{NO_BROWSER}; {REQUIRE_VARIABLE}=1 says this run must have one", pytrace=False)
        pytest.skip(f"{NO_BROWSER} ({REQUIRE_VARIABLE}=1 makes this a failure, as in CI)")


# Fixtures that build a Keras network (ResNet50 with seeded weights, the colour classifier): the first
# test to ask pays for the build (5-30 s on 2 cores) and every run through the network costs seconds.
NETWORK_FIXTURES = ("weights_file", "own_models")
# What needs another framework or a browser is slow by nature: a framework's import alone takes seconds.
SLOW_BY_NATURE = ("browser", "ray", "jax", "onnx")


def pytest_collection_modifyitems(items):
    """Mark what `-m "not slow"` leaves out: the fast core is every test that builds no network, starts
    no other framework and takes well under a second (tests marked slow by hand measured over one)."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        # A test that reads the JAX child's answers waits for that child (about a minute on 2 cores).
        if "jax_runs" in fixtures:
            item.add_marker(pytest.mark.jax)
        if any(name in fixtures for name in NETWORK_FIXTURES) or any(
                item.get_closest_marker(name) is not None for name in SLOW_BY_NATURE):
            item.add_marker(pytest.mark.slow)


FRAMEWORKS = ("tensorflow", "keras", "jax", "ray")


@pytest.fixture(autouse=True)
def fast_tests_import_no_framework(request):
    """A test left in the fast core that imports a framework into this process (10-20 s on 2 cores) fails."""
    before = {name for name in FRAMEWORKS if name in sys.modules}
    yield
    imported = [name for name in FRAMEWORKS if name in sys.modules and name not in before]
    if imported and request.node.get_closest_marker("slow") is None:
        pytest.fail(f"imported {', '.join(imported)} into the test process: mark the test slow "
                    "(`-m \"not slow\"` is the fast core, which imports no framework)", pytrace=False)


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    monkeypatch.setenv("RESCLASSIFY_WEIGHTS_MIRROR", CLOSED_LOCAL_URL)
    for name in ("RESCLASSIFY_OFFLINE", "RESCLASSIFY_DEBUG", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
def weights_server():
    """An HTTP server on 127.0.0.1 (port 0) serving the bytes a test puts in .files."""
    server = WeightsServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory):
    """ResNet50 weights, random with a fixed seed, in the layout of Keras's ImageNet file."""
    path = tmp_path_factory.mktemp("weights") / "resnet50_random.h5"
    return save_keras_h5_weights(build_random_resnet50(seed=1234), path)


@pytest.fixture(scope="session")
def model(weights_file):
    import resclassify

    return resclassify.load_model(str(weights_file), device="cpu")


@pytest.fixture
def cli_run():
    """Run the CLI in-process; stdout and stderr are kept apart."""
    from resclassify.cli import cli

    def run(*args, input=None):
        return CliRunner().invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)

    return run


# Probabilities from different compute paths (batch sizes, eager vs traced, CPUs with other
# vector units) differ in the last float32 digits; compare them with this tolerance, never bit for bit.
PROBABILITY_TOLERANCE = {"rtol": 1e-4, "atol": 1e-6}
# Two backends' float32 convolutions (oneDNN, XLA) through 50 to 150 layers: within 1e-5.
BACKEND_TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}


def assert_records_match(actual, expected, tolerance=PROBABILITY_TOLERANCE):
    """Records equal in every field, the probabilities to PROBABILITY_TOLERANCE.

    The class order is compared exactly: the test images' top classes are far apart (at least 0.08%
    relative for the sample images and seeded photos; checked in predicted_images), so rounding
    never swaps two of them.
    """
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        strip = lambda record: {**record, "predictions": [  # noqa: E731
            {k: v for k, v in p.items() if k != "probability"} for p in record.get("predictions", [])]}
        assert strip(got) == strip(want)
        np.testing.assert_allclose([p["probability"] for p in got.get("predictions", [])],
                                   [p["probability"] for p in want.get("predictions", [])], **tolerance)


def wait_for(condition, timeout=60.0):
    """Polls condition until it holds (True) or timeout seconds pass (False): no test waits forever."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def save_image(path, size=(500, 375), mode="RGB", seed=0, **save_options):
    """A reproducible photo-like test image (smooth colour field with noise)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    smooth = Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)
    pixels = np.clip(np.asarray(smooth, dtype=np.int16) + rng.integers(-12, 13, size=(size[1], size[0], 3)), 0, 255)
    image = Image.fromarray(pixels.astype(np.uint8))
    if mode != "RGB":
        image = image.convert(mode)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **save_options)
    return path


@pytest.fixture(scope="session")
def predicted_images(tmp_path_factory, model):
    """Eight distinct images and their top-10 class indices, found with classify (predict's path).

    Evaluation tests lay these files out as datasets and count the hits they expect from these
    rankings by hand, independently of eval's own counting.
    """
    import resclassify

    folder = tmp_path_factory.mktemp("predicted")
    paths = [save_image(folder / f"photo{seed}.jpg", seed=seed, quality=90) for seed in range(8)]
    records = list(resclassify.classify([str(p) for p in paths], model, top_k=10))
    ranked = [[p["index"] for p in record["predictions"]] for record in records]
    assert len({r[0] for r in ranked}) > 1, "the test weights should not give every image the same top-1"
    for record in records:  # far enough apart that another compute path cannot reorder them
        probabilities = np.array([p["probability"] for p in record["predictions"]])
        assert np.all(probabilities[:-1] > probabilities[1:] * (1 + 2 * PROBABILITY_TOLERANCE["rtol"]))
    return [(path, ranks) for path, ranks in zip(paths, ranked)]


# --- networks the tests make, shared by the TensorFlow tests and the JAX child ------------------

@pytest.fixture(scope="session")
def arch_weights(tmp_path_factory, weights_file):
    """arch -> a weights file for it (seeded random, Keras's ImageNet layout), made once when first asked."""
    from weights_factory import build_random_resnet

    folder = tmp_path_factory.mktemp("arch-weights")
    made = {"resnet50": weights_file}

    def path(arch):
        if arch not in made:
            made[arch] = save_keras_h5_weights(build_random_resnet(arch), folder / f"{arch}_random.h5")
        return made[arch]

    return path


@pytest.fixture(scope="session")
def own_models(tmp_path_factory):
    """A colour classifier saved three ways: .keras (softmax, tf-mode input), full-model .h5
    (logits), and .keras starting with a Rescaling layer (raw pixels in)."""
    from weights_factory import train_colour_classifier

    folder = tmp_path_factory.mktemp("own-models")
    tuned = train_colour_classifier()
    tuned.save(folder / "colours.keras")
    train_colour_classifier(softmax=False).save(folder / "colours_logits.h5")
    train_colour_classifier(rescaling=True).save(folder / "colours_scaled.keras")
    (folder / "colours.txt").write_text("red\ngreen\nblue\n")
    return folder


@pytest.fixture(scope="session")
def colour_photos(tmp_path_factory):
    """One image per class, larger than the model's input and not square, so it is resized and cropped."""
    from weights_factory import COLOURS, colour_image

    folder = tmp_path_factory.mktemp("colour-photos")
    rng = np.random.default_rng(7)
    paths = {}
    for colour in COLOURS:
        paths[colour] = folder / f"{colour}.png"
        Image.fromarray(colour_image(colour, (120, 90), rng)).save(paths[colour])
    return paths


@pytest.fixture(scope="session")
def arch_photo(tmp_path_factory):
    """The one photo each --arch classifies."""
    return save_image(tmp_path_factory.mktemp("photo") / "photo.jpg")


@pytest.fixture(scope="session")
def six_eval_folder(tmp_path_factory, predicted_images):
    """Six of predicted_images in WordNet-id class folders (eval_datasets.planned_labels: 2 top-1 hits, 3 top-5)."""
    from eval_datasets import class_folders, planned_labels

    labels = planned_labels(predicted_images)
    folder, _ = class_folders("wnid")(tmp_path_factory.mktemp("six") / "data",
                                      [path for path, _ in predicted_images[:6]], labels)
    return folder


@pytest.fixture(scope="session")
def exported_home(tmp_path_factory, weights_file):
    """A KERAS_HOME whose ONNX cache holds the test ResNet50, exported once for the whole session."""
    from resclassify.runners import onnx as onnx_runner

    home = tmp_path_factory.mktemp("onnx-keras-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KERAS_HOME", str(home))
        messages = []
        classifier = onnx_runner.load_classifier(str(weights_file), "resnet50", notice=messages.append)
    assert len(messages) == 1 and messages[0].startswith("exporting resnet50 to ONNX once (")
    return home, classifier


@pytest.fixture(scope="session")
def combination_set(tmp_path_factory, six_eval_folder):
    """The six labelled images and one that cannot be read, for test_combinations.py; and a folder for its JAX shard."""
    import shutil

    root = tmp_path_factory.mktemp("combinations")
    folder = root / "data"
    shutil.copytree(six_eval_folder, folder)
    first_class = sorted(p for p in folder.iterdir() if p.is_dir())[0]
    (first_class / "broken.jpg").write_bytes(b"not an image")
    return folder, root


def combination_jax_cases(combination_set, weights_file):
    """What test_combinations.py runs on JAX, in the one JAX process: the last of three shards, to a record file."""
    folder, root = combination_set
    return {"combination-shard-3": [str(a) for a in (
        "eval", folder, "--weights", weights_file, "--device", "cpu", "--json", "--shard", "3/3",
        "--max-failures", "1", "--predictions-out", root / "shard-3.jsonl")]}


@pytest.fixture
def seven(tmp_path, predicted_images):
    """Six of predicted_images in WordNet-id class folders (as six_eval_folder) and a broken file among them."""
    from eval_datasets import CLASSES, class_folders, planned_labels

    labels = planned_labels(predicted_images)
    folder, _ = class_folders("wnid")(tmp_path / "data", [path for path, _ in predicted_images[:6]], labels)
    (folder / CLASSES.wnids[labels[1]] / "broken.jpg").write_bytes(b"not an image")
    return folder


@pytest.fixture(scope="session")
def photos(tmp_path_factory):
    """Seven small photos and a file that is not an image, read (never written) by the resume and Parquet tests."""
    folder = tmp_path_factory.mktemp("photos")
    for n in range(7):
        save_image(folder / f"photo{n}.jpg", size=(120 + 10 * n, 90), seed=20 + n, quality=90)
    (folder / "broken.jpg").write_bytes(b"not an image")
    return folder


@pytest.fixture
def no_model(monkeypatch):
    """Fails a test that loads a network: what it checks must be found (or made) before that."""
    import resclassify

    def refuse(*args, **kwargs):
        raise AssertionError("this test must not load a model")

    monkeypatch.setattr(resclassify, "load_model", refuse)


def jsonl(source):
    """The records of JSON Lines text (a CLI's stdout) or of the file at a Path."""
    text = source.read_text() if isinstance(source, Path) else source
    return [json.loads(line) for line in text.splitlines()]


def eval_args(weights_file, *args):
    return ["eval", *args, "--weights", weights_file, "--device", "cpu"]


# The same command lines run here (TensorFlow) and in a JAX process: jax_runs holds JAX's answers.
ARCHS_TESTED = ("resnet50", "resnet101", "resnet152", "resnet50v2", "resnet101v2", "resnet152v2")


def parity_cases(weights_file, arch_weights, predicted_images, own_models, colour_photos, arch_photo,
                 six_eval_folder):
    """name -> command-line arguments, each run on both backends (no --backend: KERAS_BACKEND decides)."""
    images = [str(p) for p in sorted(SAMPLE_IMAGES.glob("*.jpg"))] + [str(p) for p, _ in predicted_images]
    cases = {
        "predict": ["predict", "--weights", weights_file, "--device", "cpu", "--json", *images],
        "eval": ["eval", "--weights", weights_file, "--device", "cpu", "--json", six_eval_folder],
        "own-model": ["predict", "--model", own_models / "colours.keras", "--classes", own_models / "colours.txt",
                      "--preprocess-mode", "tf", "--device", "cpu", "--json", "-k", "3", *colour_photos.values()],
        "own-model-h5": ["predict", "--model", own_models / "colours_logits.h5", "--classes",
                         own_models / "colours.txt", "--preprocess-mode", "tf", "--device", "cpu", "--json", "-k",
                         "3", *colour_photos.values()],
        "bfloat16": ["predict", "--weights", weights_file, "--device", "cpu", "--precision", "bfloat16", "--json",
                     *images[:4]],
        # A thread count JAX's CPU runtime cannot take: the run line and the report say what applies.
        "threads": ["predict", "--weights", weights_file, "--device", "cpu", "--threads", "5", "-k", "1", images[0]],
        "threads-eval": ["eval", "--weights", weights_file, "--device", "cpu", "--threads", "5", "--limit", "2",
                         "--json", six_eval_folder],
    }
    for arch in ARCHS_TESTED:
        cases[f"arch-{arch}"] = ["predict", "--arch", arch, "--weights", arch_weights(arch), "--device", "cpu",
                                 "--json", "-k", "5", arch_photo]
    return {name: [str(a) for a in argv] for name, argv in cases.items()}


@pytest.fixture(scope="session")
def parity(weights_file, arch_weights, predicted_images, own_models, colour_photos, arch_photo, six_eval_folder):
    return parity_cases(weights_file, arch_weights, predicted_images, own_models, colour_photos, arch_photo,
                        six_eval_folder)


@pytest.fixture(scope="session")
def jax_runs(tmp_path_factory, parity, weights_file, predicted_images, combination_set):
    """The parity cases and the raw probabilities of the test images, from one process on JAX (CPU).

    One process for all of them: JAX starts and builds each network once (about a minute on
    2 cores). KERAS_BACKEND=jax, not --backend, picks the backend there.
    """
    import subprocess

    folder = tmp_path_factory.mktemp("jax")
    images = [str(p) for p in sorted(SAMPLE_IMAGES.glob("*.jpg"))] + [str(p) for p, _ in predicted_images]
    spec = {"cases": {**parity, **combination_jax_cases(combination_set, weights_file)},
            "probabilities": {"weights": str(weights_file), "paths": images, "batch_size": 32}}
    (folder / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "KERAS_BACKEND": "jax", "KERAS_HOME": str(folder / "keras-home"),
           "RESCLASSIFY_WEIGHTS_MIRROR": CLOSED_LOCAL_URL,
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.run([sys.executable, str(REPO / "tests" / "jax_child.py"), str(folder / "spec.json"),
                            str(folder / "result.json")], capture_output=True, text=True, env=env, timeout=900)
    assert child.returncode == 0, child.stderr[-3000:]
    return json.loads((folder / "result.json").read_text())


# --- object storage: a real S3-protocol server and an HTTP server, on 127.0.0.1 -----------------

@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server for the whole session (tests take fresh buckets of their own: new_bucket)."""
    pytest.importorskip("s3fs", reason="the s3 extra (pip install 'resclassify[s3]') is part of the test extra")
    from object_store import S3Server

    server = S3Server()
    yield server
    server.close()


@pytest.fixture
def s3(s3_server, monkeypatch):
    """The S3 server, with this test's environment pointing at it (AWS_ENDPOINT_URL, test credentials)."""
    from object_store import use_s3_server

    use_s3_server(monkeypatch, s3_server)
    return s3_server


@pytest.fixture
def http_server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path / "www" (made empty), stopped after the test."""
    from object_store import HttpServer

    folder = tmp_path / "www"
    folder.mkdir()
    server = HttpServer(folder)
    server.folder = folder
    yield server
    server.close()
