"""The only module that imports TensorFlow (lazily): builds the network, loads weights, runs batches."""

import contextlib
import functools
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import (ARCH_CHOICES, ARCH_NORMALIZATION, DEFAULT_CUSTOM_NORMALIZATION, DEFAULT_SIZE,
                     DEVICE_CHOICES, PRECISION_CHOICES, resolve_preprocessing)
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
    """A loaded network: float32 batches in, class probabilities out.

    arch is one of config.ARCH_CHOICES, or "custom" for a user's own model (then weights is
    the model file); normalization is what the network expects unless the user says otherwise.
    """

    keras_model: object
    arch: str
    weights: str
    device: str
    input_size: int
    classes: object
    normalization: str = "caffe"
    precision: str = "float32"
    ends_in_probabilities: bool = False
    parameters: int = 0  # of the network as built, before batch norms are folded
    _graph: object = field(default=None, repr=False)

    @property
    def name(self):
        """What ran, in a word: the architecture, or the file name of a user's own model."""
        return Path(self.weights).name if self.arch == "custom" else self.arch

    def preprocessing(self, name="center-crop", *, mode=None, exact_decode=False):
        """The preprocessing for this network: its input size, and its normalization unless mode overrides it."""
        return resolve_preprocessing(name, size=self.input_size, mode=mode or self.normalization,
                                     exact_decode=exact_decode)

    def _probabilities(self, batch):
        import tensorflow as tf

        outputs = tf.cast(self.keras_model(batch, training=False), tf.float32)
        # Softmax in float32 whatever the compute precision, so probabilities keep their digits.
        return outputs if self.ends_in_probabilities else tf.nn.softmax(outputs, axis=-1)

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


# keras.applications constructor for each --arch.
_ARCH_BUILDERS = {
    "resnet50": "ResNet50",
    "resnet101": "ResNet101",
    "resnet152": "ResNet152",
    "resnet50v2": "ResNet50V2",
    "resnet101v2": "ResNet101V2",
    "resnet152v2": "ResNet152V2",
}


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
            gamma = bn.gamma.numpy() if bn.scale else np.ones(channels, np.float32)
            beta = bn.beta.numpy() if bn.center else np.zeros(channels, np.float32)
            scale = gamma / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
            bias = weights[1] if layer.use_bias else np.zeros(channels, np.float32)
            weights = [weights[0] * scale, (bias - bn.moving_mean.numpy()) * scale + beta]
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
                    verbose=False, classes_path=None):
    """Build one of Keras's ResNets and load a weights file; cached per (file, arch, device, precision, classes)."""
    if arch not in _ARCH_BUILDERS:
        raise WeightsError(f"unknown architecture {arch!r}; choose from {', '.join(ARCH_CHOICES)}")
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISION_CHOICES)}")
    key = (str(weights_path), arch, device, precision, str(classes_path))
    if key in _classifiers:
        return _classifiers[key]
    classes = _classes(_read_classes(classes_path), classes_path, 1000)
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
        parameters = model.count_params()
        model = fold_batch_norms(model)
    classifier = Classifier(model, arch, str(weights_path), used_device, int(model.input_shape[1]), classes,
                            ARCH_NORMALIZATION[arch], precision, parameters=parameters)
    _classifiers[key] = classifier
    return classifier


def load_custom_classifier(model_path, device="auto", *, precision="float32", threads=None, verbose=False,
                           classes_path=None):
    """A user's own Keras model (.keras, or a full-model .h5) with its class names; cached like the others.

    The input size is read from the model. Its normalization is "none" when the model starts
    with its own Rescaling or Normalization layer, else caffe (a fine-tuned keras.applications
    ResNet50 expects what ResNet50 does). Logits are turned into probabilities with a softmax.
    """
    path = Path(model_path).expanduser()
    key = (str(path), "custom", device, str(classes_path))
    if key in _classifiers:
        return _classifiers[key]
    if precision != "float32":
        raise ModelError(f"--precision {precision} is for the built-in ResNets; a model file runs in the "
                         "precision it was saved with")
    if not path.is_file():
        raise ModelError(f"model {model_path}: {'is not a file' if path.exists() else 'no such file'}")
    if path.suffix.lower() not in (".keras", ".h5", ".hdf5"):
        raise ModelError(f"model {model_path}: expected a .keras file or a full-model .h5 file")
    named = _read_classes(classes_path)  # before TensorFlow: a wrong path should fail fast
    tf = tensorflow(verbose)
    with native_stderr_silenced(not verbose):
        used_device = configure_device(tf, device, threads)
        import keras

        try:
            model = keras.models.load_model(str(path), compile=False)
        except Exception as exc:  # a damaged zip, an unknown custom layer, a weights-only .h5, ...
            hint = " (a weights-only .h5 goes with --weights and --arch)" if path.suffix.lower() != ".keras" else ""
            raise ModelError(f"cannot load the model {model_path}: {_first_line(exc)}{hint}") from None
    input_size, outputs = _model_shape(model, model_path)
    classes = _classes(named, classes_path, outputs, source=path.name)
    normalization = "none" if _starts_by_scaling(model) else DEFAULT_CUSTOM_NORMALIZATION
    classifier = Classifier(model, "custom", str(path), used_device, input_size, classes, normalization,
                            ends_in_probabilities=_ends_in_probabilities(model), parameters=model.count_params())
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


def _classes(classes, classes_path, outputs, source=None):
    """The class names for a network with `outputs` outputs: the user's file, ImageNet's, or the indices."""
    if classes is not None:
        if len(classes) != outputs:
            raise ModelError(f"classes file {classes_path} has {len(classes)} labels but the model has "
                             f"{outputs} outputs")
        return classes
    if outputs == 1000:
        return imagenet_classes()
    # No names given: each class is called by its output index, so results still read.
    return ClassIndex(labels=tuple(str(i) for i in range(outputs)), source=source)


def _first_line(exc):
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
