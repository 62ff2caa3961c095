"""--arch (each of Keras's ImageNet ResNets with test-made weights) and --model/--classes (a small model the test trains)."""

import json

import numpy as np
import pytest
from PIL import Image

from resclassify.archs import ARCHS
from resclassify.errors import WeightsError
from resclassify.runners import keras as keras_runner
from conftest import BACKEND_TOLERANCE, assert_records_match
from weights_factory import colour_image


@pytest.fixture
def normalize_calls(monkeypatch):
    """Every (batch shape, mode) the network is asked to normalize (on its device): which preprocessing ran.

    The batch reaches the network as uint8: nothing is normalized on the way.
    """
    calls = []
    real = keras_runner.KerasRunner.predict

    def spy(self, batch, pad_to=None, normalization=None):
        staged = isinstance(batch, keras_runner.StagedBatch)
        pixels = np.asarray(batch.data if staged else batch)
        assert pixels.dtype == np.uint8
        count = batch.count if staged else len(pixels)
        calls.append(((count,) + pixels.shape[1:], normalization or self.normalization))
        return real(self, batch, pad_to, normalization)

    monkeypatch.setattr(keras_runner.KerasRunner, "predict", spy)
    return calls


@pytest.fixture
def forget_models():
    """Drop the networks a test loads, so six ResNets do not stay in memory for the whole session."""
    before = set(keras_runner._classifiers)
    yield
    for key in set(keras_runner._classifiers) - before:
        del keras_runner._classifiers[key]


@pytest.fixture
def photo(arch_photo):
    return arch_photo


@pytest.mark.parametrize("arch", list(ARCHS))
def test_each_arch_builds_loads_and_normalizes_its_own_way_on_both_backends(
        arch, cli_run, tmp_path, normalize_calls, forget_models, arch_weights, photo, parity, jax_runs):
    path = arch_weights(arch)
    result = cli_run(*parity[f"arch-{arch}"])
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["model"] == arch and len(record["predictions"]) == 5
    assert record["predictions"][0]["wnid"].startswith("n")
    # The same command on JAX (another process, KERAS_BACKEND=jax): the same top 5, the same
    # probabilities to float rounding, which grows with depth (ResNet152V2 with these random
    # weights: 2.2e-5, 2.3e-4 relative; ResNet50's own test asks for 1e-5 in test_jax.py).
    on_jax = jax_runs["cases"][f"arch-{arch}"]
    assert on_jax["exit_code"] == 0, on_jax["stderr"] or on_jax["exception"]
    jax_record = json.loads(on_jax["stdout"])
    assert (record["backend"], jax_record["backend"]) == ("tensorflow", "jax")
    assert_records_match([{**jax_record, "backend": "tensorflow"}], [record], {**BACKEND_TOLERANCE, "rtol": 1e-3})
    expected = "tf" if arch.endswith("v2") else "caffe"
    assert ARCHS[arch].normalization == expected
    assert normalize_calls == [((1, 224, 224, 3), expected)]
    table = cli_run("predict", "--arch", arch, "--weights", path, "-k", "1", photo)
    assert table.stdout.splitlines()[0].startswith(
        f"{arch}, weights {path.name} · tensorflow on cpu · center-crop (short side 256, centre 224x224, bicubic), "
        f"{expected} normalization · decoding on 1 thread, network on "
    )
    # From Python, evaluate() without a preprocessing runs the model's own, as predict does
    # (it once ran caffe whatever the model). The network is the one the CLI loaded, cached.
    import resclassify

    network = resclassify.load_model(str(path), arch=arch)
    folder = tmp_path / "one" / record["predictions"][0]["wnid"]
    folder.mkdir(parents=True)
    (folder / photo.name).write_bytes(photo.read_bytes())
    del normalize_calls[:]
    report = resclassify.evaluate(folder.parent, network)
    assert normalize_calls == [((1, 224, 224, 3), expected)]
    assert report["preprocessing"]["mode"] == expected
    assert report["accuracy"]["top1"]["correct"] == 1
    own = resclassify.evaluate(folder.parent, network, preprocessing=network.preprocessing())
    assert report["preprocessing"] == own["preprocessing"]
    assert report["per_class"] == own["per_class"] and report["accuracy"] == own["accuracy"]


@pytest.mark.parametrize("arch, file_arch", [("resnet50v2", "resnet50"), ("resnet50", "resnet101v2")])
def test_weights_of_another_arch_are_a_one_line_error_naming_the_arch(cli_run, arch_weights, photo, arch, file_arch,
                                                                      monkeypatch):
    weights = arch_weights(file_arch)
    result = cli_run("predict", "--arch", arch, "--weights", weights, photo)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"resclassify: error: cannot load {arch} weights from {weights}: ")
    assert result.stderr.endswith(f" (looks like {file_arch} weights: pass --arch {file_arch})\n")
    assert len(result.stderr.splitlines()) == 1
    # RESCLASSIFY_DEBUG=1: the traceback, down to Keras's own full message.
    monkeypatch.setenv("RESCLASSIFY_DEBUG", "1")
    with pytest.raises(WeightsError) as raised:
        cli_run("predict", "--arch", arch, "--weights", weights, photo)
    cause = raised.value.__cause__
    assert cause is not None and not isinstance(cause, WeightsError)
    assert str(cause).strip().splitlines()[0] in result.stderr


@pytest.mark.slow  # builds a ResNet50V2 to save its weights
def test_keras_3_weights_file_of_another_arch_names_it(cli_run, tmp_path, photo):
    import keras

    keras.applications.ResNet50V2(weights=None).save_weights(tmp_path / "mine.weights.h5")
    result = cli_run("predict", "--arch", "resnet50", "--weights", tmp_path / "mine.weights.h5", photo)
    assert result.exit_code == 1
    assert result.stderr.endswith(" (looks like resnet50v2 weights: pass --arch resnet50v2)\n")
    assert len(result.stderr.splitlines()) == 1


def test_preprocess_mode_overrides_the_arch(cli_run, weights_file, photo, normalize_calls):
    result = cli_run("predict", "--preprocess-mode", "torch", "--weights", weights_file, "--json", photo)
    assert result.exit_code == 0, result.stderr
    assert normalize_calls == [((1, 224, 224, 3), "torch")]


# --- a user's own model ------------------------------------------------------------------------

def predicted(result):
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    return {r["path"]: r["predictions"][0]["label"] for r in records}, records


def test_own_model_with_classes_through_predict(cli_run, own_models, colour_photos, normalize_calls):
    result = cli_run("predict", "--model", own_models / "colours.keras", "--classes", own_models / "colours.txt",
                     "--preprocess-mode", "tf", "--json", *colour_photos.values())
    labels, records = predicted(result)
    assert labels == {str(path): colour for colour, path in colour_photos.items()}
    assert result.stderr == ""
    assert {r["model"] for r in records} == {"colours.keras"}
    # A user's classes have no WordNet ids: null in JSON, not an error.
    assert all(p["wnid"] is None for r in records for p in r["predictions"])
    # The input size comes from the model.
    assert normalize_calls == [((3, 64, 64, 3), "tf")]


def test_own_model_in_the_table_shows_what_ran(cli_run, own_models, colour_photos):
    result = cli_run("predict", "--model", own_models / "colours.keras", "--classes", own_models / "colours.txt",
                     "--preprocess-mode", "tf", "-k", "1", colour_photos["red"])
    lines = result.stdout.splitlines()
    assert lines[0].startswith("colours.keras (3 classes) · tensorflow on cpu · center-crop (short side 73, "
                               "centre 64x64, bicubic), tf normalization · decoding on 1 thread, network on ")
    assert "WordNet id" not in result.stdout
    assert any("red" in line and "%" in line for line in lines)


def test_full_model_h5_with_logits_gives_probabilities(cli_run, own_models, colour_photos):
    result = cli_run("predict", "--model", own_models / "colours_logits.h5", "--classes", own_models / "colours.txt",
                     "--preprocess-mode", "tf", "--json", "-k", "3", *colour_photos.values())
    labels, records = predicted(result)
    assert labels == {str(path): colour for colour, path in colour_photos.items()}
    for record in records:
        assert sum(p["probability"] for p in record["predictions"]) == pytest.approx(1.0, abs=1e-4)


def test_a_model_that_rescales_itself_gets_no_normalization(cli_run, own_models, colour_photos, normalize_calls):
    result = cli_run("predict", "--model", own_models / "colours_scaled.keras", "--classes",
                     own_models / "colours.txt", "--json", *colour_photos.values())
    labels, _ = predicted(result)
    assert labels == {str(path): colour for colour, path in colour_photos.items()}
    assert normalize_calls == [((3, 64, 64, 3), "none")]


@pytest.mark.parametrize("name, text", [
    ("classes.tsv", "index\twnid\tlabel\n2\t\tblue\n0\t\tred\n1\t\tgreen\n"),
    ("classes.csv", "id,Label,count\n7,red,10\n8,green,11\n9,blue,12\n"),
    ("classes.txt", "label\tcount\nred\t1\ngreen\t2\nblue\t3\n"),
])
def test_classes_as_a_table(cli_run, own_models, colour_photos, tmp_path, name, text):
    (tmp_path / name).write_text(text)
    result = cli_run("predict", "--model", own_models / "colours.keras", "--classes", tmp_path / name,
                     "--preprocess-mode", "tf", "--json", *colour_photos.values())
    labels, _ = predicted(result)
    assert labels == {str(path): colour for colour, path in colour_photos.items()}


def test_without_classes_outputs_are_named_by_index(cli_run, own_models, colour_photos):
    result = cli_run("predict", "--model", own_models / "colours.keras", "--preprocess-mode", "tf", "--json",
                     colour_photos["blue"])
    labels, _ = predicted(result)
    assert labels == {str(colour_photos["blue"]): "2"}
    assert result.stderr == ("resclassify: warning: no --classes file: colours.keras's 3 classes are named by "
                             "their output index\n")


@pytest.mark.parametrize("args, message", [
    (["--classes", "{folder}/four.txt"], "classes file {folder}/four.txt has 4 labels but the model has 3 outputs"),
    (["--classes", "{folder}/missing.txt"], "classes file {folder}/missing.txt: no such file"),
    (["--model", "{folder}/missing.keras"], "model {folder}/missing.keras: no such file"),
    (["--model", "{folder}/four.txt"], "model {folder}/four.txt: expected a .keras file or a full-model .h5 file"),
])
def test_own_model_errors_are_one_line(cli_run, own_models, colour_photos, args, message):
    (own_models / "four.txt").write_text("a\nb\nc\nd\n")
    args = [a.format(folder=own_models) for a in args]
    if "--model" not in args:
        args = ["--model", own_models / "colours.keras"] + args
    result = cli_run("predict", *args, colour_photos["red"])
    assert result.exit_code == 1
    assert result.stderr == f"resclassify: error: {message.format(folder=own_models)}\n"
    assert result.stdout == ""


def test_weights_only_file_as_a_model_says_where_it_goes(cli_run, weights_file, colour_photos):
    result = cli_run("predict", "--model", weights_file, colour_photos["red"])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"resclassify: error: cannot load the model {weights_file}: ")
    assert result.stderr.rstrip().endswith("(a weights-only .h5 goes with --weights and --arch)")
    assert len(result.stderr.splitlines()) == 1


def test_own_model_from_python(own_models, colour_photos):
    import resclassify

    model = resclassify.load_model(model=own_models / "colours.keras", classes=own_models / "colours.txt",
                                   device="cpu")
    assert (model.arch, model.name, model.input_size) == ("custom", "colours.keras", 64)
    # What eval matches class folders against: the labels, and no WordNet ids.
    assert model.classes.labels == ("red", "green", "blue") and model.classes.wnids == ()
    assert model.preprocessing(mode="tf").size == 64
    records = list(resclassify.classify([str(colour_photos["green"])], model, top_k=1,
                                        preprocessing=model.preprocessing(mode="tf")))
    assert records[0]["predictions"][0]["label"] == "green"


def test_evaluate_without_preprocessing_uses_the_own_models(own_models, colour_photos, tmp_path, normalize_calls):
    import resclassify

    model = resclassify.load_model(model=own_models / "colours_scaled.keras", classes=own_models / "colours.txt",
                                   device="cpu")
    for colour, path in colour_photos.items():
        (tmp_path / "held-out" / colour).mkdir(parents=True)
        (tmp_path / "held-out" / colour / path.name).write_bytes(path.read_bytes())
    report = resclassify.evaluate(tmp_path / "held-out", model)
    # Its 64x64 input and no normalization (it rescales itself), not ResNet50's 224 and caffe.
    assert normalize_calls == [((3, 64, 64, 3), "none")]
    assert report["preprocessing"] == {
        "name": "center-crop", "size": 64, "crop_fraction": 0.875, "interpolation": "bicubic", "mode": "none",
        "exact_decode": False, "tta": "none",
        "description": "center-crop (short side 73, centre 64x64, bicubic), none normalization"}
    assert report["accuracy"]["top1"]["correct"] == 3
    own = resclassify.evaluate(tmp_path / "held-out", model, preprocessing=model.preprocessing())
    assert (own["preprocessing"], own["accuracy"], own["per_class"]) == (
        report["preprocessing"], report["accuracy"], report["per_class"])


def test_classes_file_for_an_imagenet_arch_must_name_1000_outputs(cli_run, weights_file, photo, tmp_path):
    (tmp_path / "two.txt").write_text("cat\ndog\n")
    result = cli_run("predict", "--weights", weights_file, "--classes", tmp_path / "two.txt", photo)
    assert result.exit_code == 1
    assert result.stderr == (f"resclassify: error: classes file {tmp_path / 'two.txt'} has 2 labels but the model "
                             "has 1000 outputs\n")


@pytest.mark.parametrize("with_classes", [True, False])
def test_own_model_through_eval_matches_class_folders_to_its_classes(cli_run, own_models, tmp_path, with_classes):
    # A held-out folder in the class-folder layout, named by the user's labels (or, without a
    # classes file, by output index): green holds one blue image, so top-1 is 5 of 6.
    rng = np.random.default_rng(11)
    names = {"red": "0", "green": "1", "blue": "2"}
    for colour, index in names.items():
        folder = tmp_path / "held-out" / (colour if with_classes else index)
        folder.mkdir(parents=True)
        for i in range(2):
            shown = "blue" if (colour == "green" and i == 1) else colour
            Image.fromarray(colour_image(shown, (120, 90), rng)).save(folder / f"{i}.png")
    classes = ["--classes", own_models / "colours.txt"] if with_classes else []
    result = cli_run("eval", "--model", own_models / "colours.keras", *classes, "--preprocess-mode", "tf",
                     "--json", "-q", tmp_path / "held-out")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["images"]["evaluated"] == 6
    assert report["accuracy"]["top1"]["correct"] == 5
    assert report["accuracy"]["top5"]["correct"] == 6  # only 3 classes: every class is in the top 5
    [confusion] = report["confusions"]
    expected = ("green", "blue") if with_classes else ("1", "2")
    assert (confusion["true"]["label"], confusion["predicted"]["label"]) == expected
    assert report["model"]["arch"] == "custom" and report["model"]["name"] == "colours.keras"
    assert report["model"]["classes"] == 3


def test_own_model_with_a_fixed_input_refuses_another_size(cli_run, own_models, colour_photos, normalize_calls):
    model = own_models / "colours.keras"
    result = cli_run("predict", "--model", model, "--classes", own_models / "colours.txt", "--size", "96",
                     colour_photos["red"])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.splitlines()[-1] == (
        f"Error: Invalid value for --size: model {model} takes 64x64 inputs only; it cannot run at 96x96 "
        "(leave --size out to use its own)")
    assert normalize_calls == []
    # Its own size is no change at all.
    same = cli_run("predict", "--model", model, "--classes", own_models / "colours.txt", "--size", "64",
                   "--preprocess-mode", "tf", "--json", colour_photos["red"])
    assert predicted(same)[0] == {str(colour_photos["red"]): "red"}


@pytest.mark.slow  # builds a small network with Keras
def test_own_model_that_takes_any_size_runs_at_the_size_asked(cli_run, tmp_path, colour_photos, normalize_calls):
    import keras

    keras.utils.set_random_seed(0)
    any_size = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(4, 3),
                                 keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, activation="softmax")])
    any_size.save(tmp_path / "any.keras")
    result = cli_run("predict", "--model", tmp_path / "any.keras", "--size", "48", "--tta", "flip", "--json",
                     "--preprocess-mode", "tf", colour_photos["red"])
    assert result.exit_code == 0, result.stderr
    # One image, two views (the crop and its mirror image), at 48x48.
    assert normalize_calls == [((2, 48, 48, 3), "tf")]
