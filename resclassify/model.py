"""The only module that imports TensorFlow (lazily): builds the network, loads weights, runs batches."""

import contextlib
import functools
import os
import sys
import warnings
from dataclasses import dataclass, field

import numpy as np

from .config import DEVICE_CHOICES, PRECISION_CHOICES
from .errors import DeviceError, WeightsError
from .labels import imagenet_classes

_tensorflow_module = None
_classifiers = {}


@contextlib.contextmanager
def native_stderr_silenced(enabled=True):
    """Send file descriptor 2 to /dev/null: TensorFlow's C++ start-up logging ignores Python."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def tensorflow(verbose=False):
    """Import TensorFlow once, without its start-up noise unless verbose."""
    global _tensorflow_module
    if _tensorflow_module is None:
        if not verbose and not os.environ.get("TF_CPP_MIN_LOG_LEVEL"):
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        with native_stderr_silenced(not verbose):
            import tensorflow as tf

            if not verbose:
                tf.get_logger().setLevel("ERROR")
                import absl.logging

                absl.logging.set_verbosity(absl.logging.ERROR)
        _tensorflow_module = tf
    return _tensorflow_module


def configure_device(tf, device, threads=None):
    """Pick CPU or GPU and thread counts; must run before TensorFlow creates its first tensor."""
    if device not in DEVICE_CHOICES:
        raise DeviceError(f"unknown device {device!r}; choose from {', '.join(DEVICE_CHOICES)}")
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


# A run of at most this many images calls the network eagerly: tracing a graph costs more
# than it saves for one tiny batch, and an eager first call grows slow with batch size
# (measured here, first call in a fresh process: 4 images eager 0.56 s, traced 0.79 s;
# 32 images eager 7.5 s, traced 1.6 s).
EAGER_MAX_BATCH = 4


@dataclass
class Classifier:
    """A loaded network: float32 batches in, class probabilities out."""

    keras_model: object
    arch: str
    weights: str
    device: str
    input_size: int
    classes: object
    precision: str = "float32"
    _graph: object = field(default=None, repr=False)

    def _probabilities(self, batch):
        import tensorflow as tf

        logits = self.keras_model(batch, training=False)
        # Softmax in float32 whatever the compute precision, so probabilities keep their digits.
        return tf.nn.softmax(tf.cast(logits, tf.float32))

    def predict(self, batch, pad_to=None):
        """Probabilities for a normalized batch; padded to pad_to rows so its shape never changes."""
        count = len(batch)
        if pad_to and count < pad_to:
            padding = np.zeros((pad_to - count,) + batch.shape[1:], dtype=batch.dtype)
            batch = np.concatenate([batch, padding])
        if len(batch) <= EAGER_MAX_BATCH and self._graph is None:
            probabilities = self._probabilities(batch)
        else:
            if self._graph is None:
                # A traced graph runs about 1.5x faster than eager calls; fixed shapes trace it once.
                self._graph = tensorflow().function(self._probabilities)
            probabilities = self._graph(batch)
        return np.asarray(probabilities, dtype=np.float32)[:count]


_ARCH_BUILDERS = {"resnet50": "ResNet50"}


def fold_batch_norms(model):
    """A copy of model with every BatchNormalization that directly follows a Conv2D folded into it.

    At inference a batch norm is a per-channel scale and shift, so it can live in the conv's
    kernel and bias. That removes a full pass over the activations for each of ResNet50's 53
    batch norms, about a quarter of the CPU time, and moves outputs only by float rounding
    (about 1e-6 relative).
    """
    import keras

    folds = {}  # conv layer name -> the batch norm it feeds, and nothing else
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization) or len(layer._inbound_nodes) != 1:
            continue
        parents = layer._inbound_nodes[0].parent_nodes
        if len(parents) != 1 or layer.axis not in (-1, 3):
            continue
        conv = parents[0].operation
        if isinstance(conv, keras.layers.Conv2D) and len(conv._inbound_nodes) == 1 and len(conv._outbound_nodes) == 1:
            folds[conv.name] = layer
    if not folds:
        return model
    folded = {bn.name for bn in folds.values()}

    def clone_layer(layer):
        if layer.name in folded:
            return _passthrough_class()(name=layer.name, dtype=layer.dtype_policy)
        config = layer.get_config()
        if layer.name in folds:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(model, clone_function=clone_layer)
    for layer in model.layers:
        if layer.name in folded or not layer.weights:
            continue
        weights = layer.get_weights()
        if layer.name in folds:
            bn = folds[layer.name]
            channels = weights[0].shape[-1]
            gamma = np.asarray(bn.gamma) if bn.scale else np.ones(channels, np.float32)
            beta = np.asarray(bn.beta) if bn.center else np.zeros(channels, np.float32)
            scale = gamma / np.sqrt(np.asarray(bn.moving_variance) + bn.epsilon)
            bias = weights[1] if layer.use_bias else np.zeros(channels, np.float32)
            weights = [weights[0] * scale, (bias - np.asarray(bn.moving_mean)) * scale + beta]
        clone.get_layer(layer.name).set_weights(weights)
    return clone


@functools.cache
def _passthrough_class():
    import keras

    class Passthrough(keras.layers.Layer):
        """Stands where a folded batch norm stood, so layer names and the graph keep their shape."""

        def call(self, inputs, mask=None, training=None):
            return inputs

    return Passthrough


def load_classifier(weights_path, arch="resnet50", device="auto", *, precision="float32", threads=None,
                    verbose=False):
    """Build the network and load a weights file; cached per (file, arch, device, precision) in this process."""
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISION_CHOICES)}")
    key = (str(weights_path), arch, device, precision)
    if key in _classifiers:
        return _classifiers[key]
    tf = tensorflow(verbose)
    with native_stderr_silenced(not verbose):
        # Probing for GPUs logs CUDA errors from C++ on machines without one.
        used_device = configure_device(tf, device, threads)
        import keras

        build = getattr(keras.applications, _ARCH_BUILDERS[arch])
        previous_policy = keras.config.dtype_policy()
        if precision != "float32":
            # Weights stay float32; layers compute in the lower precision.
            keras.config.set_dtype_policy(f"mixed_{precision}")
        try:
            model = build(weights=None, classifier_activation=None)
        finally:
            keras.config.set_dtype_policy(previous_policy)
        try:
            model.load_weights(str(weights_path))
        except Exception as exc:  # Keras and h5py raise many kinds for a file that is not weights
            raise WeightsError(f"cannot load {arch} weights from {weights_path}: {_first_line(exc)}") from None
        model = fold_batch_norms(model)
    classifier = Classifier(model, arch, str(weights_path), used_device, int(model.input_shape[1]),
                            imagenet_classes(), precision)
    _classifiers[key] = classifier
    return classifier


def _first_line(exc):
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
