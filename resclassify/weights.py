"""Where weight files come from: Keras's cache, a download checked by hash, or a local path."""

import hashlib
import http.client
import os
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .archs import ARCHS
from .errors import WeightsError
from .files import AtomicFile, remove_stale_temporaries

KERAS_BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
MIRROR_VARIABLE = "RESCLASSIFY_WEIGHTS_MIRROR"
OFFLINE_VARIABLE = "RESCLASSIFY_OFFLINE"
# The CA bundle variables people already set for curl, requests and pip, in the order we honour
# them. OpenSSL itself reads SSL_CERT_FILE and SSL_CERT_DIR; the others it does not.
CA_FILE_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
HASH_ALGORITHMS = ("sha256", "md5")
DOWNLOAD_TIMEOUT_S = 30


class CacheNotWritable(WeightsError):
    """The cache folder cannot be created or written: the fix is KERAS_HOME, not the network."""


@dataclass(frozen=True)
class KnownWeights:
    """One of Keras's official ImageNet files: same name, URL and md5 as keras.applications."""

    arch: str
    md5: str
    approx_mib: int  # for `weights list` before the file is here; the exact size is not published

    @property
    def file_name(self):
        return ARCHS[self.arch].weights_file

    def url(self, base=None):
        return urllib.parse.urljoin(_with_slash(base or KERAS_BASE_URL), self.file_name)

    @property
    def cache_path(self):
        return cache_dir() / self.file_name


def _with_slash(base):
    return base if base.endswith("/") else base + "/"


# Keras's official files, one for each built-in architecture (names, md5 sums and sizes in archs.py).
KNOWN_WEIGHTS = {arch.name: KnownWeights(arch.name, arch.md5, arch.approx_mib) for arch in ARCHS.values()}


def known_by_file_name(name):
    """The official file a name refers to (so a copy or mirror URL of it gets its md5), or None."""
    for known in KNOWN_WEIGHTS.values():
        if known.file_name == name:
            return known
    return None


def cache_dir():
    """Keras's own cache folder for model files, so either tool reuses the other's downloads.

    A KERAS_HOME that is not a folder can hold no cache: an error, rather than paths inside a file.
    """
    variable = os.environ.get("KERAS_HOME")
    home = Path(variable or os.path.join(os.path.expanduser("~"), ".keras"))
    try:
        not_a_folder = home.exists() and not home.is_dir()
    except OSError as exc:
        raise WeightsError(f"cannot read the weights cache {home}: {exc.strerror or exc}") from None
    if not_a_folder:
        name = f"KERAS_HOME={variable}" if variable else str(home)
        raise CacheNotWritable(f"{name} is not a folder; set KERAS_HOME to a writable folder "
                               "(weights go in $KERAS_HOME/models)")
    return home / "models"


def offline_requested():
    return os.environ.get(OFFLINE_VARIABLE, "").strip().lower() not in ("", "0", "false", "no")


def offline_reason(offline=False):
    """What turned downloads off, as an error message names it ("--offline", "RESCLASSIFY_OFFLINE=1"),
    or None when they are on. offline may already be such a reason."""
    if isinstance(offline, str):
        return offline
    if offline:
        return "--offline"
    if offline_requested():
        return f"{OFFLINE_VARIABLE}={os.environ[OFFLINE_VARIABLE].strip()}"
    return None


def mirror_base():
    return os.environ.get(MIRROR_VARIABLE, "").strip() or None


def resolve_weights(spec, arch="resnet50", *, offline=False, progress=None, notice=None):
    """Turn --weights (imagenet, a URL, or a path) into a local file, downloading if need be.

    progress, if given, is called as progress(file_name, bytes_done, bytes_total) while a file
    downloads: first with 0, then after each chunk (bytes_total is None when the server does not
    say). The library draws nothing; the command line draws a bar from these calls. notice, if
    given, is called with a one-line message for things worth telling but not fatal (a damaged
    cached file being fetched again).
    """
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be a callable progress(file_name, bytes_done, bytes_total), not {progress!r}")
    offline = offline_reason(offline)
    if spec == "imagenet":
        known = KNOWN_WEIGHTS.get(arch)
        if known is None:
            raise WeightsError(f"no ImageNet weights are known for {arch}")
        return official_file(known, offline=offline, progress=progress, notice=notice,
                             alternative="pass --weights PATH")
    if spec.startswith(("http://", "https://")):
        return _url_file(spec, offline=offline, progress=progress, notice=notice)
    path = Path(spec).expanduser()
    if not path.is_file():
        reason = "is not a file" if path.exists() else "no such file"
        raise WeightsError(f"weights {spec}: {reason}")
    return path


def official_file(known, *, offline=False, progress=None, notice=None, alternative=None):
    """Keras's ImageNet file for one architecture, from the cache or downloaded (from the mirror if set).

    alternative, if given, is the other way out an error suggests ("pass --weights PATH").
    """
    return _cached_or_download(known.url(mirror_base()), known.cache_path, "md5", known.md5,
                               offline=offline, progress=progress, notice=notice, alternative=alternative)


def _url_file(spec, *, offline, progress, notice):
    url, _, fragment = spec.partition("#")
    name = urllib.parse.unquote(Path(urllib.parse.urlparse(url).path).name)
    if not name or name in (".", ".."):
        raise WeightsError(f"weights URL {url} does not end in a file name")
    algorithm = expected = None
    if fragment:
        algorithm, _, expected = fragment.partition("=")
        expected = expected.strip().lower()
        if algorithm not in HASH_ALGORITHMS or not expected:
            raise WeightsError(f"weights URL {spec}: the fragment must be #sha256=<hex> or #md5=<hex>")
    elif known_by_file_name(name):
        # A mirror's copy of an official file: hold it to the official md5.
        algorithm, expected = "md5", known_by_file_name(name).md5
    return _cached_or_download(url, cache_dir() / name, algorithm, expected,
                               offline=offline, progress=progress, notice=notice, alternative="pass --weights PATH")


def _cached_or_download(url, target, algorithm, expected, *, offline, progress, notice, alternative=None):
    """The cached target if its hash is right; else one download, checked. Errors name the way out."""
    remove_stale_temporaries(target)
    damaged = None
    if target.is_file():
        if expected is None:
            return target
        actual = file_hash(target, algorithm)
        if actual == expected:
            return target
        damaged = f"{target} has {algorithm} {actual}, expected {expected}"
    hash_note = f" ({algorithm} {expected})" if expected else ""
    offline = offline_reason(offline) if offline else None
    or_else = f"; or {alternative}" if alternative else ""
    if offline:
        state = f"is damaged ({damaged})" if damaged else "is not in the cache"
        raise WeightsError(
            f"{target.name} {state} and downloads are off ({offline}): on a connected machine, fetch "
            f"{url}{hash_note} and put it in {target.parent}{or_else}"
        )
    if damaged and notice:
        notice(f"{damaged}; downloading it again")
    try:
        download(url, target, algorithm=algorithm, expected=expected, progress=progress)
    except CacheNotWritable:
        raise
    except WeightsError as exc:
        way_out = f", or {alternative}" if alternative else ""
        raise WeightsError(
            f"{exc}; without the network, put {target.name}{hash_note} in {target.parent}{way_out}"
        ) from None
    return target


def file_hash(path, algorithm):
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ssl_context():
    """A verifying context that honours the CA bundle variables curl, requests and pip users set."""
    for variable in CA_FILE_VARIABLES:
        cafile = os.environ.get(variable, "").strip()
        if cafile:
            try:
                return ssl.create_default_context(cafile=cafile, capath=os.environ.get("SSL_CERT_DIR") or None)
            except (OSError, ssl.SSLError) as exc:
                raise WeightsError(
                    f"cannot read the CA bundle {variable}={cafile}: {getattr(exc, 'strerror', None) or exc}"
                ) from None
    return ssl.create_default_context()


def _opener(url):
    # build_opener keeps urllib's ProxyHandler, which reads HTTP_PROXY, HTTPS_PROXY and NO_PROXY.
    if url.startswith("https://"):
        return urllib.request.build_opener(urllib.request.HTTPSHandler(context=ssl_context()))
    return urllib.request.build_opener()


def _create_partial(target):
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return AtomicFile(target, text=False)
    except OSError as exc:
        raise CacheNotWritable(
            f"cannot write to the weights cache {target.parent}: {exc.strerror or exc}; "
            "set KERAS_HOME to a writable folder (weights go in $KERAS_HOME/models)"
        ) from None


def download(url, target, *, algorithm=None, expected=None, progress=None, timeout=DOWNLOAD_TIMEOUT_S):
    """Fetch url to target atomically: a temporary file beside it, checked, then renamed.

    Whatever goes wrong (an HTTP error, a dropped connection, a wrong hash, Ctrl-C), the
    temporary file is removed and target is left as it was; if the process is killed outright,
    the next use of the cache removes it (files.remove_stale_temporaries). progress: see resolve_weights.
    """
    target = Path(target)
    opener = _opener(url)
    partial = _create_partial(target)
    digest = hashlib.new(algorithm) if algorithm else None
    try:
        try:
            request = urllib.request.Request(url, headers={"User-Agent": "resclassify"})
            with opener.open(request, timeout=timeout) as response:
                total = int(response.headers.get("Content-Length") or 0) or None
                received = _copy(response, partial.stream, digest, total, progress, target.name)
        except urllib.error.HTTPError as exc:
            raise WeightsError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            raise WeightsError(f"cannot download {url}: {_network_reason(exc, timeout)}") from None
        if total is not None and received != total:
            raise WeightsError(f"cannot download {url}: connection closed after {received:,} of {total:,} bytes")
        if digest is not None and digest.hexdigest() != expected:
            raise WeightsError(
                f"downloaded {url} but its {algorithm} is {digest.hexdigest()}, expected {expected}"
            )
    except BaseException:
        partial.discard()
        raise
    partial.commit()
    return target


def _network_reason(exc, timeout):
    """A short reason for a failed connection: "connection refused", not "<urlopen error [Errno 111] ...>"."""
    reason = getattr(exc, "reason", None)
    if isinstance(exc, urllib.error.URLError) and reason is not None:
        exc = reason
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"certificate verify failed: {exc.verify_message}; if a proxy or private CA signs it, "
                f"point SSL_CERT_FILE or REQUESTS_CA_BUNDLE at its CA bundle")
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return f"no answer within {timeout} s"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror})"
    if isinstance(exc, http.client.IncompleteRead):
        return f"connection closed after {len(exc.partial):,} bytes of a chunk"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    if isinstance(exc, str):
        return exc
    return str(exc) or type(exc).__name__


def _copy(response, out, digest, total, progress, name):
    """Copy the response body to out, hashing it; report each chunk to progress(name, done, total)."""
    received = 0
    if progress is not None:
        progress(name, received, total)
    # read1: whatever has arrived, up to 64 KiB, so a slow server's bytes reach the file (and its
    # modification time) as they come, never more than DOWNLOAD_TIMEOUT_S apart in a live download.
    while chunk := response.read1(1 << 16):
        try:
            out.write(chunk)
            out.flush()
        except OSError as exc:  # a full disk is not a network error
            raise CacheNotWritable(f"cannot write {out.name}: {exc.strerror or exc}") from None
        if digest is not None:
            digest.update(chunk)
        received += len(chunk)
        if progress is not None:
            progress(name, received, total)
    return received


def cached_state(known):
    """"cached", "damaged" (wrong md5) or "missing", and the file's size if here; WeightsError if unreadable."""
    path = known.cache_path
    try:
        if not path.is_file():
            return "missing", None
        state = "cached" if file_hash(path, "md5") == known.md5 else "damaged"
        return state, path.stat().st_size
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read: {exc.strerror or exc}") from None


def cached_files():
    """For `resclassify info`: the files in the cache folder (name, model if it is an official file, size, path)."""
    folder = cache_dir()
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise WeightsError(f"cannot read the weights cache {folder}: {exc.strerror or exc}") from None
    rows = []
    for entry in entries:
        # Hidden files are downloads under way (or killed): not weights yet.
        if entry.name.startswith(".") or not entry.is_file():
            continue
        known = known_by_file_name(entry.name)
        rows.append({"file": entry.name, "model": known.arch if known else None, "size": entry.stat().st_size,
                     "path": entry.path})
    return rows


def listing():
    """For `weights list`: one row per known model, in KNOWN_WEIGHTS order (record_formats.WEIGHTS_COLUMNS)."""
    rows = []
    for known in KNOWN_WEIGHTS.values():
        state, size = cached_state(known)
        rows.append({"model": known.arch, "file": known.file_name, "size": size, "md5": known.md5,
                     "cached": state == "cached", "state": state, "path": str(known.cache_path),
                     "url": known.url()})
    return rows
