"""The TensorFlow backend: quiet import, device and threads, tf.function over the network."""

import os
import sys

from ..config import DEVICE_CHOICES, check_choice
from ..errors import DeviceError
from . import native_stderr_silenced

NAME = "tensorflow"

# A batch of at most this many images runs eagerly until a graph exists: tracing costs more
# than it saves for one tiny batch, and an eager first call grows slow with batch size
# (measured here, first call in a fresh process: 4 images eager 0.56 s, traced 0.79 s;
# 32 images eager 7.5 s, traced 1.6 s).
EAGER_MAX_BATCH = 4

_tf = None


def start(verbose=False):
    """Import TensorFlow once, and Keras on it, without their start-up noise unless verbose."""
    tf = _framework(verbose)
    with native_stderr_silenced(not verbose):
        import keras  # noqa: F401 (on TensorFlow: KERAS_BACKEND was set before this import)
    return tf


def _framework(verbose=False):
    """TensorFlow alone (what devices() needs), imported once."""
    global _tf
    if _tf is not None:
        return _tf
    if not verbose and not os.environ.get("TF_CPP_MIN_LOG_LEVEL"):
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    with native_stderr_silenced(not verbose):
        import tensorflow as tf

        if not verbose:
            tf.get_logger().setLevel("ERROR")
            import absl.logging

            absl.logging.set_verbosity(absl.logging.ERROR)
    _tf = tf
    return tf


def configure(device, threads=None, verbose=False):
    """Choose the device and thread counts; probing for GPUs logs CUDA errors from C++ where there is none."""
    tf = start(verbose)
    with native_stderr_silenced(not verbose):
        return configure_device(tf, device, threads)


def configure_device(tf, device, threads=None):
    """Pick CPU or GPU and thread counts; must run before TensorFlow creates its first tensor."""
    check_choice("device", device, DEVICE_CHOICES)
    gpus = tf.config.list_physical_devices("GPU")
    if device == "gpu" and not gpus:
        raise DeviceError("--device gpu: TensorFlow sees no GPU on this machine (use --device cpu or auto)")
    try:
        if device == "cpu":
            tf.config.set_visible_devices([], "GPU")
            gpus = []
        for gpu in gpus:
            # Take GPU memory as needed instead of the whole card.
            tf.config.experimental.set_memory_growth(gpu, True)
        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))
    except RuntimeError:
        # Already initialised by an earlier model in this process: its settings stand.
        pass
    return "gpu" if gpus else "cpu"


def devices():
    """What TensorFlow sees: ["cpu:0"], or ["cpu:0", "gpu:0 (NVIDIA H200)"]."""
    tf = _framework()
    with native_stderr_silenced():
        shown = []
        for device in tf.config.list_physical_devices():
            name = device.name.replace("/physical_device:", "").lower()
            if device.device_type == "GPU":
                model = tf.config.experimental.get_device_details(device).get("device_name")
                name += f" ({model})" if model else ""
            shown.append(name)
    return shown


def compile_network(keras_model, body):
    """numpy uint8 batch -> numpy float32 probabilities: eager for a first tiny batch, else one tf.function."""
    tf = start()
    graph = None

    def call(inputs):
        return keras_model(inputs, training=False)

    def run(batch):
        nonlocal graph
        if graph is None and len(batch) <= EAGER_MAX_BATCH:
            return body(call, tf.convert_to_tensor(batch)).numpy()
        if graph is None:
            # A traced graph runs about 1.5x faster than eager calls; fixed shapes trace it once.
            graph = tf.function(lambda x: body(call, x))
        return graph(batch).numpy()

    return run


def stage(batch):
    """TensorFlow copies a numpy batch to the device inside the call: nothing to start early."""
    return batch


def is_out_of_memory(exc):
    tf = sys.modules.get("tensorflow")
    errors = getattr(tf, "errors", None)
    return errors is not None and isinstance(exc, errors.ResourceExhaustedError)
