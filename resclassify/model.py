"""The only module that imports TensorFlow (lazily): builds the network, loads weights, runs batches."""

import contextlib
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import (ARCH_CHOICES, ARCH_NORMALIZATION, DEFAULT_CUSTOM_NORMALIZATION, DEFAULT_SIZE,
                     DEVICE_CHOICES, resolve_preprocessing)
from .errors import DeviceError, ModelError, WeightsError
from .labels import ClassIndex, imagenet_classes, read_class_file

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
        if not verbose:
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
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


@dataclass
class Classifier:
    """A loaded network: float32 batches in, class probabilities out.

    arch is one of config.ARCH_CHOICES, or "custom" for a user's own model (then weights is
    the model file); normalization is what the network expects unless the user says otherwise.
    """

    keras_model: object
    arch: str
    weights: str
    device: str
    input_size: int
    run_graph: object = None
    classes: object = None
    normalization: str = "caffe"

    @property
    def name(self):
        """What ran, in a word: the architecture, or the file name of a user's own model."""
        return Path(self.weights).name if self.arch == "custom" else self.arch

    def preprocessing(self, name="center-crop", *, mode=None, exact_decode=False):
        """The preprocessing for this network: its input size, and its normalization unless mode overrides it."""
        return resolve_preprocessing(name, size=self.input_size, mode=mode or self.normalization,
                                     exact_decode=exact_decode)

    def predict(self, batch, pad_to=None):
        """Probabilities for a normalized batch; padded to pad_to rows so its shape never changes."""
        count = len(batch)
        if pad_to and count < pad_to:
            padding = np.zeros((pad_to - count,) + batch.shape[1:], dtype=batch.dtype)
            batch = np.concatenate([batch, padding])
        # A traced graph runs about 1.5x faster than eager calls; fixed shapes trace it once.
        probabilities = self.run_graph(batch)
        return np.asarray(probabilities, dtype=np.float32)[:count]


# keras.applications constructor for each --arch.
_ARCH_BUILDERS = {
    "resnet50": "ResNet50",
    "resnet101": "ResNet101",
    "resnet152": "ResNet152",
    "resnet50v2": "ResNet50V2",
    "resnet101v2": "ResNet101V2",
    "resnet152v2": "ResNet152V2",
}


def load_classifier(weights_path, arch="resnet50", device="auto", *, threads=None, verbose=False,
                    classes_path=None):
    """Build one of Keras's ResNets and load a weights file; cached per (file, arch, device, classes)."""
    if arch not in _ARCH_BUILDERS:
        raise WeightsError(f"unknown architecture {arch!r}; choose from {', '.join(ARCH_CHOICES)}")
    key = (str(weights_path), arch, device, str(classes_path))
    if key in _classifiers:
        return _classifiers[key]
    classes = _classes(_read_classes(classes_path), classes_path, 1000)
    tf = tensorflow(verbose)
    used_device = configure_device(tf, device, threads)
    with native_stderr_silenced(not verbose):
        import keras

        build = getattr(keras.applications, _ARCH_BUILDERS[arch])
        model = build(weights=None)
        try:
            model.load_weights(str(weights_path))
        except Exception as exc:  # Keras and h5py raise many kinds for a file that is not weights
            raise WeightsError(f"cannot load {arch} weights from {weights_path}: {_first_line(exc)}") from None
    run_graph = tf.function(lambda batch: model(batch, training=False))
    classifier = Classifier(model, arch, str(weights_path), used_device, int(model.input_shape[1]),
                            run_graph, classes, ARCH_NORMALIZATION[arch])
    _classifiers[key] = classifier
    return classifier


def load_custom_classifier(model_path, device="auto", *, threads=None, verbose=False, classes_path=None):
    """A user's own Keras model (.keras, or a full-model .h5) with its class names; cached like the others.

    The input size is read from the model. Its normalization is "none" when the model starts
    with its own Rescaling or Normalization layer, else caffe (a fine-tuned keras.applications
    ResNet50 expects what ResNet50 does). Logits are turned into probabilities with a softmax.
    """
    path = Path(model_path).expanduser()
    key = (str(path), "custom", device, str(classes_path))
    if key in _classifiers:
        return _classifiers[key]
    if not path.is_file():
        raise ModelError(f"model {model_path}: {'is not a file' if path.exists() else 'no such file'}")
    if path.suffix.lower() not in (".keras", ".h5", ".hdf5"):
        raise ModelError(f"model {model_path}: expected a .keras file or a full-model .h5 file")
    named = _read_classes(classes_path)  # before TensorFlow: a wrong path should fail fast
    tf = tensorflow(verbose)
    used_device = configure_device(tf, device, threads)
    with native_stderr_silenced(not verbose):
        import keras

        try:
            model = keras.models.load_model(str(path), compile=False)
        except Exception as exc:  # a damaged zip, an unknown custom layer, a weights-only .h5, ...
            hint = " (a weights-only .h5 goes with --weights and --arch)" if path.suffix.lower() != ".keras" else ""
            raise ModelError(f"cannot load the model {model_path}: {_first_line(exc)}{hint}") from None
    input_size, outputs = _model_shape(model, model_path)
    classes = _classes(named, classes_path, outputs)
    if _ends_in_probabilities(model):
        run_graph = tf.function(lambda batch: model(batch, training=False))
    else:
        run_graph = tf.function(lambda batch: tf.nn.softmax(model(batch, training=False), axis=-1))
    normalization = "none" if _starts_by_scaling(model) else DEFAULT_CUSTOM_NORMALIZATION
    classifier = Classifier(model, "custom", str(path), used_device, input_size, run_graph, classes, normalization)
    _classifiers[key] = classifier
    return classifier


def _model_shape(model, model_path):
    """(square input size, number of outputs) of a one-image-in, one-vector-out model, or ModelError."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(f"model {model_path} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                         "resclassify needs one image input and one class output")
    in_shape, out_shape = tuple(model.inputs[0].shape), tuple(model.outputs[0].shape)
    if len(in_shape) != 4 or in_shape[3] != 3:
        raise ModelError(f"model {model_path} takes inputs of shape {in_shape}; resclassify feeds "
                         "(batch, height, width, 3) RGB images")
    height, width = in_shape[1], in_shape[2]
    if height is None and width is None:
        size = DEFAULT_SIZE  # any size goes (global pooling): use the standard one
    elif height != width:
        raise ModelError(f"model {model_path} takes {height}x{width} inputs; resclassify feeds square ones")
    else:
        size = int(height)
    if len(out_shape) != 2 or not out_shape[1]:
        raise ModelError(f"model {model_path} gives outputs of shape {out_shape}; resclassify needs "
                         "(batch, classes)")
    return size, int(out_shape[1])


def _layers_in_order(model):
    return [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]


def _starts_by_scaling(model):
    layers = _layers_in_order(model)
    return bool(layers) and type(layers[0]).__name__ in ("Rescaling", "Normalization")


def _ends_in_probabilities(model):
    layers = _layers_in_order(model)
    if not layers:
        return False
    last = layers[-1]
    if hasattr(last, "layers"):  # a nested model as the last layer
        return _ends_in_probabilities(last)
    if type(last).__name__ == "Softmax":
        return True
    activation = getattr(last, "activation", None)
    return getattr(activation, "__name__", "") in ("softmax", "sigmoid")


def _read_classes(classes_path):
    return read_class_file(classes_path) if classes_path is not None else None


def _classes(classes, classes_path, outputs):
    """The class names for a network with `outputs` outputs: the user's file, ImageNet's, or the indices."""
    if classes is not None:
        if len(classes) != outputs:
            raise ModelError(f"classes file {classes_path} has {len(classes)} labels but the model has "
                             f"{outputs} outputs")
        return classes
    if outputs == 1000:
        return imagenet_classes()
    # No names given: each class is called by its output index, so results still read.
    return ClassIndex(labels=tuple(str(i) for i in range(outputs)))


def _first_line(exc):
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
