"""Exports a Keras network to ONNX with normalization and softmax inside: uint8 images in, probabilities out.

It runs in a child process (`python -m resclassify.backends.onnx_export JOB`), so that the caller
never imports TensorFlow, Keras or tf2onnx: it reads one JSON job and writes one JSON result file.
"""

import contextlib
import errno
import json
import sys

import numpy as np

INPUT_NAME = "images"
# Keras and ONNX Runtime compute the same network in different orders; their probabilities
# differ by float rounding (about 1e-5 here). A difference far above that is a wrong export.
AGREEMENT_TOLERANCE = 1e-3
CHECK_BATCH = 2


def uint8_network(network, input_size, normalization, ends_in_probabilities):
    """network behind its normalization, with a float32 softmax at the end unless it has one."""
    import keras

    from . import normalize

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
    from .. import model as keras_models

    size = job.get("input_size")
    if job["arch"] == "custom":
        classifier = keras_models.load_custom_classifier(job["weights"], "cpu", threads=job.get("threads"),
                                                         backend="tensorflow", size=size)
    else:
        classifier = keras_models.load_classifier(job["weights"], job["arch"], "cpu", threads=job.get("threads"),
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
        raise ExportFailed(f"cannot export {_name(job)} to ONNX: {_first_line(exc)}") from None
    except Exception as exc:  # tf2onnx raises whatever the op it cannot convert raises
        raise ExportFailed(f"cannot export {_name(job)} to ONNX: {_first_line(exc)}") from None
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
    from pathlib import Path

    return Path(job["weights"]).name if job["arch"] == "custom" else job["arch"]


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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


if __name__ == "__main__":
    main()
