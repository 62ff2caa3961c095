"""Exports a Keras network to ONNX with normalization and softmax inside: uint8 images in, probabilities out.

It runs in a child process (`python -m resclassify.runners.onnx_export JOB`), so that the caller
never imports TensorFlow, Keras or tf2onnx: it reads one JSON job and writes one JSON result file.
run_export_process is the parent's side: it starts that child and turns its answer into ours.
"""

import contextlib
import errno
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from ..errors import ExportError, first_line
from .onnx_cache import OnnxCacheNotWritable, read_json

INPUT_NAME = "images"
# Keras and ONNX Runtime compute the same network in different orders; their probabilities
# differ by float rounding (about 1e-5 here). A difference far above that is a wrong export.
AGREEMENT_TOLERANCE = 1e-3
CHECK_BATCH = 2


def uint8_network(network, input_size, normalization, ends_in_probabilities):
    """network behind its normalization, with a float32 softmax at the end unless it has one."""
    import keras

    from ..backends import normalize

    images = keras.Input((input_size, input_size, 3), dtype="uint8", name=INPUT_NAME)
    # The arithmetic the Keras backends run inside their compiled function, so both agree.
    outputs = keras.ops.cast(network(normalize(keras.ops.cast(images, "float32"), normalization)), "float32")
    if not ends_in_probabilities:
        outputs = keras.ops.softmax(outputs, axis=-1)
    return keras.Model(images, outputs, name="resclassify_uint8")


def _check_images(input_size):
    """Smooth colour fields, like photos: random noise would push every image to one class."""
    from PIL import Image

    rng = np.random.default_rng(0)
    images = []
    for _ in range(CHECK_BATCH):
        coarse = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        images.append(np.asarray(Image.fromarray(coarse).resize((input_size, input_size), Image.Resampling.BICUBIC)))
    return np.stack(images)


def export(job):
    """Load the network the job names, export it to job["output"], and check ONNX Runtime agrees with Keras."""
    from . import keras as keras_runner

    size = job.get("input_size")
    if job["arch"] == "custom":
        classifier = keras_runner.load_custom_classifier(job["weights"], "cpu", threads=job.get("threads"),
                                                         backend="tensorflow", size=size)
    else:
        classifier = keras_runner.load_classifier(job["weights"], job["arch"], "cpu", threads=job.get("threads"),
                                                  backend="tensorflow", size=size)
    import tensorflow as tf  # started quietly by the loader above

    size = size or classifier.input_size
    normalization = job.get("normalization") or classifier.normalization
    wrapper = uint8_network(classifier.keras_model, size, normalization, classifier.ends_in_probabilities)
    signature = [tf.TensorSpec((None, size, size, 3), tf.uint8, name=INPUT_NAME)]
    try:
        with _garbage_collected_between_optimizers():
            wrapper.export(job["output"], format="onnx", verbose=False, input_signature=signature)
        difference = _disagreement(wrapper, job["output"], size)
    except ExportFailed:
        raise
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
            raise NotWritable(f"cannot write {job['output']}: {exc.strerror}") from None
        raise ExportFailed(f"cannot export {_name(job)} to ONNX: {first_line(exc)}") from None
    except Exception as exc:  # tf2onnx raises whatever the op it cannot convert raises
        raise ExportFailed(f"cannot export {_name(job)} to ONNX: {first_line(exc)}") from None
    if not difference <= AGREEMENT_TOLERANCE:
        raise ExportFailed(f"the ONNX export of {_name(job)} does not give Keras's probabilities "
                           f"(they differ by up to {difference:.2g})")
    import keras
    import tf2onnx

    return {
        "input_size": size,
        "classes": len(classifier.classes),
        "normalization": normalization,
        "parameters": classifier.parameters,
        "largest_difference_from_keras": float(difference),
        "exporter": {"keras": keras.__version__, "tensorflow": tf.__version__, "tf2onnx": tf2onnx.__version__},
    }


@contextlib.contextmanager
def _garbage_collected_between_optimizers():
    """Collect garbage before each of tf2onnx's graph optimizers: the export's peak memory drops from 8.2 to 3.0 GiB.

    tf2onnx deep-copies the whole graph, weights included, before each optimizer pass (to roll
    back a pass that fails), and the copies it drops are reference cycles that Python's collector,
    counting objects rather than bytes, frees late: ResNet50's 100 MB of weights piled up to
    8.2 GiB. The file written is the same, byte for byte. Where tf2onnx is laid out otherwise,
    nothing changes.
    """
    import gc

    try:
        from tf2onnx import optimizer
    except ImportError:
        yield
        return
    optimizers = getattr(optimizer, "_optimizers", None)
    if not isinstance(optimizers, dict):
        yield
        return
    saved = dict(optimizers)

    def collecting(factory):
        def make(*args, **kwargs):
            gc.collect()
            return factory(*args, **kwargs)
        return make

    optimizers.update({name: collecting(factory) for name, factory in saved.items()})
    try:
        yield
    finally:
        optimizers.update(saved)
        gc.collect()


def _disagreement(wrapper, path, size):
    """Largest probability difference between Keras and ONNX Runtime on a few photo-like images."""
    import onnxruntime

    images = _check_images(size)
    expected = np.asarray(wrapper(images, training=False), dtype=np.float32)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run(None, {INPUT_NAME: images})[0]
    if got.shape != expected.shape:
        return float("inf")
    return float(np.max(np.abs(got - expected)))


class ExportFailed(Exception):
    """The network loaded, but tf2onnx could not turn it into an ONNX graph that agrees with it."""


class NotWritable(Exception):
    """The ONNX file could not be written (no room, a read-only folder): not the network's fault."""


def _name(job):
    return Path(job["weights"]).name if job["arch"] == "custom" else job["arch"]


def main(argv=None):
    """Run the job given as JSON in argv; write the result (or the error) as JSON to job["result"]."""
    from ..errors import ResclassifyError

    job = json.loads((argv or sys.argv[1:])[0])
    try:
        result = {"ok": True, **export(job)}
    except ResclassifyError as exc:  # the weights or model did not load: the same error Keras gives
        result = {"error": str(exc), "kind": type(exc).__name__, "option": getattr(exc, "option", None)}
    except ExportFailed as exc:
        result = {"error": str(exc), "kind": "ExportFailed"}
    except NotWritable as exc:
        result = {"error": str(exc), "kind": "NotWritable"}
    with open(job["result"], "w", encoding="utf-8") as f:
        json.dump(result, f)




# --- the parent's side: the child started, its answer read --------------------------------------

def exporter_installed():
    return importlib.util.find_spec("tf2onnx") is not None


def run_export_process(job, *, verbose=False):
    """Run onnx_export in a child Python with the TensorFlow backend; its errors come back as ours."""
    if not exporter_installed():
        raise ExportError("exporting to ONNX needs tf2onnx: pip install 'resclassify[onnx]' (or pass "
                          "--backend tensorflow)")
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    # tf2onnx converts TensorFlow graphs: the export runs on Keras's TensorFlow backend whatever
    # backend the user picked for Keras.
    env["KERAS_BACKEND"] = "tensorflow"
    if not verbose:
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # Named like the .part file it sits beside, so that a killed run's leftover is cleaned up alike.
    job = dict(job, result=job["output"] + ".result.part")
    try:
        # On Ctrl-C (and the signals the command line treats alike) run() kills the child before
        # the exception goes on; a parent killed outright takes it along (_dies_with_parent).
        child = subprocess.run(export_command(job),
                               # stdout carries results only: the child's chatter goes to stderr.
                               stdout=sys.stderr if verbose else subprocess.DEVNULL,
                               stderr=None if verbose else subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                               preexec_fn=_dies_with_parent())
        result = read_json(job["result"])
    finally:
        if os.path.exists(job["result"]):
            os.unlink(job["result"])
    if child.returncode == 0 and isinstance(result, dict) and result.get("ok"):
        result.pop("ok")
        return result
    if isinstance(result, dict) and "error" in result:
        raise _error_of_kind(result)
    raise ExportError(f"exporting {Path(job['weights']).name} to ONNX failed: {_child_failure(child)}")


def export_command(job):
    """The export child's command line."""
    return [sys.executable, "-m", "resclassify.runners.onnx_export", json.dumps(job)]


def _dies_with_parent():
    """A preexec_fn making the kernel kill the child when this process dies, however it dies (Linux); else None.

    Without it, a parent killed by SIGKILL (or by a signal it does not handle) leaves the child
    exporting on alone for half a minute, at several GiB.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes
        import signal

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec():
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before that took effect
            os._exit(1)

    return preexec


def _error_of_kind(result):
    """The child's error as the same resclassify error (a WeightsError stays one); ExportError otherwise."""
    from .. import errors

    if result.get("kind") == "NotWritable":
        return OnnxCacheNotWritable(f"{result['error']}; set KERAS_HOME to a writable folder (ONNX files go in "
                                    "$KERAS_HOME/models/onnx), or pass --backend tensorflow")
    kind = getattr(errors, str(result.get("kind")), None)
    if not (isinstance(kind, type) and issubclass(kind, errors.ResclassifyError)) or issubclass(kind, errors.InputError):
        return ExportError(result["error"])
    if issubclass(kind, errors.PreprocessingError):
        return kind(result["error"], result.get("option"))
    return kind(result["error"])


def _child_failure(child):
    """Why the export child stopped without an answer: a signal, or the last line of its traceback."""
    if child.returncode < 0:
        import signal

        try:
            name = signal.Signals(-child.returncode).name
        except ValueError:
            name = f"signal {-child.returncode}"
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"the exporting process was stopped by {name}{hint}"
    lines = [line.strip() for line in (child.stderr or "").splitlines() if line.strip()]
    if "Traceback (most recent call last):" in lines:
        return lines[-1]
    return f"exit status {child.returncode}" + (f": {lines[-1]}" if lines else "")


if __name__ == "__main__":
    main()
