"""Evaluation protocols from the command line: ten-crop and flip against views cut here with Pillow and a Keras
ResNet50 called here, --size, --probabilities-out, --confusion-out, and the options' usage errors."""

import json

import numpy as np
import pytest
from PIL import Image

from conftest import save_image
from eval_datasets import CLASSES

MIRROR = Image.Transpose.FLIP_LEFT_RIGHT
# A 300x220 image. For the default 224 crop the short side 220 -> 256 makes the long side
# int(256 * 300 / 220) = 349: corner crops start at x = 125, y = 32, the centre crop at
# x = round(62.5) = 62 (half to even, as torchvision), y = 16.
TEN_CROP_BOXES = [(0, 0, 224, 224), (125, 0, 349, 224), (0, 32, 224, 256), (125, 32, 349, 256), (62, 16, 286, 240)]
CENTRE_BOX = TEN_CROP_BOXES[4]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("protocol-photos")
    return [save_image(folder / f"photo{seed}.png", size=(300, 220), seed=seed) for seed in range(3)]


@pytest.fixture(scope="module")
def keras_probabilities(weights_file):
    """Keras's own ResNet50 (softmax output) with the test weights, on uint8 crops, built per input size."""
    import keras
    from keras.applications.resnet50 import preprocess_input

    networks = {}

    def probabilities(crops):
        size = crops.shape[1]
        if size not in networks:
            networks[size] = keras.applications.ResNet50(weights=None, input_shape=(size, size, 3))
            networks[size].load_weights(str(weights_file))
        return np.asarray(networks[size](preprocess_input(crops.astype(np.float32)), training=False),
                          dtype=np.float64)

    return probabilities


def pillow_views(path, boxes, resized=(349, 256), mirror=True):
    image = Image.open(path).convert("RGB").resize(resized, Image.Resampling.BICUBIC)
    crops = [image.crop(box) for box in boxes]
    if mirror:
        crops += [crop.transpose(MIRROR) for crop in crops]
    return np.stack([np.asarray(crop) for crop in crops])


def check_records_match_rows(records, rows, k):
    """Each record's top-k: the row's k largest entries, each to the six digits the record prints."""
    for record, row in zip(records, rows):
        order = np.argsort(-row, kind="stable")[:k]
        assert [p["index"] for p in record["predictions"]] == order.tolist()
        assert [p["probability"] for p in record["predictions"]] == [float(f"{row[i]:.6g}") for i in order]


def test_ten_crop_averages_the_ten_views_probabilities(cli_run, weights_file, photos, keras_probabilities, tmp_path):
    out = tmp_path / "probabilities.npy"
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    inputs = [photos[0], broken, photos[1]]
    result = cli_run("predict", "--weights", weights_file, "--device", "cpu", "--tta", "ten-crop", "--json",
                     "-k", "10", "--batch-size", "16", "--probabilities-out", out, *inputs)
    assert result.exit_code == 3
    assert result.stderr.startswith(f"resclassify: error: {broken}: cannot identify image file\n")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["path"] for r in records] == [str(p) for p in inputs]

    rows = np.load(out)
    assert rows.dtype == np.float32 and rows.shape == (3, 1000)
    assert np.isnan(rows[1]).all()
    assert (out.parent / "probabilities.npy.paths.txt").read_text() == "".join(f"{p}\n" for p in inputs)
    for row, photo in zip(rows[[0, 2]], [photos[0], photos[1]]):
        expected = keras_probabilities(pillow_views(photo, TEN_CROP_BOXES)).mean(axis=0)
        np.testing.assert_allclose(row, expected, rtol=1e-4, atol=1e-6)
        # Ten views are not one: the average differs from the centre crop's own probabilities.
        assert np.abs(expected - keras_probabilities(pillow_views(photo, [CENTRE_BOX], mirror=False))[0]).max() > 1e-3
    check_records_match_rows([records[0], records[2]], rows[[0, 2]], k=10)


def test_flip_in_eval_averages_the_crop_and_its_mirror_image(cli_run, weights_file, photos, keras_probabilities,
                                                             tmp_path):
    folder = tmp_path / "data"
    expected, labels = {}, {}
    for n, photo in enumerate(photos):
        probabilities = keras_probabilities(pillow_views(photo, [CENTRE_BOX])).mean(axis=0)
        # Each image's class is its own top-1, so every image is a hit.
        labels[n] = int(np.argmax(probabilities))
        path = folder / CLASSES.wnids[labels[n]] / f"image{n}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(photo.read_bytes())
        expected[str(path)] = probabilities
    out = tmp_path / "flip.npy"
    records = tmp_path / "flip.jsonl"
    result = cli_run("eval", folder, "--weights", weights_file, "--device", "cpu", "--tta", "flip", "--json",
                     "--probabilities-out", out, "--predictions-out", records)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    # The records name the protocol, so a report rebuilt from them says the same and counts the same.
    assert all(json.loads(line)["run"]["preprocessing"]["tta"] == "flip" for line in records.read_text().splitlines())
    rebuilt = json.loads(cli_run("eval", "--from-predictions", records, "--json").stdout)
    assert rebuilt["preprocessing"] == report["preprocessing"]
    assert (rebuilt["precision_recall"], rebuilt["per_class"]) == (report["precision_recall"], report["per_class"])
    assert report["preprocessing"]["tta"] == "flip"
    assert report["preprocessing"]["description"] == (
        "center-crop (short side 256, centre 224x224, bicubic), tta flip (and its mirror image: 2 views, "
        "probabilities averaged), caffe normalization")
    paths = (tmp_path / "flip.npy.paths.txt").read_text().splitlines()
    assert paths == sorted(expected)
    rows = np.load(out)
    for path, row in zip(paths, rows):
        np.testing.assert_allclose(row, expected[path], rtol=1e-4, atol=1e-6)
    assert report["accuracy"]["top1"]["correct"] == len(photos)


def test_size_builds_the_network_for_a_larger_input(cli_run, weights_file, photos, keras_probabilities, tmp_path):
    # --size 256: short side int(256 / 0.875) = 292, 300x220 -> (int(292 * 300 / 220), 292) = (398, 292);
    # centre 256x256 at x = round(142 / 2) = 71, y = round(36 / 2) = 18.
    out = tmp_path / "size.npy"
    result = cli_run("predict", "--weights", weights_file, "--device", "cpu", "--size", "256", "-k", "3",
                     "--probabilities-out", out, photos[2])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith(f"resnet50, weights {weights_file.name} · ")
    assert " · center-crop (short side 292, centre 256x256, bicubic), caffe normalization" in result.stdout.splitlines()[0]
    expected = keras_probabilities(pillow_views(photos[2], [(71, 18, 327, 274)], resized=(398, 292), mirror=False))
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("command", ["predict", "eval"])
@pytest.mark.parametrize("args, option, reason", [
    (["--crop-fraction", "1.2"], "--crop-fraction",
     "crop fraction 1.2 makes the 224x224 crop larger than the image: the short side is resized to 224 / 1.2 = "
     "186 pixels (the crop fraction is at most 1)"),
    (["--crop-fraction", "0"], "--crop-fraction", "the crop fraction must be a number from 0.05 to 1, not 0.0"),
    (["--size", "0"], "--size", "the network input size must be a positive whole number of pixels, not 0"),
    (["--size", "-256"], "--size", "the network input size must be a positive whole number of pixels, not -256"),
    (["--size", "16"], "--size", "the built-in ResNets take inputs of at least 32x32 pixels, not 16"),
    (["--size", "320", "--crop-fraction", "1.01"], "--crop-fraction",
     "crop fraction 1.01 makes the 320x320 crop larger than the image: the short side is resized to 320 / 1.01 = "
     "316 pixels (the crop fraction is at most 1)"),
    (["--preprocess", "squash", "--tta", "ten-crop"], "--tta",
     "ten-crop cuts corner crops from the resized image; it goes with --preprocess center-crop, not squash "
     "(which keeps the whole image: use --tta flip)"),
    (["--preprocess", "squash", "--crop-fraction", "0.9"], "--crop-fraction",
     "a crop fraction is for --preprocess center-crop; squash resizes the whole image and crops nothing"),
])
def test_options_that_cannot_work_exit_2_with_the_reason(cli_run, weights_file, photos, no_model, command, args,
                                                         option, reason):
    target = photos[0] if command == "predict" else photos[0].parent
    result = cli_run(command, "--weights", weights_file, *args, target)
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.splitlines()[-1] == f"Error: Invalid value for {option}: {reason}"


@pytest.mark.parametrize("args", [["--tta", "five-crop"], ["--interpolation", "cubic"], ["--size", "big"],
                                  ["--crop-fraction", "most"], ["--probabilities-out", "p.txt"]])
def test_unknown_values_exit_2(cli_run, weights_file, photos, no_model, args):
    result = cli_run("predict", "--weights", weights_file, *args, photos[0])
    assert result.exit_code == 2
    assert args[0] in result.stderr


def test_existing_probabilities_are_kept_without_force(cli_run, weights_file, photos, tmp_path, monkeypatch):
    import resclassify

    out = tmp_path / "p.npy"
    sidecar = tmp_path / "p.npy.paths.txt"
    for existing in (out, sidecar):
        existing.write_text("keep me\n")
        monkeypatch.setattr(resclassify, "load_model", lambda *a, **k: pytest.fail("model loaded"))
        result = cli_run("predict", "--weights", weights_file, "--probabilities-out", out, photos[0])
        assert (result.exit_code, result.stdout) == (1, "")
        assert result.stderr == f"resclassify: error: {existing}: already exists; pass --force to overwrite it\n"
        assert existing.read_text() == "keep me\n"
        existing.unlink()
    monkeypatch.undo()
    out.write_text("old\n")
    result = cli_run("predict", "--weights", weights_file, "--device", "cpu", "--json", "--probabilities-out", out,
                     "--force", *photos[:2])
    assert result.exit_code == 0, result.stderr
    rows = np.load(out)
    assert rows.shape == (2, 1000)
    np.testing.assert_allclose(rows.sum(axis=1), 1.0, rtol=1e-5)
    check_records_match_rows([json.loads(line) for line in result.stdout.splitlines()], rows, k=5)
    assert sidecar.read_text() == f"{photos[0]}\n{photos[1]}\n"


def test_probabilities_writer_maps_a_window_of_rows_at_a_time(tmp_path, monkeypatch):
    from resclassify.probabilities import ProbabilitiesWriter

    # Windows of 3 rows of 4 classes: ten rows cross three window boundaries.
    monkeypatch.setattr(ProbabilitiesWriter, "WINDOW_BYTES", 3 * 4 * 4)
    rng = np.random.default_rng(0)
    rows = rng.random((10, 4), dtype=np.float32)
    names = [f"img{i}.jpg" for i in range(10)]
    names[4], names[7] = "two\nlines.jpg", "back\\slash.jpg"
    writer = ProbabilitiesWriter(tmp_path / "p.npy", 10, 4)
    for name, row in zip(names, rows):
        writer.write(name, None if name == "img5.jpg" else row)
        assert writer.window is None or len(writer.window) <= 3
    writer.close()
    written = np.load(tmp_path / "p.npy")
    assert written.dtype == np.float32 and written.shape == (10, 4)
    assert np.isnan(written[5]).all()
    np.testing.assert_array_equal(np.delete(written, 5, axis=0), np.delete(rows, 5, axis=0))
    lines = (tmp_path / "p.npy.paths.txt").read_text().split("\n")
    assert lines[4] == "two\\nlines.jpg" and lines[7] == "back\\\\slash.jpg" and len(lines) == 11
    with pytest.raises(FileExistsError):
        ProbabilitiesWriter(tmp_path / "p.npy", 10, 4)


@pytest.mark.parametrize("command, output", [("predict", "--output"), ("eval", "--predictions-out")])
def test_probabilities_do_not_go_with_resume(cli_run, weights_file, photos, tmp_path, no_model, command, output):
    target = photos[0] if command == "predict" else photos[0].parent
    result = cli_run(command, "--weights", weights_file, output, tmp_path / "run.jsonl", "--resume",
                     "--probabilities-out", tmp_path / "p.npy", target)
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.splitlines()[-1].startswith("Error: --probabilities-out does not go with --resume: the ")
    assert not (tmp_path / "p.npy").exists()


@pytest.mark.ray
def test_ray_stages_average_views_as_the_local_pipeline_does(weights_file, photos, model):
    """The Ray engine's stages, called here without a cluster: ten views an image, averaged alike."""
    import resclassify
    from resclassify.engines.ray import Classify, decode_batch

    ten = model.preprocessing(tta="ten-crop")
    paths = [str(p) for p in photos] + ["/nonexistent/photo.png"]
    decoded = decode_batch({"path": np.array(paths, dtype=object)}, ten)
    assert decoded["pixels"].shape == (4, 10, 224, 224, 3)
    stage = Classify(weights=str(weights_file), device="cpu", preprocessing=ten, batch_size=25)
    assert stage.batch_size == 2  # images a call: two images' twenty views in 25 network inputs
    probabilities = stage(decoded)["probabilities"]
    local = {}
    list(resclassify.classify(paths, model, preprocessing=ten, top_k=1,
                              on_probabilities=lambda path, p: local.setdefault(path, p)))
    for path, row in zip(paths[:3], probabilities[:3]):
        np.testing.assert_allclose(row, local[path], rtol=1e-4, atol=1e-6)
    assert local[paths[3]] is None and not probabilities[3].any()
