"""The ONNX Runtime backend: the same answers as Keras, and a cache that is keyed, atomic and rebuilt when damaged.

One ResNet50 export (about half a minute) is shared by the session; tests that change the cache
work on a copy of it, and tests of the cache's bookkeeping use a stand-in exporter that copies
that file rather than exporting again.
"""

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, SAMPLE_IMAGES, save_image
from resclassify import machine
from resclassify.config import resolve_preprocessing
from resclassify.errors import ExportError
from resclassify.images import load_image
from resclassify.runners import onnx as onnx_runner
from resclassify.runners import onnx_cache, onnx_export

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
pytestmark = pytest.mark.onnx


@pytest.fixture
def onnx_home(exported_home, monkeypatch, tmp_path):
    """A private copy of the session's KERAS_HOME with the exported file, which a test may change."""
    source, _ = exported_home
    home = tmp_path / "keras-home-copy"
    shutil.copytree(source, home)
    monkeypatch.setenv("KERAS_HOME", str(home))
    onnx_runner._classifiers.clear()
    yield home
    onnx_runner._classifiers.clear()


@pytest.fixture
def session_file(exported_home):
    """The session's own export, never changed: what a stand-in exporter copies."""
    return the_onnx_file(exported_home[0])


@pytest.fixture
def onnx_model(exported_home):
    return exported_home[1]


def sample_batch():
    preprocessing = resolve_preprocessing()
    return np.stack([load_image(p, preprocessing) for p in sorted(SAMPLE_IMAGES.glob("*.jpg"))])


def the_onnx_file(home):
    [path] = (home / "models" / "onnx").glob("*.onnx")
    return path


def copying_exporter(source, calls):
    """A stand-in for the export child: copies an export made earlier, as the child would write it."""
    about = json.loads(source.with_suffix(".json").read_text())

    def exporter(job, verbose=False):
        calls.append(job)
        shutil.copyfile(source, job["output"])
        return {k: about[k] for k in ("input_size", "classes", "normalization", "parameters")}

    return exporter


# --- same answers as Keras ---------------------------------------------------------------------

def test_onnx_gives_the_keras_probabilities(onnx_model, model):
    batch = sample_batch()
    expected = model.predict(batch) if _takes_uint8(model) else model.predict(_normalized(batch))
    got = onnx_model.predict(batch)
    assert got.dtype == np.float32 and got.shape == (len(batch), 1000)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    assert (np.argsort(-got, axis=1)[:, :5] == np.argsort(-expected, axis=1)[:, :5]).all()
    # Probabilities out: the softmax is inside the graph.
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-5)


def test_any_batch_size_runs_without_padding(onnx_model):
    batch = sample_batch()
    whole = onnx_model.predict(batch, pad_to=32)
    one_by_one = np.concatenate([onnx_model.predict(batch[i:i + 1]) for i in range(len(batch))])
    np.testing.assert_allclose(one_by_one, whole, rtol=1e-4, atol=1e-6)


def test_the_network_takes_uint8_only(onnx_model):
    with pytest.raises(TypeError, match="uint8"):
        onnx_model.predict(sample_batch().astype(np.float32))


def _takes_uint8(model):
    return getattr(model, "backend", None) is not None


def _normalized(batch):
    from resclassify.images import normalize

    return normalize(batch, "caffe")


# --- the cache ---------------------------------------------------------------------------------

def test_the_record_beside_the_file_says_what_it_is(exported_home, weights_file):
    home, classifier = exported_home
    path = the_onnx_file(home)
    about = json.loads(path.with_suffix(".json").read_text())
    assert classifier.onnx_path == str(path)
    assert about["key"] == {"arch": "resnet50", "input_size": 224, "normalization": "caffe", "precision": "float32",
                            "weights_hash": "sha256:" + _sha256(weights_file)}
    assert about["sha256"] == _sha256(path) and about["stat"][0] == path.stat().st_size
    assert about["classes"] == 1000 and about["input_size"] == 224
    # The export was checked against Keras when it was made.
    assert about["largest_difference_from_keras"] < 1e-4
    assert path.name == f"resnet50-224px-caffe-float32-sha256-{_sha256(weights_file)[:16]}.onnx"


def _sha256(path):
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("change", ["weights", "input_size", "normalization", "precision", "arch"])
def test_each_part_of_the_key_names_another_file(change):
    base = dict(label="resnet50", arch="resnet50", weights_hash="sha256:" + "a" * 64, input_size=224,
                normalization="caffe", precision="float32")
    other = dict(base, **{
        "weights": {"weights_hash": "sha256:" + "b" * 64},
        "input_size": {"input_size": 256},
        "normalization": {"normalization": "torch"},
        "precision": {"precision": "bfloat16"},
        "arch": {"label": "resnet50v2", "arch": "resnet50v2"},
    }[change])
    first, second = onnx_cache.ExportKey(**base), onnx_cache.ExportKey(**other)
    assert first.path != second.path and first.about_path != second.about_path
    assert first.path.parent == second.path.parent


def test_a_warm_cache_exports_nothing(onnx_home, weights_file):
    calls = []
    messages = []
    classifier = onnx_runner.load_classifier(str(weights_file), "resnet50", notice=messages.append,
                                             exporter=lambda job, verbose=False: calls.append(job))
    assert calls == [] and messages == []
    assert classifier.onnx_path == str(the_onnx_file(onnx_home))


def test_another_weights_file_gets_another_onnx_file(onnx_home, weights_file, tmp_path):
    other = tmp_path / "other.h5"
    shutil.copyfile(weights_file, other)
    with open(other, "r+b") as f:  # one byte changed: another file as far as the cache goes
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))
    calls = []
    first = the_onnx_file(onnx_home)
    classifier = onnx_runner.load_classifier(str(other), "resnet50",
                                             exporter=copying_exporter(first, calls))
    assert len(calls) == 1 and calls[0]["weights"] == str(other)
    assert sorted(p.name for p in (onnx_home / "models" / "onnx").glob("*.onnx")) == sorted(
        [first.name, f"resnet50-224px-caffe-float32-sha256-{_sha256(other)[:16]}.onnx"])
    assert classifier.onnx_path != str(first)


def test_a_failed_export_leaves_nothing_at_the_final_path(onnx_home, weights_file, session_file):
    target = the_onnx_file(onnx_home)
    target.unlink()

    def half_written_then_fails(job, verbose=False):
        with open(job["output"], "wb") as f:
            f.write(b"\x08\x07" * 1000)  # the start of a file, as a killed exporter leaves it
        raise ExportError("the exporter fell over")

    with pytest.raises(ExportError, match="fell over"):
        onnx_runner.load_classifier(str(weights_file), "resnet50", exporter=half_written_then_fails)
    # The earlier record, and the marker that remembers the failure (for default runs): no file.
    assert sorted(os.listdir(target.parent)) == sorted([
        onnx_cache.HASHES_FILE, target.with_suffix(".json").name, target.with_suffix(".export-failed.json").name])
    # The next run exports again and works.
    calls = []
    classifier = onnx_runner.load_classifier(str(weights_file), "resnet50",
                                             exporter=copying_exporter(session_file, calls))
    assert len(calls) == 1 and target.is_file()
    assert classifier.predict(sample_batch()[:1]).shape == (1, 1000)


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "not onnx"])
def test_a_damaged_file_is_rebuilt_with_a_notice(onnx_home, weights_file, session_file, damage):
    target = the_onnx_file(onnx_home)
    data = bytearray(target.read_bytes())
    if damage == "flipped byte":
        data[len(data) // 2] ^= 0xFF
    elif damage == "truncated":
        data = data[: len(data) // 3]
    else:
        data = bytearray(b"<html>proxy error</html>")
    target.write_bytes(bytes(data))
    calls, messages = [], []
    classifier = onnx_runner.load_classifier(str(weights_file), "resnet50", notice=messages.append,
                                             exporter=copying_exporter(session_file, calls))
    assert len(calls) == 1
    assert messages[0] == (f"{target} is damaged (sha256 {_sha256_bytes(data)}, expected "
                           f"{_sha256(session_file)}); exporting again")
    assert messages[1].startswith("exporting resnet50 to ONNX once")
    assert _sha256(target) == _sha256(session_file)
    np.testing.assert_allclose(classifier.predict(sample_batch()), _reference_probabilities(session_file), rtol=1e-5, atol=1e-7)


def _sha256_bytes(data):
    import hashlib

    return hashlib.sha256(bytes(data)).hexdigest()


def _reference_probabilities(path):
    session = onnx_runner.open_session(path)
    return session.run(None, {"images": sample_batch()})[0]


def test_a_copied_cache_is_checked_once_then_trusted(onnx_home, weights_file, monkeypatch):
    target = the_onnx_file(onnx_home)
    os.utime(target, ns=(1_000_000_000, 1_000_000_000))  # a copy that did not keep the time
    hashed = []
    from resclassify import weights

    real = weights.file_hash
    monkeypatch.setattr(weights, "file_hash", lambda path, algorithm: hashed.append(str(path)) or real(path, algorithm))
    never = lambda job, verbose=False: pytest.fail("exported again")  # noqa: E731
    onnx_runner.load_classifier(str(weights_file), "resnet50", exporter=never)
    assert hashed == [str(target)]
    onnx_runner._classifiers.clear()
    onnx_runner.load_classifier(str(weights_file), "resnet50", exporter=never)
    assert hashed == [str(target)]  # the record now knows the new time: no second hash


def test_a_record_from_another_format_is_rebuilt(onnx_home, weights_file, session_file):
    about_path = the_onnx_file(onnx_home).with_suffix(".json")
    about = json.loads(about_path.read_text())
    about["format"] = onnx_cache.FORMAT_VERSION - 1
    about_path.write_text(json.dumps(about))
    calls, messages = [], []
    onnx_runner.load_classifier(str(weights_file), "resnet50", notice=messages.append,
                                exporter=copying_exporter(session_file, calls))
    assert len(calls) == 1
    assert "made by another version" in messages[0]
    assert json.loads(about_path.read_text())["format"] == onnx_cache.FORMAT_VERSION


def test_a_weights_file_is_hashed_once_while_it_is_unchanged(weights_file, monkeypatch, tmp_path):
    from resclassify import weights

    hashed = []
    real = weights.file_hash
    monkeypatch.setattr(weights, "file_hash", lambda path, algorithm: hashed.append(str(path)) or real(path, algorithm))
    copy = tmp_path / "copy.h5"
    shutil.copyfile(weights_file, copy)
    first = onnx_cache.file_sha256(copy)
    assert onnx_cache.file_sha256(copy) == first and hashed == [str(copy.resolve())]
    data = copy.read_bytes()
    copy.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert onnx_cache.file_sha256(copy) == _sha256(copy) != first
    assert len(hashed) == 2


# --- from the command line ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def colour_model(tmp_path_factory):
    """A small trained classifier (a user's own model) and one photo per class: its export takes seconds."""
    from PIL import Image

    from weights_factory import COLOURS, colour_image, train_colour_classifier

    folder = tmp_path_factory.mktemp("colour-model")
    train_colour_classifier(softmax=False).save(folder / "colours.keras")
    (folder / "colours.txt").write_text("red\ngreen\nblue\n")
    rng = np.random.default_rng(7)
    photos = []
    for colour in COLOURS:
        photos.append(folder / f"{colour}.png")
        Image.fromarray(colour_image(colour, (120, 90), rng)).save(photos[-1])
    return folder / "colours.keras", folder / "colours.txt", photos


def records_of(result):
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def assert_same_predictions(records, expected):
    assert [r["path"] for r in records] == [r["path"] for r in expected]
    for got, want in zip(records, expected):
        assert [p["index"] for p in got["predictions"]] == [p["index"] for p in want["predictions"]]
        np.testing.assert_allclose([p["probability"] for p in got["predictions"]],
                                   [p["probability"] for p in want["predictions"]], rtol=1e-4, atol=1e-6)


WARM_RUN = """
import sys
from resclassify.cli import main
sys.argv = ["resclassify"] + sys.argv[1:]
try:
    main()
finally:
    heavy = sorted(m for m in ("tensorflow", "keras", "tf2onnx", "jax") if m in sys.modules)
    print("imported:", heavy, file=sys.stderr)
"""


def test_own_model_exports_once_says_so_then_runs_without_tensorflow(cli_run, colour_model, monkeypatch):
    model_file, classes, photos = colour_model
    args = ["predict", "--model", model_file, "--classes", classes, "--preprocess-mode", "tf", "--json", *photos]
    keras_records = records_of(cli_run(*args, "--backend", "tensorflow"))

    first = cli_run(*args, "--backend", "onnxruntime")
    records = records_of(first)
    [onnx_file] = (onnx_cache.cache_folder()).glob("custom-colours-*.onnx")
    assert first.stderr == (f"resclassify: warning: exporting custom-colours to ONNX once ({onnx_file}); later runs "
                            "start from it without TensorFlow\n")
    assert [r["predictions"][0]["label"] for r in records] == ["red", "green", "blue"]
    assert {r["backend"] for r in records} == {"onnxruntime"} and {r["backend"] for r in keras_records} == {
        "tensorflow"}
    assert_same_predictions(records, keras_records)
    assert onnx_file.name.startswith("custom-colours-own-size-tf-float32-sha256-")

    # A fresh process on a CPU, backend not named: ONNX Runtime from the cache, and no TensorFlow.
    monkeypatch.delenv("KERAS_BACKEND")
    env = dict(os.environ, PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="")
    warm = subprocess.run([sys.executable, "-c", WARM_RUN, *[str(a) for a in args]], capture_output=True, text=True,
                          env=env)
    assert warm.returncode == 0, warm.stderr
    assert warm.stderr == "imported: []\n"
    warm_records = [json.loads(line) for line in warm.stdout.splitlines()]
    assert {r["backend"] for r in warm_records} == {"onnxruntime"}
    assert_same_predictions(warm_records, records)


def test_resnet50_from_the_cli_names_the_runtime_and_matches_keras(cli_run, onnx_home, weights_file):
    photos = [str(p) for p in sorted(SAMPLE_IMAGES.glob("*.jpg"))]
    onnx = records_of(cli_run("predict", "--backend", "onnxruntime", "--weights", weights_file, "--json", *photos))
    keras = records_of(cli_run("predict", "--backend", "tensorflow", "--weights", weights_file, "--json", *photos))
    assert_same_predictions(onnx, keras)
    table = cli_run("predict", "--backend", "onnxruntime", "--weights", weights_file, "-k", "1", photos[0])
    assert table.stdout.splitlines()[0].startswith(
        f"resnet50, weights {weights_file.name} · onnxruntime on cpu · center-crop (short side 256, centre 224x224, "
        "bicubic), caffe normalization")
    assert table.stderr == ""


def test_eval_figures_are_the_keras_figures(tmp_path, onnx_model, model, predicted_images):
    import resclassify

    for path, ranks in predicted_images:
        # Each image filed under its own second-ranked class: top-1 misses, top-5 hits.
        folder = tmp_path / "val" / str(ranks[1 if path.stem.endswith(("0", "2")) else 0])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder)
    keras_records, onnx_records = [], []
    keras_report = resclassify.evaluate(tmp_path / "val", model, on_record=keras_records.append)
    onnx_report = resclassify.evaluate(tmp_path / "val", onnx_model, on_record=onnx_records.append)
    assert onnx_report["accuracy"] == keras_report["accuracy"]
    assert onnx_report["accuracy"]["top1"]["correct"] == 6 and onnx_report["accuracy"]["top5"]["correct"] == 8
    assert onnx_report["per_class"] == keras_report["per_class"]
    assert [r["predictions"][:5] and [p["index"] for p in r["predictions"]] for r in onnx_records] == [
        [p["index"] for p in r["predictions"]] for r in keras_records]
    # One run whatever ran it: half the images' records from each runtime merge into the Keras run's report.
    half = len(keras_records) // 2
    files = [tmp_path / "onnxruntime.jsonl", tmp_path / "tensorflow.jsonl"]
    for path, records in zip(files, [onnx_records[:half], keras_records[half:]]):
        path.write_text("".join(json.dumps(record) + "\n" for record in records))
    merged, _ = resclassify.report_from_prediction_files(files)
    assert merged["accuracy"] == keras_report["accuracy"] and merged["per_class"] == keras_report["per_class"]
    assert merged["model"]["backends"] == ["onnxruntime", "tensorflow"]


def test_a_preprocess_mode_gets_an_export_of_its_own(onnx_home, weights_file, session_file):
    calls = []
    classifier = onnx_runner.load_classifier(str(weights_file), "resnet50",
                                             exporter=copying_exporter(session_file, calls))
    assert calls == [] and classifier.normalization == "caffe"
    classifier.predict(sample_batch()[:1], normalization="torch")
    assert [job["normalization"] for job in calls] == ["torch"]
    assert any(p.name.startswith("resnet50-224px-torch-") for p in (onnx_home / "models" / "onnx").glob("*.onnx"))


def test_weights_of_another_arch_are_the_keras_error(cli_run, weights_file, tmp_path):
    photo = save_image(tmp_path / "photo.jpg")
    result = cli_run("predict", "--backend", "onnxruntime", "--arch", "resnet50v2", "--weights", weights_file, photo)
    assert result.exit_code == 1 and result.stdout == ""
    error = result.stderr.splitlines()[-1]
    assert error.startswith(f"resclassify: error: cannot load resnet50v2 weights from {weights_file}: ")
    assert error.endswith("(looks like resnet50 weights: pass --arch resnet50)")
    # Nothing half-made is left in the cache.
    assert [p.name for p in onnx_cache.cache_folder().iterdir()] == [onnx_cache.HASHES_FILE]


# --- which runtime runs ------------------------------------------------------------------------

@pytest.fixture
def cpu_machine(monkeypatch):
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setattr(machine, "nvidia_gpu_present", lambda: False)


def test_on_a_cpu_onnxruntime_is_the_default(cpu_machine):
    from resclassify import runners

    assert runners.choose() == "onnxruntime"
    assert runners.choose(device="cpu") == "onnxruntime"
    assert runners.choose("tensorflow") == "tensorflow"
    assert runners.choose(precision="bfloat16") == "tensorflow"  # ONNX Runtime computes in float32 only
    assert runners.choose(device="gpu") == "tensorflow"


def test_an_nvidia_gpu_or_keras_backend_keeps_keras(cpu_machine, monkeypatch):
    from resclassify import runners

    monkeypatch.setattr(machine, "nvidia_gpu_present", lambda: True)
    assert runners.choose() == "tensorflow"
    assert runners.choose(device="cpu") == "onnxruntime"
    monkeypatch.setattr(machine, "nvidia_gpu_present", lambda: False)
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    assert runners.choose() == "tensorflow"


def test_without_onnxruntime_keras_runs_and_asking_for_it_says_what_to_install(cpu_machine, monkeypatch):
    from resclassify import runners
    from resclassify.errors import BackendError

    monkeypatch.setattr(onnx_runner, "installed", lambda: False)
    assert runners.choose() == "tensorflow"
    with pytest.raises(BackendError, match=r"pip install 'resclassify\[onnx\]'"):
        runners.choose("onnxruntime")


@pytest.mark.parametrize("args, message", [
    (["--precision", "bfloat16"], "--backend onnxruntime computes in float32; --precision bfloat16 runs on "
                                  "--backend tensorflow or jax"),
    (["--device", "gpu"], "--backend onnxruntime runs on the CPU; --device gpu runs on --backend tensorflow or jax"),
])
def test_what_onnxruntime_cannot_do_is_one_line(cli_run, weights_file, tmp_path, args, message):
    result = cli_run("predict", "--backend", "onnxruntime", "--weights", weights_file, *args,
                     save_image(tmp_path / "a.jpg"))
    assert result.exit_code == 1
    assert result.stderr == f"resclassify: error: {message}\n"


@pytest.mark.parametrize("visible, proc, dev, expected", [
    (None, [], ["null", "tty"], False),
    (None, ["0000:3b:00.0"], [], True),
    (None, [], ["nvidia0", "nvidiactl"], True),
    (None, [], ["nvidiactl", "nvidia-uvm"], False),
    ("", ["0000:3b:00.0"], ["nvidia0"], False),
    ("-1", ["0000:3b:00.0"], ["nvidia0"], False),
    ("0", ["0000:3b:00.0"], ["nvidia0"], True),
])
def test_an_nvidia_gpu_is_found_without_a_framework(monkeypatch, visible, proc, dev, expected):
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    monkeypatch.setattr(machine, "_entries", lambda folder: proc if folder.startswith("/proc") else dev)
    monkeypatch.setattr(machine, "_is_character_device", lambda path: True)  # as the driver makes them
    assert machine.nvidia_gpu_present() is expected


def test_a_failed_default_export_falls_back_to_keras_with_a_warning(cli_run, weights_file, cpu_machine, monkeypatch,
                                                                    tmp_path):
    def fails(job, verbose=False):
        raise ExportError("cannot export resnet50 to ONNX: Unsupported op FancyOp")

    monkeypatch.setattr(onnx_export, "run_export_process", fails)
    result = cli_run("predict", "--weights", weights_file, "--json", save_image(tmp_path / "a.jpg"))
    [record] = records_of(result)
    assert record["backend"] == "tensorflow"
    assert result.stderr.splitlines()[-1] == ("resclassify: warning: cannot export resnet50 to ONNX: Unsupported op "
                                              "FancyOp; running it on tensorflow instead")
    asked = cli_run("predict", "--backend", "onnxruntime", "--weights", weights_file, save_image(tmp_path / "b.jpg"))
    assert asked.exit_code == 1
    assert asked.stderr.splitlines()[-1] == "resclassify: error: cannot export resnet50 to ONNX: Unsupported op FancyOp"


# --- offline preparation -----------------------------------------------------------------------

def test_weights_download_onnx_prepares_an_offline_machine(cli_run, weights_file, weights_server, session_file,
                                                           monkeypatch, tmp_path):
    import hashlib

    from resclassify.weights import KNOWN_WEIGHTS, KnownWeights

    md5 = hashlib.md5(weights_file.read_bytes()).hexdigest()
    monkeypatch.setitem(KNOWN_WEIGHTS, "resnet50", KnownWeights("resnet50", md5, 98))
    weights_server.files["/resnet50_weights_tf_dim_ordering_tf_kernels.h5"] = weights_file.read_bytes()
    monkeypatch.setenv("RESCLASSIFY_WEIGHTS_MIRROR", weights_server.url("/"))
    calls = []
    monkeypatch.setattr(onnx_export, "run_export_process", copying_exporter(session_file, calls))

    result = cli_run("weights", "download", "--onnx", "resnet50")
    assert result.exit_code == 0, result.stderr
    weights_path, onnx_path = result.stdout.splitlines()
    assert onnx_path == str(onnx_cache.cache_folder() / f"resnet50-224px-caffe-float32-md5-{md5[:16]}.onnx")
    assert len(calls) == 1 and calls[0]["weights"] == weights_path
    assert result.stderr.splitlines()[-1] == "resnet50: ONNX file exported"
    again = cli_run("weights", "download", "--onnx", "resnet50")
    assert again.stdout == result.stdout and again.stderr.splitlines()[-1] == "resnet50: ONNX file already in the cache"
    assert len(calls) == 1

    # The offline machine: the ONNX file alone answers, without the weights file or the network.
    os.unlink(weights_path)
    onnx_runner._classifiers.clear()
    photo = save_image(tmp_path / "a.jpg")
    offline = cli_run("predict", "--offline", "--backend", "onnxruntime", "--json", photo)
    [record] = records_of(offline)
    assert record["backend"] == "onnxruntime" and offline.stderr == ""
    expected = onnx_runner.open_session(session_file).run(
        None, {"images": load_image(photo, resolve_preprocessing())[None]})[0][0]
    assert record["predictions"][0]["index"] == int(np.argmax(expected))
    assert len(weights_server.requests) == 1


def test_threads_bound_onnxruntime(session_file):
    session = onnx_runner.open_session(session_file, threads=1)
    assert session.get_session_options().intra_op_num_threads == 1
    assert session.get_session_options().inter_op_num_threads == 1
    assert session.get_providers() == ["CPUExecutionProvider"]


def test_idle_runtime_threads_sleep_rather_than_spin(tmp_path):
    # A spinning intra-op thread burns the core a decode thread needs while the two share the
    # machine: a run's decoding then costs about twice its core time.
    onnx = pytest.importorskip("onnx")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["images"], ["probabilities"])], "identity",
        [onnx.helper.make_tensor_value_info("images", onnx.TensorProto.UINT8, [None, 2])],
        [onnx.helper.make_tensor_value_info("probabilities", onnx.TensorProto.UINT8, [None, 2])])
    path = tmp_path / "identity.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)]), path)
    session = onnx_runner.open_session(path, threads=2)
    assert session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert session.get_session_options().intra_op_num_threads == 2


def test_what_a_killed_export_left_is_removed_by_the_next_export(onnx_home, weights_file, session_file):
    target = the_onnx_file(onnx_home)
    target.unlink()
    stale = target.parent / f".{target.name}.killed.part"
    stale.write_bytes(b"\x08" * 1000)
    old = 3600  # an hour ago: past STALE_PART_AGE_S, and no process holds its lock
    os.utime(stale, (stale.stat().st_mtime - old, stale.stat().st_mtime - old))
    recent = target.parent / f".{target.name}.running.part"
    recent.write_bytes(b"\x08" * 1000)  # young, but no process holds it, and exports of it take the key's lock
    seen = []

    def exporter(job, verbose=False):
        seen.append(sorted(p.name for p in target.parent.glob(".*.part")))
        return copying_exporter(session_file, [])(job)

    onnx_runner.load_classifier(str(weights_file), "resnet50", exporter=exporter)
    [during] = seen
    assert stale.name not in during and recent.name not in during
    assert sorted(p.name for p in target.parent.glob(".*")) == []


def test_info_lists_the_cached_onnx_files(cli_run, onnx_home, weights_file):
    path = the_onnx_file(onnx_home)
    info = json.loads(cli_run("info", "--json").stdout)
    assert info["cached_onnx"] == [{"file": path.name, "size": path.stat().st_size, "path": str(path),
                                    "arch": "resnet50", "weights": str(weights_file), "input_size": 224,
                                    "normalization": "caffe", "precision": "float32"}]
    assert info["onnxruntime"] == importlib.metadata.version("onnxruntime")
    text = cli_run("info").stdout.splitlines()
    assert text[-1] == f"cached onnx     {path.name} ({path.stat().st_size / 2**20:.1f} MiB)"


def test_test_time_views_give_the_keras_answers(cli_run, onnx_home, weights_file):
    photos = [str(p) for p in sorted(SAMPLE_IMAGES.glob("*.jpg"))]
    args = ["predict", "--weights", weights_file, "--tta", "flip", "--json", *photos]
    onnx = records_of(cli_run(*args, "--backend", "onnxruntime"))
    keras = records_of(cli_run(*args, "--backend", "tensorflow"))
    assert_same_predictions(onnx, keras)
    assert [p.name for p in (onnx_home / "models" / "onnx").glob("*.onnx")] == [the_onnx_file(onnx_home).name]


def test_a_size_the_model_refuses_is_the_keras_usage_error(cli_run, colour_model):
    model_file, classes, photos = colour_model
    args = ["predict", "--model", model_file, "--classes", classes, "--size", "96", photos[0]]
    keras = cli_run(*args, "--backend", "tensorflow")
    onnx = cli_run(*args, "--backend", "onnxruntime")
    assert keras.exit_code == 2 and "--size" in keras.stderr
    assert (onnx.exit_code, onnx.stdout, onnx.stderr.splitlines()[-1]) == (
        keras.exit_code, keras.stdout, keras.stderr.splitlines()[-1])
    assert list(onnx_cache.cache_folder().glob("*.onnx")) == []
