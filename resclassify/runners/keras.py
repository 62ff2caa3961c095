"""The Keras runner: one of Keras's ResNets or a user's own Keras model, on any Keras backend (through backends/).

uint8 batches in, probabilities out; the normalization runs inside the compiled network function.
"""

import contextlib
import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import backends
from ..archs import ARCHS, ARCH_CHOICES, MIN_INPUT_SIZE, arch_from_weights_names
from ..config import DEFAULT_CUSTOM_NORMALIZATION, DEFAULT_SIZE, NORMALIZE_MODES, PRECISION_CHOICES, check_choice
from ..errors import DeviceError, ModelError, PreprocessingError, WeightsError, first_line
from .base import RunnerBase, checked_model_file, classes_for, read_classes

_classifiers: dict = {}


@dataclass
class KerasRunner(RunnerBase):
    """A network loaded in Keras: uint8 batches in, class probabilities out.

    arch is one of archs.ARCH_CHOICES, or "custom" for a user's own model (then weights is
    the model file); normalization is what the network expects unless the user says otherwise.
    It runs inside the compiled network function, on the device: batches travel as uint8.
    """

    keras_model: object
    arch: str
    weights: str
    device: str
    input_size: int
    classes: object
    normalization: str = "caffe"
    precision: str = "float32"
    backend: str = "tensorflow"
    ends_in_probabilities: bool = False
    parameters: int = 0  # of the network as built, before batch norms are folded
    notice: object = field(default=None, repr=False)  # called with one-line messages (a smaller batch)
    _functions: dict = field(default_factory=dict, repr=False)
    _batch_limit: int | None = field(default=None, repr=False)  # set when the device ran out of memory

    def stage(self, batch, pad_to=None):
        """Pad a uint8 batch to pad_to rows and start copying it to the device; predict() takes the result.

        The pipeline stages the next batch while the network works on the current one, so the
        copy overlaps the compute (on JAX; TensorFlow copies inside the call).
        """
        rows = max(len(batch), pad_to or 0)
        return StagedBatch(_runtime(self.backend).stage(_padded(batch, rows)), len(batch))

    def predict(self, batch, pad_to=None, normalization=None):
        """Probabilities (float32, one row per image) for a uint8 batch of shape (n, size, size, 3).

        batch is a numpy array or what stage() returned. normalization (default: the network's
        own) is applied on the device. The batch is padded to pad_to rows so its shape, and so
        the compiled function, never changes. When the device runs out of memory, the batch is
        split in halves (down to one image) and the smaller size kept for later batches; notice
        is told.
        """
        mode = check_choice("normalization", normalization or self.normalization, NORMALIZE_MODES)
        staged = isinstance(batch, StagedBatch)
        count = batch.count if staged else len(batch)
        data = batch.data if staged else batch
        size = max(len(data), pad_to or 0)
        while True:
            limit = min(size, self._batch_limit or size)
            try:
                if limit == size:
                    return self._run(mode, data, size)[:count]
                on_host = np.asarray(data)[:count]
                return np.concatenate([self._run(mode, on_host[i:i + limit], limit)[:len(on_host[i:i + limit])]
                                       for i in range(0, count, limit)])
            except Exception as exc:
                if not _runtime(self.backend).is_out_of_memory(exc):
                    raise
                if limit == 1:
                    raise DeviceError(f"out of {self.device} memory even at batch size 1") from exc
                self._batch_limit = limit // 2
                if self.notice is not None:
                    self.notice(f"out of {self.device} memory at batch size {limit}; "
                                f"retrying at {self._batch_limit} (pass --batch-size {self._batch_limit})")

    def _run(self, mode, batch, rows):
        """All rows' probabilities, padding rows included, from the compiled function for this mode."""
        function = self._functions.get(mode)
        if function is None:
            function = self._functions[mode] = _runtime(self.backend).compile_network(
                self.keras_model, _network_body(mode, self.ends_in_probabilities))
        return np.asarray(function(_padded(batch, rows)), dtype=np.float32)


@dataclass(frozen=True)
class StagedBatch:
    """A batch on its way to the device (padded), and how many of its rows are images."""

    data: object
    count: int

    def __len__(self):
        return self.count


def _padded(batch, rows):
    if len(batch) >= rows:
        return batch
    batch = np.asarray(batch)
    return np.concatenate([batch, np.zeros((rows - len(batch),) + batch.shape[1:], dtype=batch.dtype)])


def _runtime(name):
    return backends.module(name)


def _network_body(mode, ends_in_probabilities):
    """What runs on the device for each batch: uint8 pixels -> normalized float32 -> network -> probabilities."""
    import keras

    def body(call, pixels):
        inputs = backends.normalize(keras.ops.cast(pixels, "float32"), mode)
        outputs = keras.ops.cast(call(inputs), "float32")
        # Softmax in float32 whatever the compute precision, so probabilities keep their digits.
        return outputs if ends_in_probabilities else keras.ops.softmax(outputs, axis=-1)

    return body


@contextlib.contextmanager
def _weights_not_drawn():
    """Build a network without drawing random initial weights: the loaded file replaces them all.

    On JAX each random initializer compiles a kernel per weight shape: 18 s of ResNet50's 20 s
    build on 2 cores, 2 s without. Zeros cost nothing on any backend. Keras's initializers call
    the backend's random module by attribute, so it is swapped there, for the build only.
    """
    import keras

    try:
        from keras.src.backend import random as backend_random
    except ImportError:  # another Keras layout: build as Keras does, only slower
        yield
        return
    names = [n for n in ("uniform", "normal", "truncated_normal") if hasattr(backend_random, n)]
    saved = {n: getattr(backend_random, n) for n in names}

    def zeros(shape, *args, dtype=None, **kwargs):
        return np.zeros(shape, dtype=keras.backend.standardize_dtype(dtype or keras.config.floatx()))

    for n in names:
        setattr(backend_random, n, zeros)
    try:
        yield
    finally:
        for n, function in saved.items():
            setattr(backend_random, n, function)


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

    with _weights_not_drawn():  # every weight is set below
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


def check_arch_size(size):
    """PreprocessingError unless size (None: the default) is an input size the built-in ResNets can be built for."""
    if size is None:
        return DEFAULT_SIZE
    if isinstance(size, bool) or not isinstance(size, int) or size < MIN_INPUT_SIZE:
        raise PreprocessingError(f"the built-in ResNets take inputs of at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} "
                                 f"pixels, not {size!r}", "--size")
    return size


def load_classifier(weights_path, arch="resnet50", device="auto", *, precision="float32", threads=None,
                    verbose=False, classes_path=None, backend=None, notice=None, size=None):
    """Build one of Keras's ResNets on a backend and load a weights file.

    Cached per (file, arch, device, precision, classes, backend, size). backend None means the one
    backends.resolve picks (KERAS_BACKEND, else TensorFlow). notice receives one-line messages
    worth showing while it runs (a batch halved after the device ran out of memory). size is the
    network's input (default 224): the ResNets are convolutional up to global pooling, so the
    same weights run at 256 or 288 as well.
    """
    check_choice("architecture", arch, ARCH_CHOICES)
    check_choice("precision", precision, PRECISION_CHOICES)
    size = check_arch_size(size)
    backend = backends.resolve(backend)
    key = (str(weights_path), arch, device, precision, str(classes_path), backend, size)
    if key in _classifiers:
        return _remember_notice(_classifiers[key], notice)
    classes = classes_for(read_classes(classes_path), classes_path, 1000)
    used_device = backends.activate(backend).configure(device, threads, verbose)
    with backends.native_stderr_silenced(not verbose):
        import keras

        build = getattr(keras.applications, ARCHS[arch].builder)
        previous_policy = keras.config.dtype_policy()
        if precision != "float32":
            # Weights stay float32; layers compute in the lower precision.
            keras.config.set_dtype_policy(f"mixed_{precision}")
        try:
            with _weights_not_drawn():
                model = build(weights=None, classifier_activation=None, input_shape=(size, size, 3))
        finally:
            keras.config.set_dtype_policy(previous_policy)
        try:
            model.load_weights(str(weights_path))
        except Exception as exc:  # Keras and h5py raise many kinds for a file that is not weights
            # The full cause stays chained: RESCLASSIFY_DEBUG=1 shows it.
            raise WeightsError(f"cannot load {arch} weights from {weights_path}: {first_line(exc)}"
                               f"{_other_arch_hint(weights_path, arch)}") from exc
        parameters = model.count_params()
        model = fold_batch_norms(model)
    classifier = KerasRunner(model, arch, str(weights_path), used_device, int(model.input_shape[1]), classes,
                             ARCHS[arch].normalization, precision, backend, parameters=parameters, notice=notice)
    _classifiers[key] = classifier
    return classifier


def _remember_notice(classifier, notice):
    if notice is not None:
        classifier.notice = notice
    return classifier


def _other_arch_hint(weights_path, arch):
    """ " (looks like resnet101 weights: pass --arch resnet101)" when the file's layer names say so."""
    guessed = arch_from_weights_names(_weights_file_names(weights_path))
    if guessed is None or guessed == arch:
        return ""
    return f" (looks like {guessed} weights: pass --arch {guessed})"


def _weights_file_names(path):
    """Every group and dataset name in an HDF5 weights file (Keras 2's layout or Keras 3's .weights.h5)."""
    try:
        import h5py

        names = []
        with h5py.File(path, "r") as f:
            names.extend(str(n) for n in _decoded(f.attrs.get("layer_names", ())))
            f.visit(names.append)
        return names
    except Exception:  # not HDF5 at all: no hint to give
        return []


def _decoded(values):
    return [v.decode("utf8") if isinstance(v, bytes) else v for v in values]


def load_custom_classifier(model_path, device="auto", *, precision="float32", threads=None, verbose=False,
                           classes_path=None, backend=None, notice=None, size=None):
    """A user's own Keras model (.keras, or a full-model .h5) with its class names; cached like the others.

    The input size is read from the model. Its normalization is "none" when the model starts
    with its own Rescaling or Normalization layer, else caffe (a fine-tuned keras.applications
    ResNet50 expects what ResNet50 does). Logits are turned into probabilities with a softmax.
    size, if given, must be the model's own input size, unless the model takes any size.
    """
    check_choice("precision", precision, PRECISION_CHOICES)
    path = Path(model_path).expanduser()
    if precision != "float32":
        raise ModelError(f"--precision {precision} is for the built-in ResNets; a model file runs in the "
                         "precision it was saved with")
    backend = backends.resolve(backend)
    key = (str(path), "custom", device, str(classes_path), backend, size)
    if key in _classifiers:
        return _remember_notice(_classifiers[key], notice)
    checked_model_file(model_path)
    named = read_classes(classes_path)  # before the backend starts: a wrong path should fail fast
    used_device = backends.activate(backend).configure(device, threads, verbose)
    with backends.native_stderr_silenced(not verbose):
        import keras

        try:
            with _weights_not_drawn():  # the file's weights replace them
                model = keras.models.load_model(str(path), compile=False)
        except Exception as exc:  # a damaged zip, an unknown custom layer, a weights-only .h5, ...
            hint = " (a weights-only .h5 goes with --weights and --arch)" if path.suffix.lower() != ".keras" else ""
            raise ModelError(f"cannot load the model {model_path}: {first_line(exc)}{hint}") from exc
    input_size, outputs = _model_shape(model, model_path, size)
    classes = classes_for(named, classes_path, outputs, source=path.name)
    normalization = "none" if _starts_by_scaling(model) else DEFAULT_CUSTOM_NORMALIZATION
    classifier = KerasRunner(model, "custom", str(path), used_device, input_size, classes, normalization,
                             backend=backend, ends_in_probabilities=_ends_in_probabilities(model),
                             parameters=model.count_params(), notice=notice)
    _classifiers[key] = classifier
    return classifier


def _model_shape(model, model_path, size=None):
    """(square input size, number of outputs) of a one-image-in, one-vector-out model, or ModelError.

    size asks for an input size: a model that takes any size runs at it; one with a fixed size
    refuses any other (PreprocessingError).
    """
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(f"model {model_path} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                         "resclassify needs one image input and one class output")
    in_shape, out_shape = tuple(model.inputs[0].shape), tuple(model.outputs[0].shape)
    if len(in_shape) != 4 or in_shape[3] != 3:
        raise ModelError(f"model {model_path} takes inputs of shape {in_shape}; resclassify feeds "
                         "(batch, height, width, 3) RGB images")
    height, width = in_shape[1], in_shape[2]
    if height is None and width is None:
        size = DEFAULT_SIZE if size is None else size  # any size goes (global pooling): the standard one unless asked
    elif height != width:
        raise ModelError(f"model {model_path} takes {height}x{width} inputs; resclassify feeds square ones")
    elif size is not None and size != height:
        raise PreprocessingError(f"model {model_path} takes {height}x{width} inputs only; it cannot run at "
                                 f"{size}x{size} (leave --size out to use its own)", "--size")
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
