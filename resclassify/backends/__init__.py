"""Which Keras backend runs the network, and the small interface each backend module provides.

Keras picks its backend once, when `keras` is first imported (from KERAS_BACKEND), so the
choice is made here before anything imports Keras, and a process runs one backend: asking for
a second one is a BackendError (run another process). Choice: the --backend flag, else the
KERAS_BACKEND variable, else TensorFlow when it is installed, else the backend that is.

A backend module (tensorflow.py, jax.py) is a module with:

    NAME                        "tensorflow", "jax"
    start(verbose)              import the framework, and Keras on it, without start-up noise
    configure(device, threads, verbose)
                                choose the device ("auto", "cpu", "gpu") and CPU threads, then
                                start; returns "cpu" or "gpu"; DeviceError if asked for a GPU it
                                cannot see
    devices()                   the devices it sees, as short strings (imports the framework)
    compile_network(keras_model, body)
                                a function of a numpy uint8 batch (n, S, S, 3) returning numpy
                                float32 probabilities: body(call, x) in keras.ops, where
                                call(inputs) runs the network, compiled once per batch shape
                                (tf.function; jax.jit over the model's stateless_call)
    stage(batch)                start moving a numpy batch to the device (returns what the
                                compiled function takes; numpy itself where that gains nothing)
    is_out_of_memory(exc)       whether exc is the framework's device out-of-memory error

Nothing outside this package imports a backend. The Keras runner (runners/keras.py) runs its
network through these; ONNX Runtime is a runner of its own (runners/onnx.py), not a backend.
"""

import contextlib
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import warnings

from .. import machine
from ..config import BACKEND_CHOICES, CAFFE_MEAN_BGR, TORCH_MEAN_RGB, TORCH_STD_RGB, check_choice
from ..errors import BackendError

BACKEND_VARIABLE = "KERAS_BACKEND"
DEFAULT_BACKEND = "tensorflow"
# The module each backend needs to run, as importlib finds it without importing it.
_FRAMEWORK = {"tensorflow": "tensorflow", "jax": "jax"}
_INSTALL = {"tensorflow": "pip install tensorflow",
            "jax": "pip install 'resclassify[jax]' (see the README for JAX's CUDA build)"}
_LABEL = {"tensorflow": "TensorFlow", "jax": "JAX"}
# The distributions that may carry each framework, and its companions whose versions matter.
_DISTRIBUTIONS = {"tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-macos", "tf-nightly"),
                  "jax": ("jax",)}
_COMPANIONS = {"jax": ("jaxlib",)}
DEVICES_TIMEOUT_S = 120


def installed(name):
    """Whether a backend's framework is installed (found without importing it)."""
    try:
        return importlib.util.find_spec(_FRAMEWORK[name]) is not None
    except (ImportError, ValueError):
        return False


def describe(devices=False):
    """For `resclassify info`: each backend, whether it is installed, its versions, and (if asked) its devices.

    Devices are listed by a child process per backend: that imports the framework, which a
    process that only describes should not, and it sees the machine as a fresh run does.
    """
    rows = {}
    for name in BACKEND_CHOICES:
        row = {"installed": installed(name),
               "version": machine.version(*_DISTRIBUTIONS[name])}
        for companion in _COMPANIONS.get(name, ()):
            row[companion] = machine.version(companion)
        if not row["installed"]:
            row["install"] = _INSTALL[name]
        elif devices:
            row["devices"] = list_devices(name)
        rows[name] = row
    return rows


_LIST_DEVICES = "import json, sys; from resclassify.backends import module; print(json.dumps(module(sys.argv[1]).devices()))"


def list_devices(name):
    """The devices a backend sees, from a child process: a list of strings, or {"error": reason}."""
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL") or "3",
           "PYTHONPATH": os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))}
    try:
        child = subprocess.run([sys.executable, "-c", _LIST_DEVICES, name], capture_output=True, text=True,
                               env=env, timeout=DEVICES_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"no answer within {DEVICES_TIMEOUT_S} s"}
    lines = child.stdout.strip().splitlines()
    if child.returncode != 0 or not lines:
        last = (child.stderr.strip().splitlines() or [f"exit status {child.returncode}"])[-1]
        return {"error": last}
    return json.loads(lines[-1])


def resolve(requested=None):
    """The backend to run: the flag, else KERAS_BACKEND, else TensorFlow if installed, else what is.

    Raises BackendError for a backend resclassify does not run on or one that is not installed,
    naming what to install.
    """
    if requested is not None:
        source = f"--backend {requested}"
        name = requested
    elif os.environ.get(BACKEND_VARIABLE, "").strip():
        name = os.environ[BACKEND_VARIABLE].strip().lower()
        source = f"{BACKEND_VARIABLE}={name}"
    else:
        for name in (DEFAULT_BACKEND,) + BACKEND_CHOICES:
            if installed(name):
                return name
        raise BackendError("no Keras backend is installed: pip install tensorflow, or pip install "
                           "'resclassify[jax]'")
    if name not in BACKEND_CHOICES:
        if requested is not None:
            check_choice("backend", requested, BACKEND_CHOICES)
        raise BackendError(f"{source}: resclassify runs on {' or '.join(BACKEND_CHOICES)}")
    if not installed(name):
        raise BackendError(f"{source}: {_LABEL[name]} is not installed; {_INSTALL[name]}")
    return name


def applied_threads(name, device, threads):
    """The CPU threads a network on backend name and device really gets for --threads (None: the runtime's
    default, every core). TensorFlow and ONNX Runtime take any count; JAX's CPU runtime only one thread."""
    if not threads:
        return None
    if name == "jax":
        return module("jax").applied_threads(threads, device)
    return threads


def running():
    """The backend Keras was imported with in this process, or None if Keras is not imported yet."""
    keras = sys.modules.get("keras")
    if keras is None:
        return None
    try:
        return keras.config.backend()
    except AttributeError:  # imported halfway (an import error): treat as not running
        return None


def activate(name):
    """The backend module for name, with Keras set to import on it; its configure() starts it.

    One backend per process: BackendError if Keras already runs on another.
    """
    current = running()
    if current is not None and current != name:
        raise BackendError(f"Keras already runs on {current} in this process and cannot switch to {name}; "
                           f"use another process (resclassify --backend {name} ...)")
    if current is None:
        # Keras reads this once, at import; the flag has already won over the variable.
        os.environ[BACKEND_VARIABLE] = name
    return importlib.import_module(f"{__name__}.{name}")


def module(name):
    """A backend module without starting it (for its error types and settings)."""
    return importlib.import_module(f"{__name__}.{name}")


def normalize(pixels, mode):
    """The input a network was trained on, from float32 RGB pixels in 0..255 (Keras's preprocess_input).

    Plain arithmetic and a reversed last axis, so the same code runs on numpy arrays and on any
    backend's tensors inside a compiled function: on the device, after the uint8 batch arrived.
    """
    if mode == "caffe":
        return pixels[..., ::-1] - _constant(CAFFE_MEAN_BGR)
    if mode == "tf":
        return pixels / 127.5 - 1.0
    if mode == "torch":
        return (pixels / 255.0 - _constant(TORCH_MEAN_RGB)) / _constant(TORCH_STD_RGB)
    return pixels


def _constant(values):
    import numpy as np

    return np.asarray(values, dtype=np.float32)


@contextlib.contextmanager
def native_stderr_silenced(enabled=True):
    """Send file descriptor 2 to /dev/null: frameworks' C++ start-up logging ignores Python."""
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
