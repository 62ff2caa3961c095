"""Inputs behind URLs (s3://, gs://, https://, any filesystem fsspec knows): prefixes listed once, objects
named by their URL, bytes read with a range when an image is part of a larger object (a tar member).

fsspec and the store's own package (s3fs, gcsfs, aiohttp) come from optional extras and are
imported only when a URL is given. Credentials and endpoints are the store's own configuration
(for S3: the environment, profiles, AWS_ENDPOINT_URL for MinIO or Ceph): nothing of ours to learn.
"""

import contextlib
import random
import re
import time
from dataclasses import dataclass

from ..errors import InputError, StorageError
from ..images import IMAGE_EXTENSIONS, file_error_reason

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")

# The extra that installs each protocol's filesystem, and the package it brings.
EXTRAS = {
    "s3": ("s3", "s3fs"), "s3a": ("s3", "s3fs"),
    "gs": ("gcs", "gcsfs"), "gcs": ("gcs", "gcsfs"),
    "http": ("http", "aiohttp"), "https": ("http", "aiohttp"),
}


@dataclass(frozen=True)
class RemoteImage:
    """An image whose bytes are read through a filesystem: path is what records call it; its bytes are
    url's, or bytes start..end of it (a member of a tar shard)."""

    path: str
    url: str
    start: int | None = None
    end: int | None = None


def url_scheme(text):
    """The lower-cased scheme of a URL ("s3", "https"), or None for a local path."""
    match = _SCHEME.match(text) if isinstance(text, str) else None
    return match.group(1).lower() if match else None


def is_url(text):
    return url_scheme(text) is not None


def install_hint(scheme):
    """The pip command that makes scheme:// readable."""
    extra = EXTRAS.get(scheme, (None,))[0]
    return f"pip install 'resclassify[{extra}]'" if extra else f"install fsspec's filesystem for {scheme}://"


def filesystem(url):
    """(fsspec filesystem, the path inside it) for url; StorageError naming the pip install when the
    protocol's package is missing, or when fsspec knows no such protocol."""
    scheme = url_scheme(url) or "file"
    try:
        import fsspec
    except ImportError:
        raise StorageError(f"{url}: reading {scheme}:// URLs needs fsspec: {install_hint(scheme)}") from None
    try:
        fs, path = fsspec.core.url_to_fs(url, **filesystem_options(scheme))
    except ImportError as exc:
        package = EXTRAS.get(scheme, (None, getattr(exc, "name", None) or "its package"))[1]
        raise StorageError(f"{url}: reading {scheme}:// URLs needs {package}: {install_hint(scheme)}") from None
    except ValueError as exc:
        raise StorageError(f"{url}: {exc}") from None
    if scheme in ("s3", "s3a"):
        fs.retries = 1  # s3fs's own retries (a class attribute, 5): read_bytes retries instead
    return fs, path


# Timeouts on every request, so that nothing waits forever on a store that stopped answering: a
# connection is set up in well under a second on any network a store is used from (10 s covers a
# congested one), and a read that sends no byte for 30 s is dead, not slow (an image is ~100 KB; a
# tar shard's stream gets its bytes in many such reads). TOTAL bounds one HTTP request as a whole
# (aiohttp's total), at a size no image or member of ours comes near at any working speed.
CONNECT_TIMEOUT_SECONDS = 10
READ_TIMEOUT_SECONDS = 30
TOTAL_TIMEOUT_SECONDS = 300
# Transient errors (timeouts, dropped connections, 5xx, throttling) are retried here, in one
# layer: the stores' own retries are turned down to one attempt, as retries stacked in three
# layers (botocore, s3fs, ours) multiply into dozens of requests and minutes of waiting. Five
# attempts with exponential backoff from 0.2 s (at most 0.2 + 0.4 + 0.8 + 1.6 = 3 s of waiting,
# half that on average with full jitter) ride out a throttling burst or a restarting node, and an
# input that still fails becomes its error record, without holding the run up for long.
READ_ATTEMPTS = 5
RETRY_BACKOFF_SECONDS = 0.2
RETRY_BACKOFF_MAX_SECONDS = 5.0
# HTTP statuses that say "try again later": throttling (429, S3's 503 SlowDown) and server errors.
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Errors of the stores' packages (botocore, aiohttp, fsspec) that mean the request, not the object,
# failed: a connection refused or dropped, a timeout, a response cut or garbled. Named, not imported,
# since those packages are optional extras.
TRANSIENT_ERRORS = frozenset({
    "HTTPClientError", "EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError",
    "ConnectTimeoutError", "ResponseStreamingError", "IncompleteReadError", "ResponseParserError",
    "ClientConnectionError", "ClientPayloadError", "ServerDisconnectedError", "ServerTimeoutError",
    "FSTimeoutError", "IncompleteRead",
})
# Errors that mean the bytes came short of what the response announced.
CUT_SHORT_ERRORS = frozenset({"ClientPayloadError", "IncompleteReadError", "IncompleteRead",
                              "ResponseStreamingError"})
# Connections kept open to one store: as many as fetch_ahead has requests in flight (botocore's own
# pool holds 10, which would queue the rest of them).
MAX_CONNECTIONS = 64


def filesystem_options(scheme):
    """Options for scheme's filesystem: timeouts on every request and the store's own retries turned down
    (read_bytes retries); nothing about credentials or endpoints, which are the store's own configuration."""
    if scheme in ("s3", "s3a"):
        return {
            "config_kwargs": {"connect_timeout": CONNECT_TIMEOUT_SECONDS, "read_timeout": READ_TIMEOUT_SECONDS,
                              "retries": {"mode": "standard", "total_max_attempts": 1},
                              "max_pool_connections": MAX_CONNECTIONS},
            # One GET per object: with more, s3fs asks for each object's size first (a HEAD, a
            # second round trip) to read big objects in parallel parts, which images never are.
            "max_concurrency": 1,
        }
    if scheme in ("http", "https"):
        return {"client_kwargs": {"timeout": _http_timeout()}}
    if scheme in ("gs", "gcs"):
        # gcsfs's own retries are fixed in the package (a class attribute read when it is imported).
        return {"requests_timeout": _http_timeout()}
    return {}


def _http_timeout():
    import aiohttp

    return aiohttp.ClientTimeout(total=TOTAL_TIMEOUT_SECONDS, sock_connect=CONNECT_TIMEOUT_SECONDS,
                                 sock_read=READ_TIMEOUT_SECONDS)


def is_image_key(name):
    name = name.rstrip("/")
    dot = name.rfind(".")
    return dot > name.rfind("/") and name[dot:].lower() in IMAGE_EXTENSIONS


def list_images(url):
    """The image objects under a prefix (or the one object url names), as sorted URLs; listed once, here.

    A bucket that does not exist or cannot be listed is a StorageError (nothing could run).
    """
    fs, path = filesystem(url)
    # The store, not what this process's filesystem cached of an earlier listing: a cache left from before an
    # object was added makes reading that object fail as if it were missing.
    fs.invalidate_cache(path)
    try:
        keys = with_retries(lambda: fs.find(path))
    except Exception as exc:
        raise StorageError(f"{url}: {store_error_reason(exc, 'cannot list')}") from None
    return sorted(fs.unstrip_protocol(key) for key in keys if is_image_key(key))


# Schemes whose URLs name a bucket first (s3://bucket/key): a bucket that is missing or refused
# is found with one request before any work, not once per object as each input's error.
BUCKET_SCHEMES = frozenset({"s3", "s3a", "gs", "gcs"})


def check_buckets(urls):
    """Ask the store once for each distinct bucket among urls: StorageError (one line) for one that does not
    exist or whose store refuses the credentials. Other URLs (https, local files) are not checked."""
    checked = set()
    for url in urls:
        scheme = url_scheme(url)
        if scheme not in BUCKET_SCHEMES:
            continue
        bucket = url.split("://", 1)[1].split("/", 1)[0]
        if (scheme, bucket) in checked:
            continue
        checked.add((scheme, bucket))
        root = f"{scheme}://{bucket}"
        fs, path = filesystem(root)
        try:
            with_retries(lambda: fs.info(path))  # noqa: B023 - called at once, in this iteration
        except Exception as exc:
            raise StorageError(f"{root}: {store_error_reason(exc, 'cannot be used')}") from None


def expand_url(url, lister=None):
    """A URL argument as inputs: one RemoteImage for an image's URL, or those under a prefix (InputError if none),
    listed by lister (list_images unless given: see sources.listing)."""
    if is_image_key(url) and not url.endswith("/"):
        filesystem(url)  # a missing extra stops the run here, before any work
        return [RemoteImage(url, url)]
    urls = (lister or list_images)(url)
    return [RemoteImage(found, found) for found in urls] or [InputError(url, "no image files found under this prefix")]


def read_bytes(image):
    """The bytes of a RemoteImage; InputError for one that cannot be read (missing, denied, cut short, or a
    transient error that outlasted READ_ATTEMPTS attempts).

    A url without a scheme is a local file (a member of a local tar shard): read without fsspec.
    """
    data = _read_local(image) if not is_url(image.url) else _read_remote(image)
    if image.start is not None and len(data) != image.end - image.start:
        raise InputError(image.path, f"cut short: {len(data)} of {image.end - image.start} bytes")
    return data


def with_retries(call, attempts=None, sleep=time.sleep):
    """call(), again after a transient error (is_transient) up to `attempts` times in all, waiting an
    exponential backoff with full jitter between attempts (so that many clients throttled at once do not
    come back at once); the last error, or any other, is raised."""
    attempts = READ_ATTEMPTS if attempts is None else attempts
    for attempt in range(attempts):
        try:
            return call()
        except Exception as exc:
            if attempt == attempts - 1 or not is_transient(exc):
                if attempt:
                    with contextlib.suppress(AttributeError):  # an error type with __slots__
                        exc.resclassify_attempts = attempt + 1
                raise
        sleep(random.uniform(0, min(RETRY_BACKOFF_MAX_SECONDS, RETRY_BACKOFF_SECONDS * 2 ** attempt)))
    raise AssertionError("unreachable")


def http_status(exc):
    """The HTTP status of a store's error (aiohttp's .status, botocore's response), or None."""
    for error in _chain(exc):
        status = getattr(error, "status", None)
        if isinstance(status, int):
            return status
        response = getattr(error, "response", None)
        if isinstance(response, dict):
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if isinstance(status, int):
                return status
    return None


def is_transient(exc):
    """Whether an error says "try again": a timeout, a connection refused or dropped, a response cut or
    garbled, a server error or throttling (5xx, 429, S3's SlowDown). A missing or denied object is not."""
    if isinstance(exc, (FileNotFoundError, PermissionError)):
        return False
    status = http_status(exc)
    if status is not None:
        return status in TRANSIENT_STATUSES
    return any(isinstance(error, (TimeoutError, ConnectionError)) or _names(error) & TRANSIENT_ERRORS
               for error in _chain(exc))


def store_error_reason(exc, default):
    """The reason a store's error gives, in one line a user reads in an error record or message."""
    status = http_status(exc)
    cut = any(_names(error) & CUT_SHORT_ERRORS for error in _chain(exc))
    if isinstance(exc, FileNotFoundError) or status in (404, 410):
        # The store's own words when it gives some ("The specified key does not exist."), not
        # a bare repeat of the path (fsspec's HTTP filesystem gives only the URL).
        said = error_line(exc, "")
        reason = f"no such bucket or object ({said})" if " " in said else "no such bucket or object"
    elif isinstance(exc, PermissionError) or status in (401, 403):
        reason = f"access denied ({error_line(exc, 'forbidden')})"
    elif cut:
        reason = f"cut short: {error_line(exc, 'the response ended early')}"
    elif status is not None:
        reason = f"HTTP {status}: {error_line(exc, default)}"
    elif is_transient(exc):
        reason = f"{type(exc).__name__}: {error_line(exc, default)}"
    else:
        reason = error_line(exc, default)
    attempts = getattr(exc, "resclassify_attempts", None)
    return f"{reason}, after {attempts} attempts" if attempts else reason


def _chain(exc):
    """exc and the errors it was raised from (a store's packages wrap one error in another)."""
    seen = []
    while exc is not None and len(seen) < 10 and all(exc is not e for e in seen):
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _names(error):
    return {cls.__name__ for cls in type(error).__mro__}


def _read_remote(image):
    fs, path = filesystem(image.url)

    def read():
        if image.start is None:
            return fs.cat_file(path)
        return fs.cat_file(path, start=image.start, end=image.end)

    try:
        data = with_retries(read)
    # Any error at all: a store's packages raise a zoo of them (botocore, aiohttp, gcsfs), and
    # one input that cannot be read must not stop the others.
    except Exception as exc:
        raise InputError(image.path, store_error_reason(exc, "cannot read")) from None
    if image.start is not None and len(data) > image.end - image.start and len(data) >= image.end:
        # A server that ignores Range (a plain HTTP file server may: fsspec does not check for 206) sent
        # the whole object; the member is its part of it.
        data = data[image.start:image.end]
    return data


def _read_local(image):
    try:
        with open(image.url, "rb") as file:
            if image.start is None:
                return file.read()
            file.seek(image.start)
            data = file.read(image.end - image.start)
    except OSError as exc:
        raise InputError(image.path, file_error_reason(exc, image.url)) from None
    return data


def error_line(exc, default):
    """The first line of an error's message (default where it has none): for an OSError(errno, message) as
    s3fs raises it, the message, without "[Errno 5] "."""
    message = exc.strerror if isinstance(exc, OSError) and exc.strerror and not exc.filename else str(exc)
    text = message.strip().splitlines()
    return text[0] if text and text[0] else default


def read_file(path):
    """The whole bytes of a small file named by a local path or a URL (a labels file, a record file); OSError
    (FileNotFoundError, PermissionError) as open() raises it, StorageError for a store that cannot be used."""
    if not is_url(path):
        with open(path, "rb") as file:
            return file.read()
    fs, inside = filesystem(path)
    return with_retries(lambda: fs.cat_file(inside))
