"""The JAX backend: device and memory settings before JAX starts, jax.jit over the model's stateless call.

GPU memory: JAX normally takes 75% of the card when it starts; resclassify sets
XLA_PYTHON_CLIENT_PREALLOCATE=false (unless you set it) so it takes memory as needed, as
TensorFlow's memory growth does. XLA_PYTHON_CLIENT_MEM_FRACTION=.5 (with preallocation on)
or XLA_PYTHON_CLIENT_ALLOCATOR=platform are JAX's own knobs for sharing a card.
CPU threads: XLA's CPU runtime has no thread-count setting; --threads 1 runs it on one
thread (--xla_cpu_multi_thread_eigen=false), any other count leaves it all cores (bound the
process with taskset to use fewer).
"""

import os
import sys

import numpy as np

from ..config import DEVICE_CHOICES, check_choice
from ..errors import DeviceError
from . import native_stderr_silenced

NAME = "jax"
PREALLOCATE_VARIABLE = "XLA_PYTHON_CLIENT_PREALLOCATE"
ONE_THREAD_FLAG = "--xla_cpu_multi_thread_eigen=false"

_jax = None
_device = None  # the jax.Device networks run on, chosen by configure


def start(verbose=False):
    """Import JAX once, and Keras on it, quietly unless verbose."""
    global _jax
    if _jax is not None:
        return _jax
    # Take GPU memory as needed instead of 75% of the card at start (set by the user: theirs stands).
    os.environ.setdefault(PREALLOCATE_VARIABLE, "false")
    with native_stderr_silenced(not verbose):
        import jax

        import keras  # noqa: F401 (on JAX: KERAS_BACKEND was set before this import)
    _jax = jax
    return jax


def configure(device, threads=None, verbose=False):
    """Choose the device (and, for --threads 1, one CPU thread) before JAX creates its runtimes."""
    global _device
    check_choice("device", device, DEVICE_CHOICES)
    fresh = "jax" not in sys.modules
    if fresh and device == "cpu" and not os.environ.get("JAX_PLATFORMS"):
        # Never touch a GPU that was not asked for (no CUDA start-up, no memory taken).
        os.environ["JAX_PLATFORMS"] = "cpu"
    if fresh and threads == 1 and ONE_THREAD_FLAG not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {ONE_THREAD_FLAG}".strip()
    jax = start(verbose)
    with native_stderr_silenced(not verbose):
        gpus = _devices(jax, "gpu")
        if device == "gpu" and not gpus:
            raise DeviceError("--device gpu: JAX sees no GPU on this machine (its CPU build, or no CUDA device; "
                              "the README says how to install JAX for CUDA; or use --device cpu or auto)")
        _device = gpus[0] if gpus and device != "cpu" else _devices(jax, "cpu")[0]
        # New arrays (the network's weights among them) go to the chosen device.
        jax.config.update("jax_default_device", _device)
    return "cpu" if _device.platform == "cpu" else "gpu"


def applied_threads(threads, device):
    """The CPU threads --threads gives a network on the CPU: 1 where the one-thread flag is in force, else None
    (XLA's CPU runtime takes no other count: every core). On a GPU, threads as asked."""
    if device != "cpu":
        return threads
    if threads == 1 and ONE_THREAD_FLAG in os.environ.get("XLA_FLAGS", ""):
        return 1
    return None


def _devices(jax, platform):
    try:
        return jax.devices(platform)
    except RuntimeError:  # no such platform in this jaxlib, or it failed to start
        return []


def devices():
    """What JAX sees: ["cpu:0"], or ["gpu:0 (NVIDIA H200)", "cpu:0"] with its CUDA build."""
    os.environ.setdefault(PREALLOCATE_VARIABLE, "false")
    with native_stderr_silenced():
        import jax

        found = _devices(jax, "gpu") + _devices(jax, "cpu")
    return [f"{d.platform}:{d.id}" + (f" ({d.device_kind})" if d.platform != "cpu" else "") for d in found]


def compile_network(keras_model, body):
    """numpy (or staged) uint8 batch -> numpy float32 probabilities, through one jax.jit per batch shape.

    The weights are arguments of the compiled function, not constants baked into it (which
    would make compiling slow and the program as large as the weights), and stay on the device.
    """
    jax = start()
    trainable = [v.value for v in keras_model.trainable_variables]
    non_trainable = [v.value for v in keras_model.non_trainable_variables]

    def network(trainable_values, non_trainable_values, pixels):
        def call(inputs):
            outputs, _ = keras_model.stateless_call(trainable_values, non_trainable_values, inputs, training=False)
            return outputs

        return body(call, pixels)

    compiled = jax.jit(network)

    def run(batch):
        return np.asarray(compiled(trainable, non_trainable, stage(batch)))

    return run


def stage(batch):
    """Start copying a batch to the device and return at once (JAX copies asynchronously).

    Called for the next batch while the network still works on the current one, the copy
    overlaps the compute.
    """
    jax = start()
    return jax.device_put(batch, _device)


def is_out_of_memory(exc):
    """XLA's runtime error with a RESOURCE_EXHAUSTED status (jax.errors.JaxRuntimeError; XlaRuntimeError before it)."""
    runtime_error = any(cls.__name__ in ("JaxRuntimeError", "XlaRuntimeError") for cls in type(exc).__mro__)
    return runtime_error and "RESOURCE_EXHAUSTED" in str(exc)
