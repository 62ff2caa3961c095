"""What runs the network: the runner interface, and the one place that chooses and loads a runner.

Two runners: runners.keras (Keras on any of its backends, through backends/) and runners.onnx
(ONNX Runtime on the network Keras exported once). Both take uint8 batches and give float32
probabilities; what they share is in runners.base. They are imported only when a run loads one,
so that `--help` and errors found before the network never wait for them.
"""

import os
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from ..config import ALL_BACKEND_CHOICES, DEVICE_CHOICES, ONNXRUNTIME, PRECISION_CHOICES, Preprocessing, check_choice
from ..errors import BackendError, DeviceError
from ..labels import ClassIndex


@runtime_checkable
class Runner(Protocol):
    """A loaded network, whatever runs it: uint8 batches in, class probabilities out.

    The pipeline calls predict() (and stage(), where a runner has it, to start a batch's copy to
    the device while the previous batch computes); the records name the run by the attributes.
    """

    name: str  # what ran, in a word: the architecture, or a user's model file name
    arch: str  # one of archs.ARCH_CHOICES, or "custom"
    backend: str  # "onnxruntime", or the Keras backend ("tensorflow", "jax")
    device: str  # "cpu" or "gpu"
    precision: str  # "float32", "bfloat16", "float16"
    weights: str
    classes: ClassIndex
    input_size: int
    normalization: str  # what the network expects unless a preprocessing says otherwise
    parameters: int
    recipe: dict | None  # load()'s arguments, for another process (a Ray actor) to load the same network

    def preprocessing(self, name: str = "center-crop", *, crop_fraction: float | None = None,
                      interpolation: str | None = None, tta: str | None = None, mode: str | None = None,
                      exact_decode: bool = False) -> Preprocessing:
        """The preprocessing this network was trained with, unless the arguments say otherwise."""

    def predict(self, batch: Any, pad_to: int | None = None, normalization: str | None = None) -> np.ndarray:
        """float32 probabilities, one row per image, for a uint8 batch (n, size, size, 3)."""

    def close(self) -> None:
        """Release what the runner holds."""


def choose(requested: str | None = None, *, device: str = "auto", precision: str = "float32") -> str:
    """What runs the network: "onnxruntime", or the Keras backend backends.resolve() picks.

    The flag wins; else KERAS_BACKEND, when set, means Keras on that backend; else ONNX Runtime
    when it is installed and the run is on the CPU in float32 (it starts ten times sooner and is
    at least as fast there); else resolve()'s choice. "On the CPU" is --device cpu, or auto on a
    machine without an NVIDIA GPU, found without importing a framework.
    """
    from .. import backends, machine
    from . import onnx

    check_choice("precision", precision, PRECISION_CHOICES)
    check_choice("device", device, DEVICE_CHOICES)
    if requested is not None:
        check_choice("backend", requested, ALL_BACKEND_CHOICES)
    if requested == ONNXRUNTIME:
        if not onnx.installed():
            raise BackendError("--backend onnxruntime: ONNX Runtime is not installed; pip install 'resclassify[onnx]'")
        if device == "gpu":
            raise DeviceError("--backend onnxruntime runs on the CPU; --device gpu runs on --backend tensorflow or jax")
        if precision not in onnx.PRECISIONS:
            raise BackendError(f"--backend onnxruntime computes in float32; --precision {precision} runs on "
                               "--backend tensorflow or jax")
        return ONNXRUNTIME
    if (requested is None and not os.environ.get(backends.BACKEND_VARIABLE, "").strip() and onnx.installed()
            and precision in onnx.PRECISIONS
            and (device == "cpu" or (device == "auto" and not machine.nvidia_gpu_present()))):
        return ONNXRUNTIME
    return backends.resolve(requested)


def default_choice() -> tuple[str | None, str]:
    """(runtime, why) for a run without --backend (--device auto, float32), or (None, the reason there is none)."""
    from ..backends import BACKEND_VARIABLE, DEFAULT_BACKEND
    from . import onnx

    variable = os.environ.get(BACKEND_VARIABLE, "").strip()
    try:
        name = choose()
    except BackendError as exc:
        return None, str(exc)
    if variable:
        return name, f"{BACKEND_VARIABLE}={variable}"
    if name == ONNXRUNTIME:
        return name, f"{BACKEND_VARIABLE} is not set; ONNX Runtime is installed and there is no NVIDIA GPU"
    why = f"{BACKEND_VARIABLE} is not set"
    if onnx.installed():
        why += "; an NVIDIA GPU is present (ONNX Runtime runs on the CPU)"
    return name, why + ("" if name == DEFAULT_BACKEND else f"; {DEFAULT_BACKEND} is not installed")


def load(weights: str = "imagenet", *, arch: str = "resnet50", model: str | os.PathLike | None = None,
         classes: str | os.PathLike | None = None, device: str = "auto", precision: str = "float32",
         threads: int | None = None, backend: str | None = None, normalization: str | None = None,
         offline: bool = False, verbose: bool = False,
         progress: Callable[[str, int, int | None], None] | None = None,
         notice: Callable[[str], None] | None = None, size: int | None = None) -> Runner:
    """The runner for these arguments, loaded: resclassify.load_model's work (its docstring says what each means).

    ONNX Runtime as the default (no backend asked for) gives way to Keras when the export fails
    or its cache cannot be written; asked for, those errors are raised.
    """
    recipe = _recipe(locals())
    from .. import backends
    from ..archs import ARCH_CHOICES
    from ..errors import ExportError
    from ..weights import resolve_weights
    from . import keras as keras_runner
    from .onnx_cache import OnnxCacheNotWritable

    check_choice("precision", precision, PRECISION_CHOICES)
    if model is None:
        check_choice("architecture", arch, ARCH_CHOICES)
        keras_runner.check_arch_size(size)  # before any download
    # Before any download: a backend that is not installed is the first thing to say.
    chosen = choose(backend, device=device, precision=precision)
    if chosen == ONNXRUNTIME:
        from . import onnx

        try:
            runner = onnx.load_classifier(weights, arch, model_path=model, classes_path=classes, threads=threads,
                                          precision=precision, normalization=normalization, input_size=size,
                                          offline=offline, progress=progress, notice=notice, verbose=verbose,
                                          retry_failed_export=backend is not None)
            runner.recipe = recipe
            return runner
        except (ExportError, OnnxCacheNotWritable) as exc:
            if backend is not None:
                raise
            # ONNX Runtime was only the default: the network still runs, on Keras (an export that
            # failed, or an ONNX cache that cannot be written).
            chosen = backends.resolve(None)
            if notice is not None:
                notice(f"{exc}; running it on {chosen} instead")
    if model is not None:
        runner = keras_runner.load_custom_classifier(model, device, precision=precision, threads=threads,
                                                     verbose=verbose, classes_path=classes, backend=chosen,
                                                     notice=notice, size=size)
    else:
        path = resolve_weights(weights, arch, offline=offline, progress=progress, notice=notice)
        runner = keras_runner.load_classifier(path, arch, device, precision=precision, threads=threads,
                                              verbose=verbose, classes_path=classes, backend=chosen, notice=notice,
                                              size=size)
    runner.recipe = recipe
    return runner


def _recipe(arguments):
    """load()'s arguments as another process on another machine needs them: paths absolute, no callbacks."""
    recipe = {name: value for name, value in arguments.items() if name not in ("progress", "notice", "verbose")}
    for name in ("model", "classes"):
        if recipe.get(name) is not None:
            recipe[name] = os.path.abspath(os.path.expanduser(str(recipe[name])))
    weights = str(recipe.get("weights"))
    if weights != "imagenet" and not weights.startswith(("http://", "https://")):
        recipe["weights"] = os.path.abspath(os.path.expanduser(weights))
    return recipe
