"""Fetching ahead of the decoders: remote images' bytes read with a bounded number of requests in flight and
bounded memory, in input order, so a store far away keeps the network busy and the decoders fed."""

import collections
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from ..errors import InputError
from ..images import ImageBytes
from .remote import RemoteImage, read_bytes

# Requests in flight at once: enough to hide a far region's latency (50 ms x 32 requests of
# ~100 KB each is ~64 MB/s), few enough that a store does not throttle one client.
DEFAULT_REQUESTS = 32
# Fetched bytes waiting for the decoders, at most (besides what the requests in flight bring).
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
# Inputs fetched or being fetched ahead of the one handed out next, in units of `requests`: while
# one slow read holds up the head of the line, the others go on reading this far ahead.
WINDOW_PER_REQUEST = 8


def needs_fetching(items):
    return any(isinstance(item, RemoteImage) for item in items)


def fetch_ahead(items, requests=DEFAULT_REQUESTS, max_bytes=DEFAULT_MAX_BYTES, read=read_bytes):
    """items in order, each RemoteImage replaced by its ImageBytes (or the InputError why it has none);
    local paths and InputErrors pass through as they are.

    At most `requests` reads run at once (none waits in a queue: a read starts only when one can
    run), and a read starts only while the bytes fetched and not yet handed out stay under
    max_bytes: so at most max_bytes plus what the reads in flight bring are held.
    """
    pool = ThreadPoolExecutor(max_workers=requests, thread_name_prefix="resclassify-fetch")
    pending = collections.deque()  # [item, future or None], in input order
    running = set()  # futures not yet seen done
    held = 0  # bytes of done reads not yet handed out
    items = iter(items)
    exhausted = False
    try:
        while True:
            for future in [f for f in running if f.done()]:
                running.discard(future)
                held += _size(future)
            while (not exhausted and len(running) < requests and held < max_bytes
                   and len(pending) < WINDOW_PER_REQUEST * requests):
                item = next(items, None)
                if item is None:
                    exhausted = True
                    break
                future = pool.submit(_fetch, item, read) if isinstance(item, RemoteImage) else None
                if future is not None:
                    running.add(future)
                pending.append((item, future))
            if not pending:
                return
            item, future = pending[0]
            if future is not None and not future.done():
                # Wake for any read done, not only the head's: a freed request starts the next read.
                wait(running, return_when=FIRST_COMPLETED)
                continue
            pending.popleft()
            if future is None:
                yield item
                continue
            if future in running:
                running.discard(future)
            else:
                held -= _size(future)
            yield future.result()
    finally:
        # Without waiting: a caller that stops early does not wait for reads still out.
        pool.shutdown(wait=False, cancel_futures=True)


def _fetch(image, read):
    try:
        return ImageBytes(image.path, read(image))
    except InputError as exc:
        return exc


def _size(future):
    if future.exception() is not None:
        return 0
    result = future.result()
    return len(result.data) if isinstance(result, ImageBytes) else 0
