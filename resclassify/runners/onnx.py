"""ONNX Runtime on the CPU: the Keras network exported to ONNX once, cached beside its weights, run without TensorFlow.

The exported graph takes uint8 images (n, size, size, 3) and gives float32 probabilities: the
normalization and the softmax are inside it. It is cached in $KERAS_HOME/models/onnx, one file
per (weights, architecture, input size, normalization, precision), with a JSON file beside it
that says what it was made from and its sha256. A run with the file cached imports ONNX Runtime,
NumPy and Pillow only. One process at a time exports a file (a lock beside it; the others wait
and use it), and an export that failed is remembered (a marker beside it) so that default runs
do not try it again on every start.
"""

import contextlib
import dataclasses
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..archs import ARCH_CHOICES, ARCHS
from ..config import DEFAULT_SIZE, NORMALIZE_MODES, check_choice, resolve_preprocessing
from ..errors import BackendError, ExportError, ModelError
from ..labels import ClassIndex, imagenet_classes, read_class_file
from ..weights import CacheNotWritable

NAME = "onnxruntime"
# What the exported graph is (uint8 in, normalization and softmax inside, input "images"): a
# change to the recipe bumps it, and every file made by an older recipe is rebuilt.
FORMAT_VERSION = 1
INPUT_NAME = "images"
FOLDER_NAME = "onnx"
HASHES_FILE = "file-hashes.json"
PRECISIONS = ("float32",)
# (ExportKey, threads) -> (InferenceSession, about-record): each export is loaded once per process.
# Only sessions are shared; every load_classifier call gets its own network object, so a later
# caller's notice, offline and exporter settings are its own.
_classifiers = {}


class OnnxCacheNotWritable(CacheNotWritable):
    """The ONNX cache folder cannot be written (read-only, not a folder, no room): a default run goes on with Keras."""


class ExportFailedBefore(ExportError):
    """An earlier run's export of this network failed with these versions: a default run goes to Keras at once."""


def installed():
    """Whether ONNX Runtime can be imported, without importing it."""
    return importlib.util.find_spec("onnxruntime") is not None


def exporter_installed():
    return importlib.util.find_spec("tf2onnx") is not None


def nvidia_gpu_present():
    """Whether this machine has an NVIDIA GPU that CUDA would show, found without importing a framework.

    The NVIDIA driver lists each GPU under /proc/driver/nvidia/gpus and makes /dev/nvidiaN for
    it (containers given a GPU get the device files); CUDA_VISIBLE_DEVICES="" or -1 hides them.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    if _entries("/proc/driver/nvidia/gpus"):
        return True
    return any(re.fullmatch(r"nvidia\d+", name) for name in _entries("/dev"))


def _entries(folder):
    try:
        return os.listdir(folder)
    except OSError:
        return []


def version():
    """ONNX Runtime's version, or None when it is not installed."""
    if not installed():
        return None
    from importlib.metadata import PackageNotFoundError, version as package_version

    for name in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino"):
        try:
            return package_version(name)
        except PackageNotFoundError:
            continue
    return None


# --- the cache --------------------------------------------------------------------------------

def cache_folder():
    """$KERAS_HOME/models/onnx; OnnxCacheNotWritable when KERAS_HOME cannot hold a cache (a file)."""
    from ..weights import cache_dir

    try:
        return cache_dir() / FOLDER_NAME
    except CacheNotWritable as exc:
        raise OnnxCacheNotWritable(str(exc)) from None


def _cannot_write(folder, exc):
    """Why the ONNX cache cannot be written, naming the folder and the way out."""
    try:
        reason = "not a folder" if folder.exists() and not folder.is_dir() else None
    except OSError:
        reason = None
    reason = reason or (exc.strerror or str(exc)).lower()
    return (f"cannot write to the ONNX cache {folder}: {reason}; set KERAS_HOME to a writable folder (ONNX "
            "files go in $KERAS_HOME/models/onnx), or pass --backend tensorflow")


@dataclass(frozen=True)
class ExportKey:
    """What one cached ONNX file is made from; its file name says it all."""

    label: str  # the architecture, or "custom-<model file stem>"
    arch: str  # one of config.ARCH_CHOICES, or "custom"
    weights_hash: str  # "md5:<hex>" (Keras's official files) or "sha256:<hex>"
    input_size: int  # None: the model file's own
    normalization: str  # None: the model's own
    precision: str = "float32"

    @property
    def file_stem(self):
        algorithm, _, digest = self.weights_hash.partition(":")
        size = f"{self.input_size}px" if self.input_size else "own-size"
        normalization = self.normalization or "own-normalization"
        return f"{self.label}-{size}-{normalization}-{self.precision}-{algorithm}-{digest[:16]}"

    @property
    def path(self):
        return cache_folder() / f"{self.file_stem}.onnx"

    @property
    def about_path(self):
        return cache_folder() / f"{self.file_stem}.json"

    @property
    def lock_path(self):
        """Held while this file is exported, so one process exports it and the others wait for it."""
        return cache_folder() / f".{self.file_stem}.onnx.lock"

    @property
    def failed_path(self):
        """Says that exporting this file failed, with which versions: default runs then go to Keras at once."""
        return cache_folder() / f"{self.file_stem}.export-failed.json"

    def as_dict(self):
        return {"arch": self.arch, "weights_hash": self.weights_hash, "input_size": self.input_size,
                "normalization": self.normalization, "precision": self.precision}


def _safe_label(text):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "model"


def file_sha256(path, memo=True):
    """A file's sha256, remembered per (path, size, mtime, inode) so a 100 MB file is hashed once, not per run."""
    from ..weights import file_hash

    path = Path(path).resolve()
    stat = path.stat()
    fingerprint = [stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_dev]
    hashes_path = cache_folder() / HASHES_FILE
    hashes = _read_json(hashes_path) if memo else None
    hashes = hashes if isinstance(hashes, dict) else {}
    known = hashes.get(str(path))
    if isinstance(known, dict) and known.get("stat") == fingerprint and isinstance(known.get("sha256"), str):
        return known["sha256"]
    digest = file_hash(path, "sha256")
    if memo:
        _remember_hash(hashes_path, str(path), {"stat": fingerprint, "sha256": digest})
    return digest


def _remember_hash(hashes_path, name, entry):
    """Add one entry to the hash memo: read, changed and written under its lock, so concurrent runs keep each other's."""
    from ..weights import held_lock

    try:
        hashes_path.parent.mkdir(parents=True, exist_ok=True)
        with held_lock(hashes_path.with_name(f".{hashes_path.name}.lock")):
            hashes = _read_json(hashes_path)
            hashes = hashes if isinstance(hashes, dict) else {}
            hashes[name] = entry
            # Forget files that are gone, so the memo does not grow for ever.
            hashes = {known: value for known, value in hashes.items() if os.path.exists(known)}
            _write_json(hashes_path, hashes)
    except OSError:
        pass  # a cache that cannot be written only costs a hash later


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_json_quietly(path, data):
    """Write a small JSON file atomically; a cache that cannot be written only costs time later."""
    try:
        _write_json(path, data)
    except OSError:
        pass


def _write_json(path, data):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            _lock_partial(f)
            json.dump(data, f, indent=1, sort_keys=True)
            f.write("\n")
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _lock_partial(stream):
    """The writer's lock on its .part file, held until closed: one nobody holds is a dead writer's (weights._lock)."""
    from ..weights import _lock

    _lock(stream)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _stat_fingerprint(path):
    stat = os.stat(path)
    return [stat.st_size, stat.st_mtime_ns]


def cached_export(key, notice=None):
    """The about-record of key's cached ONNX file if it is there and whole, else None (to be rebuilt).

    The file's sha256 is checked against the record when its size or time changed since it was
    written (a copy to another machine, an edit); the record then remembers the new time.
    """
    path, about_path = key.path, key.about_path
    if not path.is_file():
        return None
    about = _read_json(about_path)
    if not isinstance(about, dict) or about.get("format") != FORMAT_VERSION or about.get("key") != key.as_dict():
        _tell(notice, f"{path} was made by another version or lacks its record; exporting again")
        return None
    try:
        fingerprint = _stat_fingerprint(path)
    except OSError:
        return None
    if fingerprint != about.get("stat"):
        from ..weights import file_hash

        actual = file_hash(path, "sha256")
        if actual != about.get("sha256"):
            _tell(notice, f"{path} is damaged (sha256 {actual}, expected {about.get('sha256')}); exporting again")
            return None
        about["stat"] = fingerprint
        _write_json_quietly(about_path, about)
    return about


def _tell(notice, message):
    if notice is not None:
        notice(message)


def export_to_cache(key, weights_path, *, notice=None, verbose=False, threads=None, exporter=None):
    """Export the network to key.path and return its record; call it holding key's lock (see _open_or_export).

    The file is written to a hidden temporary file and checked; then its record is written
    beside it, and the file renamed onto its name last. That rename makes the pair: a stop at
    any point leaves no file at key.path, or the file with its record (a record left without
    its file names another file's sha256, and is rewritten by the next export).

    exporter(job, output_path) makes the ONNX file and returns what it learnt (input size,
    classes, normalization); by default a child process runs onnx_export.
    """
    from ..weights import _lock, file_hash, remove_stale_partials

    exporter = exporter or run_export_process
    folder = cache_folder()
    # What an export killed outright (kill -9, a power cut) left: with key's lock held no live
    # process writes these, so one that no process holds is a dead writer's, whatever its age.
    for target in (key.path, key.about_path):
        remove_stale_partials(target, unlocked_is_stale=True)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{key.path.name}.", suffix=".part")
        writer = os.fdopen(fd, "rb")
        _lock(writer)  # held while the child writes the file: a live export is never taken for stale
    except OSError as exc:
        raise OnnxCacheNotWritable(_cannot_write(folder, exc)) from None
    job = {"arch": key.arch, "weights": str(weights_path), "input_size": key.input_size,
           "normalization": key.normalization, "threads": threads, "output": temporary}
    try:
        _tell(notice, f"exporting {key.label} to ONNX once ({key.path}); later runs start from it without "
                      "TensorFlow")
        learnt = exporter(job, verbose=verbose)
        if os.path.getsize(temporary) == 0:
            raise ExportError(f"exporting {key.label} to ONNX wrote nothing")
        about = {
            "format": FORMAT_VERSION,
            "key": key.as_dict(),
            "weights": str(weights_path),
            "sha256": file_hash(temporary, "sha256"),
            "stat": _stat_fingerprint(temporary),
            **learnt,
        }
        try:
            os.chmod(temporary, 0o666 & ~_umask())
            _write_json(key.about_path, about)
            os.replace(temporary, key.path)
        except OSError as exc:
            raise OnnxCacheNotWritable(_cannot_write(folder, exc)) from None
    finally:
        writer.close()
        if os.path.exists(temporary):
            os.unlink(temporary)
    return about


def _open_cached(key, threads, notice):
    """(session, about) for key's cached file if it is whole and loads, else None."""
    about = cached_export(key, notice)
    if about is None:
        return None
    try:
        return open_session(key.path, threads), about
    except Exception as exc:  # ONNX Runtime raises its own kinds for a file it cannot parse
        _tell(notice, f"{key.path} cannot be loaded ({_first_line(exc)}); exporting again")
        return None


def _open_or_export(key, resolve, *, threads, notice, verbose, exporter, retry_failed):
    """(session, about) for key: from the cache, else exported by this process or by another one it waited for.

    One process exports a key at a time: it holds the key's lock file, the others wait for it
    (saying so once) and then load its file. retry_failed=False (a default run) raises
    ExportFailedBefore when an earlier export of key failed with these versions, without trying
    again; a failure is remembered, and a success forgets it.
    """
    from ..weights import held_lock

    opened = _open_cached(key, threads, notice)
    if opened is not None:
        return opened
    if not retry_failed:
        _check_not_failed_before(key)
    folder = cache_folder()
    with contextlib.ExitStack() as stack:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            stack.enter_context(held_lock(key.lock_path, on_wait=lambda: _tell(
                notice, f"another process is exporting {key.label} to ONNX ({key.path}); waiting for it")))
        except OSError as exc:
            raise OnnxCacheNotWritable(_cannot_write(folder, exc)) from None
        # Another process may have made it (or failed to) while this one waited.
        opened = _open_cached(key, threads, None)
        if opened is not None:
            return opened
        if not retry_failed:
            _check_not_failed_before(key)
        weights_path = resolve()
        try:
            about = export_to_cache(key, weights_path, notice=notice, verbose=verbose, threads=threads,
                                    exporter=exporter)
        except ExportError as exc:
            _remember_failure(key, exc)
            raise
        _forget_failure(key)
        return open_session(key.path, threads), about


# --- a failed export, remembered ------------------------------------------------------------

def export_versions():
    """What an export's outcome depends on beside its key: resclassify's recipe and the exporting packages."""
    from importlib.metadata import PackageNotFoundError, version as package_version

    from .. import __version__

    versions = {"resclassify": __version__, "format": FORMAT_VERSION}
    for name in ("keras", "tensorflow", "tf2onnx"):
        try:
            versions[name] = package_version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def failed_before(key):
    """Why an earlier export of key failed, if it did with the versions installed now; else None."""
    marker = _read_json(key.failed_path)
    if isinstance(marker, dict) and marker.get("versions") == export_versions() and isinstance(marker.get("error"), str):
        return marker["error"]
    return None


def _check_not_failed_before(key):
    error = failed_before(key)
    if error is not None:
        raise ExportFailedBefore(f"the ONNX export of {key.label} failed in an earlier run ({error}; --backend "
                                 f"onnxruntime tries again)")


def _remember_failure(key, exc):
    _write_json_quietly(key.failed_path, {"error": str(exc), "key": key.as_dict(), "versions": export_versions()})


def _forget_failure(key):
    try:
        os.unlink(key.failed_path)
    except OSError:
        pass


def remove_dead_temporaries():
    """Remove the cache's hidden .part files whose writer is dead: none holds its lock, and it is over weights.STALE_PART_AGE_S old."""
    from ..weights import remove_unowned_partials

    try:
        candidates = list(cache_folder().glob(".*.part"))
    except (OSError, CacheNotWritable):
        return
    remove_unowned_partials(candidates)


def run_export_process(job, *, verbose=False):
    """Run onnx_export in a child Python with the TensorFlow backend; its errors come back as ours."""
    if not exporter_installed():
        raise ExportError("exporting to ONNX needs tf2onnx: pip install 'resclassify[onnx]' (or pass "
                          "--backend tensorflow)")
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    # tf2onnx converts TensorFlow graphs: the export runs on Keras's TensorFlow backend whatever
    # backend the user picked for Keras.
    env["KERAS_BACKEND"] = "tensorflow"
    if not verbose:
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # Named like the .part file it sits beside, so that a killed run's leftover is cleaned up alike.
    job = dict(job, result=job["output"] + ".result.part")
    try:
        # On Ctrl-C (and the signals the command line treats alike) run() kills the child before
        # the exception goes on; a parent killed outright takes it along (_dies_with_parent).
        child = subprocess.run(export_command(job),
                               # stdout carries results only: the child's chatter goes to stderr.
                               stdout=sys.stderr if verbose else subprocess.DEVNULL,
                               stderr=None if verbose else subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                               preexec_fn=_dies_with_parent())
        result = _read_json(job["result"])
    finally:
        if os.path.exists(job["result"]):
            os.unlink(job["result"])
    if child.returncode == 0 and isinstance(result, dict) and result.get("ok"):
        result.pop("ok")
        return result
    if isinstance(result, dict) and "error" in result:
        raise _error_of_kind(result)
    raise ExportError(f"exporting {Path(job['weights']).name} to ONNX failed: {_child_failure(child)}")


def export_command(job):
    """The export child's command line."""
    return [sys.executable, "-m", "resclassify.backends.onnx_export", json.dumps(job)]


def _dies_with_parent():
    """A preexec_fn making the kernel kill the child when this process dies, however it dies (Linux); else None.

    Without it, a parent killed by SIGKILL (or by a signal it does not handle) leaves the child
    exporting on alone for half a minute, at several GiB.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes
        import signal

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec():
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before that took effect
            os._exit(1)

    return preexec


def _error_of_kind(result):
    """The child's error as the same resclassify error (a WeightsError stays one); ExportError otherwise."""
    from .. import errors

    if result.get("kind") == "NotWritable":
        return OnnxCacheNotWritable(f"{result['error']}; set KERAS_HOME to a writable folder (ONNX files go in "
                                    "$KERAS_HOME/models/onnx), or pass --backend tensorflow")
    kind = getattr(errors, str(result.get("kind")), None)
    if not (isinstance(kind, type) and issubclass(kind, errors.ResclassifyError)) or issubclass(kind, errors.InputError):
        return ExportError(result["error"])
    if issubclass(kind, errors.PreprocessingError):
        return kind(result["error"], result.get("option"))
    return kind(result["error"])


def _child_failure(child):
    """Why the export child stopped without an answer: a signal, or the last line of its traceback."""
    if child.returncode < 0:
        import signal

        try:
            name = signal.Signals(-child.returncode).name
        except ValueError:
            name = f"signal {-child.returncode}"
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"the exporting process was stopped by {name}{hint}"
    lines = [line.strip() for line in (child.stderr or "").splitlines() if line.strip()]
    if "Traceback (most recent call last):" in lines:
        return lines[-1]
    return f"exit status {child.returncode}" + (f": {lines[-1]}" if lines else "")


def cached_files():
    """For `resclassify info`: each cached ONNX file (file, size, path) and what it was made from, by name."""
    folder = cache_folder()
    try:
        paths = sorted(folder.glob("*.onnx"))
    except OSError:
        return []
    rows = []
    for path in paths:
        about = _read_json(path.with_suffix(".json"))
        about = about if isinstance(about, dict) else {}
        key = about.get("key") if isinstance(about.get("key"), dict) else {}
        try:
            size = path.stat().st_size
        except OSError:
            continue
        rows.append({"file": path.name, "size": size, "path": str(path), "arch": key.get("arch"),
                     "weights": about.get("weights"), "input_size": about.get("input_size"),
                     "normalization": about.get("normalization"), "precision": key.get("precision")})
    return rows


# --- the network ---------------------------------------------------------------------------

@dataclass
class OnnxClassifier:
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

    @property
    def name(self):
        return Path(self.weights).name if self.arch == "custom" else self.arch

    def preprocessing(self, name="center-crop", *, crop_fraction=None, interpolation=None, tta=None, mode=None,
                      exact_decode=False):
        """The preprocessing for this network: its input size, and its normalization unless mode overrides it."""
        return resolve_preprocessing(name, size=self.input_size, crop_fraction=crop_fraction,
                                     interpolation=interpolation, tta=tta, mode=mode or self.normalization,
                                     exact_decode=exact_decode)

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
    if threads:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def load_classifier(weights="imagenet", arch="resnet50", *, model_path=None, classes_path=None, threads=None,
                    precision="float32", input_size=None, normalization=None, offline=False, progress=None,
                    notice=None, verbose=False, exporter=None, retry_failed_export=True):
    """The network as an ONNX Runtime session, exported from Keras first if it is not cached yet.

    weights is "imagenet" (Keras's official file for arch, downloaded if need be), a URL or a
    file; or model_path is a user's own Keras model. normalization (default: the network's own)
    is the one built into the graph first. exporter is for tests (see export_to_cache).
    retry_failed_export=False (ONNX Runtime as the default rather than asked for) raises
    ExportFailedBefore at once for an export that failed before with these versions.
    """
    from ..weights import KNOWN_WEIGHTS, resolve_weights

    if precision not in PRECISIONS:
        raise ModelError(f"--backend onnxruntime computes in float32 only; use --backend tensorflow for {precision}")
    if normalization is not None:
        check_choice("normalization", normalization, NORMALIZE_MODES)
    named = read_class_file(classes_path) if classes_path is not None else None  # fail fast, before anything
    if model_path is not None:
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise ModelError(f"model {model_path}: {'is not a file' if path.exists() else 'no such file'}")
        if path.suffix.lower() not in (".keras", ".h5", ".hdf5"):
            raise ModelError(f"model {model_path}: expected a .keras file or a full-model .h5 file")
        base = ExportKey(f"custom-{_safe_label(path.stem)}", "custom", f"sha256:{file_sha256(path)}", input_size,
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
    classes = _classes(named, classes_path, about["classes"])
    return OnnxClassifier(base.arch, str(weights_path), about["input_size"], classes, about["normalization"],
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


def official_key(arch, input_size=DEFAULT_SIZE, precision="float32"):
    """The key of an export of Keras's official ImageNet weights for arch: known by their md5, no hashing."""
    from ..weights import KNOWN_WEIGHTS

    return ExportKey(arch, arch, f"md5:{KNOWN_WEIGHTS[arch].md5}", input_size, None, precision)


def _classes(named, classes_path, outputs):
    if named is not None:
        if len(named) != outputs:
            raise ModelError(f"classes file {classes_path} has {len(named)} labels but the model has {outputs} outputs")
        return named
    if outputs == 1000:
        return imagenet_classes()
    return ClassIndex(labels=tuple(str(i) for i in range(outputs)))


def _first_line(exc):
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
