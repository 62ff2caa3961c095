"""The ONNX cache: the files exported from Keras, each with a JSON record of what it was made from and its sha256.

They live in $KERAS_HOME/models/onnx, one file per (weights, architecture, input size,
normalization, precision). An export writes a hidden .part file and renames it last, holding a
lock beside it so that one process exports a file and the others wait; an export that failed is
remembered (a marker beside it) so that default runs do not try it again on every start.
"""

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .. import machine
from .._version import __version__
from ..config import DEFAULT_SIZE
from ..errors import ExportError
from ..files import AtomicFile, held_lock, remove_stale_temporaries, remove_unowned_temporaries, write_atomically
from ..weights import CacheNotWritable

# What the exported graph is (uint8 in, normalization and softmax inside, input "images"): a
# change to the recipe bumps it, and every file made by an older recipe is rebuilt.
FORMAT_VERSION = 1


FOLDER_NAME = "onnx"


HASHES_FILE = "file-hashes.json"


class OnnxCacheNotWritable(CacheNotWritable):
    """The ONNX cache folder cannot be written (read-only, not a folder, no room): a default run goes on with Keras."""


class ExportFailedBefore(ExportError):
    """An earlier run's export of this network failed with these versions: a default run goes to Keras at once."""


def cache_folder():
    """$KERAS_HOME/models/onnx; OnnxCacheNotWritable when KERAS_HOME cannot hold a cache (a file)."""
    from ..weights import cache_dir

    try:
        return cache_dir() / FOLDER_NAME
    except CacheNotWritable as exc:
        raise OnnxCacheNotWritable(str(exc)) from None


def cannot_write(folder, exc):
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


def safe_label(text):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "model"


def official_key(arch, input_size=DEFAULT_SIZE, precision="float32"):
    """The key of an export of Keras's official ImageNet weights for arch: known by their md5, no hashing."""
    from ..weights import KNOWN_WEIGHTS

    return ExportKey(arch, arch, f"md5:{KNOWN_WEIGHTS[arch].md5}", input_size, None, precision)


def file_sha256(path, memo=True):
    """A file's sha256, remembered per (path, size, mtime, inode) so a 100 MB file is hashed once, not per run."""
    from ..weights import file_hash

    path = Path(path).resolve()
    stat = path.stat()
    fingerprint = [stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_dev]
    hashes_path = cache_folder() / HASHES_FILE
    hashes = read_json(hashes_path) if memo else None
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
    try:
        hashes_path.parent.mkdir(parents=True, exist_ok=True)
        with held_lock(hashes_path.with_name(f".{hashes_path.name}.lock")):
            hashes = read_json(hashes_path)
            hashes = hashes if isinstance(hashes, dict) else {}
            hashes[name] = entry
            # Forget files that are gone, so the memo does not grow for ever.
            hashes = {known: value for known, value in hashes.items() if os.path.exists(known)}
            _write_json(hashes_path, hashes)
    except OSError:
        pass  # a cache that cannot be written only costs a hash later


def read_json(path):
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
    write_atomically(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


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
    about = read_json(about_path)
    if not isinstance(about, dict) or about.get("format") != FORMAT_VERSION or about.get("key") != key.as_dict():
        tell(notice, f"{path} was made by another version or lacks its record; exporting again")
        return None
    try:
        fingerprint = _stat_fingerprint(path)
    except OSError:
        return None
    if fingerprint != about.get("stat"):
        from ..weights import file_hash

        actual = file_hash(path, "sha256")
        if actual != about.get("sha256"):
            tell(notice, f"{path} is damaged (sha256 {actual}, expected {about.get('sha256')}); exporting again")
            return None
        about["stat"] = fingerprint
        _write_json_quietly(about_path, about)
    return about


def tell(notice, message):
    if notice is not None:
        notice(message)


def export_to_cache(key, weights_path, *, exporter, notice=None, verbose=False, threads=None):
    """Export the network to key.path and return its record; call it holding key's lock (see onnx._open_or_export).

    The file is written to a hidden temporary file and checked; then its record is written
    beside it, and the file renamed onto its name last. That rename makes the pair: a stop at
    any point leaves no file at key.path, or the file with its record (a record left without
    its file names another file's sha256, and is rewritten by the next export).

    exporter(job, verbose=...) makes the ONNX file job["output"] and returns what it learnt (input
    size, classes, normalization): onnx_export.run_export_process, or a test's stand-in.
    """
    from ..weights import file_hash

    folder = cache_folder()
    # What an export killed outright (kill -9, a power cut) left: with key's lock held no live
    # process writes these, so one that no process holds is a dead writer's, whatever its age.
    for target in (key.path, key.about_path):
        remove_stale_temporaries(target, unlocked_is_stale=True)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # Its writer's lock is held while the child writes the file: a live export is never taken for stale.
        written = AtomicFile(key.path, text=False)
    except OSError as exc:
        raise OnnxCacheNotWritable(cannot_write(folder, exc)) from None
    temporary = str(written.temporary)
    job = {"arch": key.arch, "weights": str(weights_path), "input_size": key.input_size,
           "normalization": key.normalization, "threads": threads, "output": temporary}
    try:
        tell(notice, f"exporting {key.label} to ONNX once ({key.path}); later runs start from it without "
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
            _write_json(key.about_path, about)
            written.commit()
        except OSError as exc:
            raise OnnxCacheNotWritable(cannot_write(folder, exc)) from None
    finally:
        written.discard()
    return about


# --- a failed export, remembered ------------------------------------------------------------

def export_versions():
    """What an export's outcome depends on beside its key: resclassify's recipe and the exporting packages."""
    versions = {"resclassify": __version__, "format": FORMAT_VERSION}
    for name in ("keras", "tensorflow", "tf2onnx"):
        versions[name] = machine.version(name)
    return versions


def failed_before(key):
    """Why an earlier export of key failed, if it did with the versions installed now; else None."""
    marker = read_json(key.failed_path)
    if isinstance(marker, dict) and marker.get("versions") == export_versions() and isinstance(marker.get("error"), str):
        return marker["error"]
    return None


def check_not_failed_before(key):
    error = failed_before(key)
    if error is not None:
        raise ExportFailedBefore(f"the ONNX export of {key.label} failed in an earlier run ({error}; --backend "
                                 f"onnxruntime tries again)")


def remember_failure(key, exc):
    _write_json_quietly(key.failed_path, {"error": str(exc), "key": key.as_dict(), "versions": export_versions()})


def forget_failure(key):
    try:
        os.unlink(key.failed_path)
    except OSError:
        pass


def remove_dead_temporaries():
    """Remove the cache's hidden .part files whose writer is dead: none holds its lock, and it is over files.STALE_AGE_S old."""

    try:
        candidates = list(cache_folder().glob(".*.part"))
    except (OSError, CacheNotWritable):
        return
    remove_unowned_temporaries(candidates)


def cached_files():
    """For `resclassify info`: each cached ONNX file (file, size, path) and what it was made from, by name."""
    folder = cache_folder()
    try:
        paths = sorted(folder.glob("*.onnx"))
    except OSError:
        return []
    rows = []
    for path in paths:
        about = read_json(path.with_suffix(".json"))
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
