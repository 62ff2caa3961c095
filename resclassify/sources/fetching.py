"""Fetching ahead of the decoders: remote images' bytes read with a bounded number of requests in flight and
bounded memory, in input order, so a store far away keeps the network busy and the decoders fed."""

import collections
from concurrent.futures import ThreadPoolExecutor

from ..errors import InputError
from ..images import ImageBytes
from .remote import RemoteImage, read_bytes

# Requests in flight at once: enough to hide a far region's latency (50 ms x 32 requests of
# ~100 KB each is ~64 MB/s), few enough that a store does not throttle one client.
DEFAULT_REQUESTS = 32
# Fetched bytes waiting for the decoders, at most (besides the requests in flight).
DEFAULT_MAX_BYTES = 256 * 1024 * 1024


def needs_fetching(items):
    return any(isinstance(item, RemoteImage) for item in items)


def fetch_ahead(items, requests=DEFAULT_REQUESTS, max_bytes=DEFAULT_MAX_BYTES, read=read_bytes):
    """items in order, each RemoteImage replaced by its ImageBytes (or the InputError why it has none);
    local paths and InputErrors pass through as they are.

    At most `requests` reads run at once, and new ones start only while the bytes fetched and not
    yet taken stay under max_bytes.
    """
    pool = ThreadPoolExecutor(max_workers=requests, thread_name_prefix="resclassify-fetch")
    pending = collections.deque()  # (item, future or None), in input order
    items = iter(items)
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) < 2 * requests and _held_bytes(pending) < max_bytes:
                item = next(items, None)
                if item is None:
                    exhausted = True
                    break
                future = pool.submit(_fetch, item, read) if isinstance(item, RemoteImage) else None
                pending.append((item, future))
            if not pending:
                return
            item, future = pending.popleft()
            yield item if future is None else future.result()
    finally:
        # Without waiting: a caller that stops early does not wait for reads still out.
        pool.shutdown(wait=False, cancel_futures=True)


def _fetch(image, read):
    try:
        return ImageBytes(image.path, read(image))
    except InputError as exc:
        return exc


def _held_bytes(pending):
    held = 0
    for _, future in pending:
        if future is not None and future.done() and not future.cancelled():
            result = future.result()
            if isinstance(result, ImageBytes):
                held += len(result.data)
    return held
