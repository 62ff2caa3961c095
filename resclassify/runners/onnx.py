"""The ONNX Runtime runner: the Keras network exported to ONNX once, cached, and run without Keras.

The export is onnx_export.py (in a child process), its cache onnx_cache.py. The exported graph
takes uint8 images (n, size, size, 3) and gives float32 probabilities: the normalization and the
softmax are inside it. A run with the file cached imports ONNX Runtime, NumPy and Pillow only.
"""

import contextlib
import dataclasses
import importlib.util
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..archs import ARCH_CHOICES, ARCHS
from ..config import DEFAULT_SIZE, NORMALIZE_MODES, check_choice
from ..errors import BackendError, ExportError, ModelError, first_line
from .base import RunnerBase, checked_model_file, classes_for, read_classes
from .onnx_cache import (ExportKey, OnnxCacheNotWritable, cache_folder, cached_export, cannot_write,
                         check_not_failed_before, export_to_cache, file_sha256, forget_failure, official_key,
                         remember_failure, remove_dead_temporaries, safe_label, tell)
from . import onnx_export
from .onnx_export import INPUT_NAME

NAME = "onnxruntime"
PRECISIONS = ("float32",)
# The distributions that carry ONNX Runtime: whichever is installed says its version.
DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino")
# (ExportKey, threads) -> (InferenceSession, about-record): each export is loaded once per process.
# Only sessions are shared; every load_classifier call gets its own network object, so a later
# caller's notice, offline and exporter settings are its own.
_classifiers: dict = {}


def installed():
    """Whether ONNX Runtime can be imported, without importing it."""
    return importlib.util.find_spec("onnxruntime") is not None


@dataclass
class OnnxRunner(RunnerBase):
    """An exported network in an ONNX Runtime session: uint8 batches in, probabilities out.

    The normalization is inside the graph: a batch to normalize another way (predict's
    normalization, as --preprocess-mode asks) runs on the export made for that mode, which is
    loaded, or exported, the first time it is asked for.
    """

    arch: str
    weights: str
    input_size: int
    classes: object = field(repr=False)
    normalization: str
    onnx_path: str
    precision: str = "float32"
    device: str = "cpu"
    backend: str = NAME
    parameters: int = 0
    sessions: dict = field(default_factory=dict, repr=False)  # normalization -> InferenceSession
    open_mode: object = field(default=None, repr=False)  # normalization -> (session, path) for another mode
    _lock: object = field(default_factory=threading.Lock, repr=False)

    def predict(self, batch, pad_to=None, normalization=None):
        """Probabilities (float32) for a uint8 batch (n, size, size, 3); any n runs as it is, so nothing is padded."""
        batch = np.asarray(batch)
        if batch.dtype != np.uint8:
            raise TypeError(f"the ONNX network takes uint8 images, not {batch.dtype}")
        session = self.session(check_choice("normalization", normalization or self.normalization, NORMALIZE_MODES))
        return session.run(None, {INPUT_NAME: np.ascontiguousarray(batch)})[0]

    def session(self, mode):
        with self._lock:
            if mode not in self.sessions:
                if self.open_mode is None:
                    raise ModelError(f"this ONNX network normalizes its input as {self.normalization}, not {mode}")
                self.sessions[mode], _ = self.open_mode(mode)
            return self.sessions[mode]


def open_session(path, threads=None):
    """An ONNX Runtime session on the CPU, its threads bounded by threads (default: ONNX Runtime's own)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings are for developers
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    # Idle intra-op threads sleep rather than spin: in a run, decode threads share the cores
    # with the network, and a spinning thread (one waiting at a barrier for a sibling that a
    # decoder displaced, or between batches) burns the core a decoder needs, which makes
    # decoding cost about twice its core time. The network alone loses nothing measurable.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _open_cached(key, threads, notice):
    """(session, about) for key's cached file if it is whole and loads, else None."""
    about = cached_export(key, notice)
    if about is None:
        return None
    try:
        return open_session(key.path, threads), about
    except Exception as exc:  # ONNX Runtime raises its own kinds for a file it cannot parse
        tell(notice, f"{key.path} cannot be loaded ({first_line(exc)}); exporting again")
        return None


def _open_or_export(key, resolve, *, threads, notice, verbose, exporter, retry_failed):
    """(session, about) for key: from the cache, else exported by this process or by another one it waited for.

    One process exports a key at a time: it holds the key's lock file, the others wait for it
    (saying so once) and then load its file. retry_failed=False (a default run) raises
    ExportFailedBefore when an earlier export of key failed with these versions, without trying
    again; a failure is remembered, and a success forgets it.
    """
    from ..files import held_lock

    opened = _open_cached(key, threads, notice)
    if opened is not None:
        return opened
    if not retry_failed:
        check_not_failed_before(key)
    folder = cache_folder()
    with contextlib.ExitStack() as stack:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            stack.enter_context(held_lock(key.lock_path, on_wait=lambda: tell(
                notice, f"another process is exporting {key.label} to ONNX ({key.path}); waiting for it")))
        except OSError as exc:
            raise OnnxCacheNotWritable(cannot_write(folder, exc)) from None
        # Another process may have made it (or failed to) while this one waited.
        opened = _open_cached(key, threads, None)
        if opened is not None:
            return opened
        if not retry_failed:
            check_not_failed_before(key)
        weights_path = resolve()
        try:
            about = export_to_cache(key, weights_path, notice=notice, verbose=verbose, threads=threads,
                                    exporter=exporter or onnx_export.run_export_process)
        except ExportError as exc:
            remember_failure(key, exc)
            raise
        forget_failure(key)
        return open_session(key.path, threads), about


def load_classifier(weights="imagenet", arch="resnet50", *, model_path=None, classes_path=None, threads=None,
                    precision="float32", input_size=None, normalization=None, offline=False, progress=None,
                    notice=None, verbose=False, exporter=None, retry_failed_export=True):
    """The network as an ONNX Runtime session, exported from Keras first if it is not cached yet.

    weights is "imagenet" (Keras's official file for arch, downloaded if need be), a URL or a
    file; or model_path is a user's own Keras model. normalization (default: the network's own)
    is the one built into the graph first. exporter is for tests (see onnx_cache.export_to_cache).
    retry_failed_export=False (ONNX Runtime as the default rather than asked for) raises
    ExportFailedBefore at once for an export that failed before with these versions.
    """
    from ..weights import KNOWN_WEIGHTS, resolve_weights

    if precision not in PRECISIONS:
        raise ModelError(f"--backend onnxruntime computes in float32 only; use --backend tensorflow for {precision}")
    if normalization is not None:
        check_choice("normalization", normalization, NORMALIZE_MODES)
    named = read_classes(classes_path)  # fail fast, before anything
    source = None
    if model_path is not None:
        path = checked_model_file(model_path)
        source = path.name
        base = ExportKey(f"custom-{safe_label(path.stem)}", "custom", f"sha256:{file_sha256(path)}", input_size,
                         None, precision)
        weights_path = path

        def resolve():
            return path
    else:
        check_choice("architecture", arch, ARCH_CHOICES)
        size = input_size or DEFAULT_SIZE
        if weights == "imagenet":
            # Keras's official file is known by its md5: a cached export of it needs no look at the
            # weights file at all (not even the md5 check of 100 MB), so it also works offline.
            base = official_key(arch, size, precision)
            weights_path = KNOWN_WEIGHTS[arch].cache_path

            def resolve():
                return resolve_weights(weights, arch, offline=offline, progress=progress, notice=notice)
        else:
            weights_path = resolve_weights(weights, arch, offline=offline, progress=progress, notice=notice)
            base = ExportKey(arch, arch, f"sha256:{file_sha256(weights_path)}", size, None, precision)

            def resolve():
                return weights_path
        normalization = normalization or ARCHS[arch].normalization
    remove_dead_temporaries()

    def open_mode(mode):
        """(session, about) for the export of this network with mode normalization (None: the model's own).

        This call's own settings (notice, offline, exporter) apply, even where another caller's
        session for the same file is reused.
        """
        key = dataclasses.replace(base, normalization=mode)
        if (key, threads) not in _classifiers:
            _classifiers[(key, threads)] = _open_or_export(key, resolve, threads=threads, notice=notice,
                                                           verbose=verbose, exporter=exporter,
                                                           retry_failed=retry_failed_export)
        return _classifiers[(key, threads)]

    session, about = open_mode(normalization)
    classes = classes_for(named, classes_path, about["classes"], source=source)
    return OnnxRunner(base.arch, str(weights_path), about["input_size"], classes, about["normalization"],
                      str(dataclasses.replace(base, normalization=normalization).path), precision,
                      parameters=about.get("parameters", 0), open_mode=open_mode,
                      sessions={about["normalization"]: session})


@dataclass(frozen=True)
class Prepared:
    path: Path
    made: bool  # exported now, rather than found in the cache


def prepare(arch, *, notice=None, verbose=False, exporter=None):
    """Make sure the ONNX file for arch's official ImageNet weights is cached (for `weights download --onnx`).

    The weights must be in the cache already. The file is loaded once, to know it works.
    """
    if not installed():
        raise BackendError("--onnx needs ONNX Runtime: pip install 'resclassify[onnx]'")
    key = dataclasses.replace(official_key(arch), normalization=ARCHS[arch].normalization)
    was_cached = cached_export(key) is not None
    classifier = load_classifier("imagenet", arch, offline=True, notice=notice, verbose=verbose, exporter=exporter)
    return Prepared(Path(classifier.onnx_path), not was_cached)
