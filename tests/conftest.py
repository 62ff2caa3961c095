"""Shared fixtures: a seeded random-weights ResNet50 file, images made on the fly, a CLI runner."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
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


def assert_records_match(actual, expected):
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
                                   [p["probability"] for p in want.get("predictions", [])], **PROBABILITY_TOLERANCE)


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
