"""resclassify: label images and measure top-1/top-5 error with Keras's ImageNet ResNet50."""

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ._version import __version__
from .config import Preprocessing, resolve_preprocessing
from .errors import (BackendError, ChoiceError, DatasetError, DecodingError, DeviceError, ExportError, ImageError,
                     InputError, ModelError, PreprocessingError, RecordFileError, ResclassifyError, WeightsError)
from .sources.inputs import find_ground_truth
from .images import DEFAULT_MAX_PIXELS
from .runners import Runner, load

__all__ = [
    "about", "classify", "evaluate", "report_from_prediction_files", "find_ground_truth", "load_model",
    "Preprocessing", "resolve_preprocessing", "ResclassifyError", "InputError", "ImageError", "DatasetError",
    "WeightsError", "ModelError", "DeviceError", "BackendError", "ChoiceError", "ExportError", "RecordFileError",
    "DecodingError", "PreprocessingError",
    "__version__",
]


def load_model(weights: str = "imagenet", *, arch: str = "resnet50", model: str | os.PathLike | None = None,
               classes: str | os.PathLike | None = None, device: str = "auto", precision: str = "float32",
               threads: int | None = None, backend: str | None = None, normalization: str | None = None,
               offline: bool = False, verbose: bool = False,
               progress: Callable[[str, int, int | None], None] | None = None,
               notice: Callable[[str], None] | None = None, size: int | None = None) -> Runner:
    """The network, ready to classify.

    Either one of Keras's ImageNet ResNets (arch) with its weights: "imagenet" (Keras's cache,
    downloaded once), a URL (optionally #sha256=... or #md5=...), or a file; or, with model, a
    user's own Keras model file (.keras or full-model .h5). classes is a classes file naming
    the outputs (one label per line, or a TSV/CSV with a label column); without it, 1000
    outputs are ImageNet's classes and other counts are named by index. precision float32,
    bfloat16 or float16 (the built-in ResNets). backend "onnxruntime", "tensorflow" or "jax"
    (default: Keras on the KERAS_BACKEND variable if set, else ONNX Runtime on a CPU when it is
    installed, else TensorFlow); one process runs one Keras backend. ONNX Runtime runs the
    network exported from Keras once and cached; normalization (default: the network's own) is
    the one built into that export first, the one --preprocess-mode asks for. progress, if
    given, is called as progress(file_name, bytes_done, bytes_total) while weights download
    (resclassify itself draws nothing). notice, if given, receives one-line messages worth
    showing (a damaged cached file being fetched again, an ONNX export being made, a batch
    halved when the device runs out of memory). An unknown arch, precision, device or backend
    raises ChoiceError. size is the network's input size: the built-in ResNets are built for it
    (default 224) with the same weights; a model file keeps its own, and refuses another unless
    it takes any size (PreprocessingError).

    The network keeps these arguments as .recipe, so that another process (a Ray actor) can
    load the same one. Its backend is the one asked for: None lets that process choose for its
    own device (ONNX Runtime on a CPU, a Keras backend on a GPU), as this one did for its own.
    """
    return load(weights, arch=arch, model=model, classes=classes, device=device, precision=precision, threads=threads,
                backend=backend, normalization=normalization, offline=offline, verbose=verbose, progress=progress,
                notice=notice, size=size)


def about(devices=False):
    """What `resclassify info` shows, as a dict: versions of resclassify, Python, Keras, each backend
    and ONNX Runtime, the backend a run gets by default, the weights cache and the files in it
    (weights, and the ONNX files made from them);
    with devices=True, the devices each installed backend sees (each listed by a child process,
    so this process never imports a backend).
    """
    import platform

    from . import backends, machine
    from .runners import default_choice, onnx, onnx_cache
    from .weights import cache_dir, cached_files

    default, why = default_choice()
    info = {
        "resclassify": __version__,
        "python": platform.python_version(),
        "keras": machine.version("keras"),
        "backends": backends.describe(devices),
        "default_backend": {"name": default, "why": why},
        "onnxruntime": machine.version(*onnx.DISTRIBUTIONS),
    }
    # The command people run to find what is wrong: a cache it cannot read is named, not fatal.
    try:
        info["cache_folder"] = str(cache_dir())
        info["cached_weights"] = cached_files()
        info["cached_onnx"] = onnx_cache.cached_files()
        info["cache_problem"] = None
    except ResclassifyError as exc:
        home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
        info.setdefault("cache_folder", os.path.join(home, "models"))
        info.setdefault("cached_weights", [])
        info.setdefault("cached_onnx", [])
        info["cache_problem"] = str(exc)
    return info


def classify(paths: Iterable[Any], model: Runner, *, top_k: int = 5, batch_size: int = 32,
             preprocessing: Preprocessing | None = None, workers: int | None = None, decoding: Any = "auto",
             max_pixels: int | None = DEFAULT_MAX_PIXELS, engine: Any = None,
             on_probabilities: Callable[[str, Any], None] | None = None,
             resume: Any = None) -> Iterator[dict]:
    """Yield one record per input, in order: {"path", "model", "predictions": [...], "run": {...}} or {"path", "error"}.

    preprocessing defaults to the model's own (its input size and normalization). run says what
    produced the record beside the model (backend, precision, weights, preprocessing, top_k).
    The preprocessing's tta ("flip", "ten-crop") averages the probabilities of several views of
    each image. on_probabilities(path, probabilities), if given, sees each input's full
    probability vector (float32, one per class; None for an input that failed) just before its
    record.

    paths may hold image files, RemoteImages and InputError objects (see sources.inputs.expand_inputs). engine runs
    the network: this machine by default, or resclassify.engines.ray.RayEngine for a Ray cluster.

    decoding: "auto", "threads" or "processes", with `workers` decoding at once (default: the
    cores); or a decoder from resclassify.decoding.open_decoder, kept open across calls. Worker
    processes import the calling script again (Python's spawn rule): keep its main code under
    `if __name__ == "__main__":`.

    resume continues the record file of an earlier, interrupted run over the same paths (predict
    --output --resume): its path, or the records.Resumption that records.resume_records made of
    it. Its records are checked to be for these paths and from this model and run (else
    RecordFileError), a half-written last record is cut off the file, and only the inputs it
    holds no record of are classified: the records yielded are the ones to append to it.
    """
    from .pipeline import prediction_record
    from .records import identity_of_run, resumption_for, run_identity

    if engine is None:
        from .engines import local_engine

        engine = local_engine()
    if preprocessing is None:
        preprocessing = model.preprocessing()
    run = run_identity(model, preprocessing, top_k)
    paths = list(paths)
    if resume is not None:
        from .sources.inputs import input_path

        resumption = resumption_for(resume, [input_path(item) for item in paths],
                                    identity_of_run(model, preprocessing, top_k))
        paths = resumption.remaining(paths, key=input_path)
    scored_images = engine.score(paths, model, preprocessing, batch_size=batch_size, workers=workers,
                                 decoding=decoding, max_pixels=max_pixels)
    # closing: a consumer that stops early (or a Ctrl-C) stops the decode workers at once.
    with contextlib.closing(scored_images):
        for scored in scored_images:
            if on_probabilities is not None:
                on_probabilities(scored.path, scored.probabilities if scored.error is None else None)
            yield prediction_record(scored, model.classes, top_k, model_name=model.name, backend=model.backend,
                                    run=run)


def evaluate(folder, model, *, labels=None, real_labels=None, top_k=5, limit=None, shard=None, batch_size=32,
             preprocessing=None, workers=None, decoding="auto", max_pixels=DEFAULT_MAX_PIXELS, on_record=None,
             engine=None, on_probabilities=None, on_confusion_matrix=None, resume=None):
    """Top-1/top-5 (and top-k) accuracy of model over a folder of labelled images, as a dict.

    The ground truth is class folders under folder, or the labels file `labels` (CSV/TSV,
    Kaggle's LOC_val_solution.csv or the ILSVRC2012 devkit's ground truth); `real_labels` is a
    ReaL real.json. shard ("K/N" or sources.shards.Shard) evaluates that part of the sorted images.
    on_record(record) sees each image's result as it is scored, on_probabilities(path,
    probabilities) its full probability vector, and on_confusion_matrix(rows) the top-1
    confusion matrix at the end ((true, predicted, images) rows). workers and decoding are
    classify's. Raises DatasetError when the ground truth cannot be worked out. preprocessing
    defaults to the model's own (its input size and normalization), as in classify.

    resume continues the --predictions-out file of an earlier, interrupted run of this
    evaluation (eval --resume): its path, or a records.Resumption of it. Its records are checked
    to come from this model and run and to be among these images with the same true class (else
    RecordFileError), counted in the report and not run again; a half-written last record is cut
    off the file, and on_record sees only the new records, the ones to append to it.
    """
    from .sources.shards import parse_shard
    from .evaluation import run_evaluation

    if isinstance(shard, str):
        shard = parse_shard(shard)
    ground_truth = find_ground_truth(folder, labels, real_labels, classes=model.classes)
    return run_evaluation(ground_truth, model, top_k=top_k, limit=limit, shard=shard, batch_size=batch_size,
                          preprocessing=preprocessing, workers=workers, decoding=decoding,
                          max_pixels=max_pixels, on_record=on_record, engine=engine,
                          on_probabilities=on_probabilities, on_confusion_matrix=on_confusion_matrix,
                          resume=resume)


def report_from_prediction_files(paths):
    """The evaluation report rebuilt from eval --predictions-out files (e.g. an array job's shards), and
    their records, as (report, records); no model, no network. See evaluation.report_from_prediction_files."""
    from .evaluation import report_from_prediction_files as from_files

    return from_files(paths)
