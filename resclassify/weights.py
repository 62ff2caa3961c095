"""Where weight files come from: Keras's cache, a download checked by hash, or a local path."""

import hashlib
import os
import ssl
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .errors import WeightsError

KERAS_BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
MIRROR_VARIABLE = "RESCLASSIFY_WEIGHTS_MIRROR"
OFFLINE_VARIABLE = "RESCLASSIFY_OFFLINE"


@dataclass(frozen=True)
class KnownWeights:
    """One of Keras's official ImageNet files: same name, URL and md5 as keras.applications."""

    arch: str
    md5: str

    @property
    def file_name(self):
        return f"{self.arch}_weights_tf_dim_ordering_tf_kernels.h5"

    def url(self, base=None):
        return urllib.parse.urljoin(_with_slash(base or KERAS_BASE_URL), self.file_name)


def _with_slash(base):
    return base if base.endswith("/") else base + "/"


# The md5 sums are those keras.applications.resnet / resnet_v2 check (include_top=True files).
KNOWN_WEIGHTS = {
    w.arch: w
    for w in (
        KnownWeights("resnet50", "2cb95161c43110f7111970584f804107"),
        KnownWeights("resnet101", "f1aeb4b969a6efcfb50fad2f0c20cfc5"),
        KnownWeights("resnet152", "100835be76be38e30d865e96f2aaae62"),
        KnownWeights("resnet50v2", "3ef43a0b657b3be2300d5770ece849e0"),
        KnownWeights("resnet101v2", "6343647c601c52e1368623803854d971"),
        KnownWeights("resnet152v2", "a49b44d1979771252814e80f8ec446f9"),
    )
}


def cache_dir():
    """Keras's own cache folder for model files, so either tool reuses the other's downloads."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def offline_requested():
    return os.environ.get(OFFLINE_VARIABLE, "").strip().lower() not in ("", "0", "false", "no")


def resolve_weights(spec, arch="resnet50", *, offline=False, progress=False):
    """Turn --weights (imagenet, a URL, or a path) into a local file, downloading if need be."""
    offline = offline or offline_requested()
    if spec == "imagenet":
        return _official_file(arch, offline=offline, progress=progress)
    if spec.startswith(("http://", "https://")):
        return _url_file(spec, offline=offline, progress=progress)
    path = Path(spec).expanduser()
    if not path.is_file():
        reason = "is not a file" if path.exists() else "no such file"
        raise WeightsError(f"weights {spec}: {reason}")
    return path


def _official_file(arch, *, offline, progress):
    known = KNOWN_WEIGHTS.get(arch)
    if known is None:
        raise WeightsError(f"no ImageNet weights are known for {arch}")
    target = cache_dir() / known.file_name
    mirror = os.environ.get(MIRROR_VARIABLE)
    url = known.url(mirror)
    if target.is_file() and file_hash(target, "md5") == known.md5:
        return target
    if offline:
        state = "is damaged (wrong md5)" if target.exists() else "is not in the cache"
        raise WeightsError(
            f"{known.file_name} {state} and downloads are off (--offline): fetch {url} "
            f"(md5 {known.md5}) on a connected machine and put it at {target}, or pass --weights PATH"
        )
    try:
        download(url, target, algorithm="md5", expected=known.md5, progress=progress)
    except WeightsError as exc:
        raise WeightsError(
            f"{exc}. Put {known.file_name} (md5 {known.md5}) at {target}, or pass --weights PATH"
        ) from None
    return target


def _url_file(spec, *, offline, progress):
    url, _, fragment = spec.partition("#")
    algorithm = expected = None
    if fragment:
        algorithm, _, expected = fragment.partition("=")
        if algorithm not in ("sha256", "md5") or not expected:
            raise WeightsError(f"weights URL {spec}: the fragment must be #sha256=<hex> or #md5=<hex>")
        expected = expected.lower()
    name = Path(urllib.parse.urlparse(url).path).name
    if not name:
        raise WeightsError(f"weights URL {url} does not end in a file name")
    target = cache_dir() / name
    if target.is_file() and (expected is None or file_hash(target, algorithm) == expected):
        return target
    if offline:
        raise WeightsError(f"{name} is not in the cache and downloads are off (--offline): put it at {target}")
    download(url, target, algorithm=algorithm, expected=expected, progress=progress)
    return target


def file_hash(path, algorithm):
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _ssl_context():
    cafile = os.environ.get("SSL_CERT_FILE") or os.environ.get("REQUESTS_CA_BUNDLE")
    return ssl.create_default_context(cafile=cafile) if cafile else None


def download(url, target, *, algorithm=None, expected=None, progress=False, timeout=30):
    """Fetch url to target atomically: a temporary file beside it, checked, then renamed."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", suffix=".part", delete=False)
    except OSError as exc:
        raise WeightsError(
            f"cannot write to the weights cache {target.parent}: {exc.strerror or exc}; "
            "set KERAS_HOME to a writable folder"
        ) from None
    digest = hashlib.new(algorithm) if algorithm else None
    try:
        with partial:
            try:
                request = urllib.request.Request(url, headers={"User-Agent": "resclassify"})
                with urllib.request.urlopen(request, timeout=timeout, context=_ssl_context()) as response:
                    total = int(response.headers.get("Content-Length") or 0) or None
                    received = _copy(response, partial, digest, total, progress, target.name)
            except urllib.error.HTTPError as exc:
                raise WeightsError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", None) or exc
                raise WeightsError(f"cannot download {url}: {reason}") from None
            if total is not None and received != total:
                raise WeightsError(f"cannot download {url}: connection closed after {received:,} of {total:,} bytes")
        if digest is not None and digest.hexdigest() != expected:
            raise WeightsError(
                f"downloaded {url} but its {algorithm} is {digest.hexdigest()}, expected {expected}"
            )
        os.replace(partial.name, target)
    finally:
        if os.path.exists(partial.name):
            os.unlink(partial.name)
    return target


def _copy(response, out, digest, total, progress, name):
    bar = None
    if progress and sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

        bar = Progress(*Progress.get_default_columns()[:2], DownloadColumn(), TransferSpeedColumn(),
                       TimeRemainingColumn(), console=Console(stderr=True), transient=True)
        bar.start()
        task = bar.add_task(f"downloading {name}", total=total)
    received = 0
    try:
        while chunk := response.read(1 << 16):
            out.write(chunk)
            if digest is not None:
                digest.update(chunk)
            received += len(chunk)
            if bar is not None:
                bar.update(task, completed=received)
    finally:
        if bar is not None:
            bar.stop()
    return received
