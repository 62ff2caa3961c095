"""The ONNX Runtime backend: the same answers as Keras, and a cache that is keyed, atomic and rebuilt when damaged.

One ResNet50 export (about half a minute) is shared by the session; tests that change the cache
work on a copy of it, and tests of the cache's bookkeeping use a stand-in exporter that copies
that file rather than exporting again.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, SAMPLE_IMAGES, save_image
from resclassify.backends import onnxruntime as ort_backend
from resclassify.config import resolve_preprocessing
from resclassify.errors import ExportError, WeightsError
from resclassify.images import load_image

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")


@pytest.fixture(scope="session")
def exported_home(tmp_path_factory, weights_file):
    """A KERAS_HOME whose ONNX cache holds the test ResNet50, exported once for the whole session."""
    home = tmp_path_factory.mktemp("onnx-keras-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KERAS_HOME", str(home))
        messages = []
        classifier = ort_backend.load_classifier(str(weights_file), "resnet50", notice=messages.append)
    assert len(messages) == 1 and messages[0].startswith("exporting resnet50 to ONNX once (")
    return home, classifier


@pytest.fixture
def onnx_home(exported_home, monkeypatch, tmp_path):
    """A private copy of the session's KERAS_HOME with the exported file, which a test may change."""
    source, _ = exported_home
    home = tmp_path / "keras-home-copy"
    shutil.copytree(source, home)
    monkeypatch.setenv("KERAS_HOME", str(home))
    ort_backend._classifiers.clear()
    yield home
    ort_backend._classifiers.clear()


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
    first, second = ort_backend.ExportKey(**base), ort_backend.ExportKey(**other)
    assert first.path != second.path and first.about_path != second.about_path
    assert first.path.parent == second.path.parent


def test_a_warm_cache_exports_nothing(onnx_home, weights_file):
    calls = []
    messages = []
    classifier = ort_backend.load_classifier(str(weights_file), "resnet50", notice=messages.append,
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
    classifier = ort_backend.load_classifier(str(other), "resnet50",
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
        ort_backend.load_classifier(str(weights_file), "resnet50", exporter=half_written_then_fails)
    assert os.listdir(target.parent) == [ort_backend.HASHES_FILE, target.with_suffix(".json").name]
    # The next run exports again and works.
    calls = []
    classifier = ort_backend.load_classifier(str(weights_file), "resnet50",
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
    classifier = ort_backend.load_classifier(str(weights_file), "resnet50", notice=messages.append,
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
    session = ort_backend.open_session(path)
    return session.run(None, {"images": sample_batch()})[0]


def test_a_copied_cache_is_checked_once_then_trusted(onnx_home, weights_file, monkeypatch):
    target = the_onnx_file(onnx_home)
    os.utime(target, ns=(1_000_000_000, 1_000_000_000))  # a copy that did not keep the time
    hashed = []
    from resclassify import weights

    real = weights.file_hash
    monkeypatch.setattr(weights, "file_hash", lambda path, algorithm: hashed.append(str(path)) or real(path, algorithm))
    never = lambda job, verbose=False: pytest.fail("exported again")  # noqa: E731
    ort_backend.load_classifier(str(weights_file), "resnet50", exporter=never)
    assert hashed == [str(target)]
    ort_backend._classifiers.clear()
    ort_backend.load_classifier(str(weights_file), "resnet50", exporter=never)
    assert hashed == [str(target)]  # the record now knows the new time: no second hash


def test_a_record_from_another_format_is_rebuilt(onnx_home, weights_file, session_file):
    about_path = the_onnx_file(onnx_home).with_suffix(".json")
    about = json.loads(about_path.read_text())
    about["format"] = ort_backend.FORMAT_VERSION - 1
    about_path.write_text(json.dumps(about))
    calls, messages = [], []
    ort_backend.load_classifier(str(weights_file), "resnet50", notice=messages.append,
                                exporter=copying_exporter(session_file, calls))
    assert len(calls) == 1
    assert "made by another version" in messages[0]
    assert json.loads(about_path.read_text())["format"] == ort_backend.FORMAT_VERSION


def test_a_weights_file_is_hashed_once_while_it_is_unchanged(weights_file, monkeypatch, tmp_path):
    from resclassify import weights

    hashed = []
    real = weights.file_hash
    monkeypatch.setattr(weights, "file_hash", lambda path, algorithm: hashed.append(str(path)) or real(path, algorithm))
    copy = tmp_path / "copy.h5"
    shutil.copyfile(weights_file, copy)
    first = ort_backend.file_sha256(copy)
    assert ort_backend.file_sha256(copy) == first and hashed == [str(copy.resolve())]
    data = copy.read_bytes()
    copy.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert ort_backend.file_sha256(copy) == _sha256(copy) != first
    assert len(hashed) == 2
