"""Inputs behind URLs (s3://, gs://, https://, any filesystem fsspec knows): prefixes listed once, objects
named by their URL, bytes read with a range when an image is part of a larger object (a tar member).

fsspec and the store's own package (s3fs, gcsfs, aiohttp) come from optional extras and are
imported only when a URL is given. Credentials and endpoints are the store's own configuration
(for S3: the environment, profiles, AWS_ENDPOINT_URL for MinIO or Ceph): nothing of ours to learn.
"""

import re
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
        return fsspec.core.url_to_fs(url, **filesystem_options(scheme))
    except ImportError as exc:
        package = EXTRAS.get(scheme, (None, getattr(exc, "name", None) or "its package"))[1]
        raise StorageError(f"{url}: reading {scheme}:// URLs needs {package}: {install_hint(scheme)}") from None
    except ValueError as exc:
        raise StorageError(f"{url}: {exc}") from None


def filesystem_options(scheme):
    """Options for scheme's filesystem: none of ours beyond timeouts and retries (see sources.fetching)."""
    return {}


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
        keys = fs.find(path)
    except FileNotFoundError as exc:
        raise StorageError(f"{url}: {_reason(exc, 'no such bucket or prefix')}") from None
    except PermissionError as exc:
        raise StorageError(f"{url}: {_reason(exc, 'access denied')}") from None
    except OSError as exc:
        raise StorageError(f"{url}: cannot list: {_reason(exc, type(exc).__name__)}") from None
    return sorted(fs.unstrip_protocol(key) for key in keys if is_image_key(key))


def expand_url(url, lister=None):
    """A URL argument as inputs: one RemoteImage for an image's URL, or those under a prefix (InputError if none),
    listed by lister (list_images unless given: see sources.listing)."""
    if is_image_key(url) and not url.endswith("/"):
        filesystem(url)  # a missing extra stops the run here, before any work
        return [RemoteImage(url, url)]
    urls = (lister or list_images)(url)
    return [RemoteImage(found, found) for found in urls] or [InputError(url, "no image files found under this prefix")]


def read_bytes(image):
    """The bytes of a RemoteImage; InputError for one that cannot be read (missing, denied, cut short).

    A url without a scheme is a local file (a member of a local tar shard): read without fsspec.
    """
    if not is_url(image.url):
        return _read_local(image)
    fs, path = filesystem(image.url)
    try:
        if image.start is None:
            return fs.cat_file(path)
        data = fs.cat_file(path, start=image.start, end=image.end)
    except FileNotFoundError as exc:
        raise InputError(image.path, _reason(exc, "no such object")) from None
    except PermissionError as exc:
        raise InputError(image.path, _reason(exc, "access denied")) from None
    if len(data) != image.end - image.start:
        raise InputError(image.path, f"cut short: {len(data)} of {image.end - image.start} bytes")
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
    if len(data) != image.end - image.start:
        raise InputError(image.path, f"cut short: {len(data)} of {image.end - image.start} bytes")
    return data


def _reason(exc, default):
    text = str(exc).strip().splitlines()
    return text[0] if text and text[0] else default


def read_file(path):
    """The whole bytes of a small file named by a local path or a URL (a labels file, a record file); OSError
    (FileNotFoundError, PermissionError) as open() raises it, StorageError for a store that cannot be used."""
    if not is_url(path):
        with open(path, "rb") as file:
            return file.read()
    fs, inside = filesystem(path)
    return fs.cat_file(inside)
