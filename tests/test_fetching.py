"""Fetching remote images ahead of the decoders (sources.fetching) and retrying a store's transient errors
(sources.remote): bounded requests and bytes, input order, early stop; which errors are retried, how often."""

import threading
import time

import pytest

from resclassify.errors import InputError
from resclassify.images import ImageBytes
from resclassify.sources import fetching, remote
from resclassify.sources.fetching import fetch_ahead
from resclassify.sources.remote import RemoteImage, is_transient, store_error_reason, with_retries


class RecordingRead:
    """A fake read: `size` bytes after `seconds`, recording the reads in flight and the bytes handed back
    and not yet taken by the consumer (taken() says when it takes one)."""

    def __init__(self, size=1000, seconds=0.02, fail=()):
        self.size, self.seconds, self.fail = size, seconds, set(fail)
        self.lock = threading.Lock()
        self.in_flight = self.peak_in_flight = 0
        self.returned = self.consumed = self.peak_held = 0

    def __call__(self, image):
        with self.lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        time.sleep(self.seconds)
        with self.lock:
            self.in_flight -= 1
            if image.path in self.fail:
                raise InputError(image.path, "no such object")
            self.returned += self.size
            self.peak_held = max(self.peak_held, self.returned - self.consumed)
        return image.path.encode().ljust(self.size, b".")

    def taken(self, result):
        if isinstance(result, ImageBytes):
            with self.lock:
                self.consumed += len(result.data)


def images(count):
    return [RemoteImage(f"s3://b/{i:03d}.jpg", f"s3://b/{i:03d}.jpg") for i in range(count)]


def test_fetching_holds_at_most_max_bytes_plus_the_reads_in_flight():
    # A consumer slower than the reads: without the bound, every read started would be held.
    read = RecordingRead(size=1000, seconds=0.02)
    for result in fetch_ahead(images(16), requests=4, max_bytes=1000, read=read):
        read.taken(result)
        time.sleep(0.02)
    assert read.peak_in_flight == 4
    assert read.peak_held <= 1000 + 4 * 1000


def test_fetching_keeps_the_requests_busy_and_never_more():
    read = RecordingRead(size=10, seconds=0.05)
    started = time.monotonic()
    results = list(fetch_ahead(images(32), requests=8, read=read))
    elapsed = time.monotonic() - started
    assert read.peak_in_flight == 8
    # 32 reads of 50 ms, 8 at a time: 0.2 s; one at a time would be 1.6 s.
    assert elapsed < 1.0
    assert [r.path for r in results] == [i.path for i in images(32)]


def test_fetching_keeps_input_order_and_passes_local_paths_and_errors_through():
    class UnevenRead(RecordingRead):
        def __call__(self, image):
            # Later inputs come back first.
            time.sleep(0.002 * (20 - int(image.path[-7:-4])))
            return super().__call__(image)

    items = images(20)
    items[3] = "local/photo.jpg"
    items[7] = InputError("gone.jpg", "No such file or directory")
    read = UnevenRead(size=5, seconds=0, fail={"s3://b/011.jpg"})
    results = list(fetch_ahead(items, requests=4, read=read))
    assert [getattr(r, "path", r) for r in results] == [getattr(i, "path", i) for i in items]
    assert results[3] == "local/photo.jpg"
    assert results[7] is items[7]
    assert isinstance(results[11], InputError) and results[11].reason == "no such object"
    assert results[12].data == b"s3://b/012.jpg"


def test_a_consumer_that_stops_early_does_not_wait_for_the_reads_out():
    read = RecordingRead(size=10, seconds=0.25)
    fetched = fetch_ahead(images(64), requests=4, read=read)
    started = time.monotonic()
    first = next(fetched)
    fetched.close()
    assert first.path == "s3://b/000.jpg"
    # The first read (0.25 s) and the three beside it, not the 15 rounds of reads left.
    assert time.monotonic() - started < 1.0
    time.sleep(0.3)
    assert read.returned <= 8 * 10  # the reads out when it stopped, and none started after


# --- retries: which errors, how many times, how long -----------------------------------------

class StoreError(Exception):
    """An error shaped like botocore's ClientError: the HTTP status in .response."""

    def __init__(self, status, code):
        super().__init__(f"An error occurred ({code}) when calling the GetObject operation: {code}")
        self.response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}


def wrapped(status, code):
    """As s3fs raises it: an OSError whose cause is the store's error."""
    error = OSError(5, f"{code} message")
    error.__cause__ = StoreError(status, code)
    return error


class ClientPayloadError(Exception):
    """Named as aiohttp names a response cut short."""


@pytest.mark.parametrize("error", [wrapped(503, "SlowDown"), wrapped(500, "InternalError"), wrapped(429, "TooMany"),
                                   TimeoutError("read timed out"), ConnectionResetError("reset by peer"),
                                   ClientPayloadError("Response payload is not completed")])
def test_transient_errors_are_retried_with_growing_jittered_waits_then_given_up(error, monkeypatch):
    monkeypatch.setattr(remote, "READ_ATTEMPTS", 4)
    calls, waits = [], []

    def call():
        calls.append(1)
        raise error

    with pytest.raises(type(error)) as raised:
        with_retries(call, sleep=waits.append)
    assert len(calls) == 4
    assert len(waits) == 3
    assert all(0 <= wait <= remote.RETRY_BACKOFF_SECONDS * 2 ** n for n, wait in enumerate(waits))
    assert "after 4 attempts" in store_error_reason(raised.value, "cannot read")


def test_backoff_is_jittered_not_fixed():
    waits = []

    def call():
        raise TimeoutError("timed out")

    for _ in range(5):
        with pytest.raises(TimeoutError):
            with_retries(call, attempts=3, sleep=waits.append)
    assert len(set(waits)) == len(waits) == 10


def test_a_transient_error_that_clears_gives_the_bytes():
    answers = [wrapped(503, "SlowDown"), wrapped(503, "SlowDown"), b"bytes"]

    def call():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert with_retries(call, sleep=lambda seconds: None) == b"bytes"


@pytest.mark.parametrize("error, reason", [
    (FileNotFoundError("images/gone.jpg"), "no such bucket or object"),
    (FileNotFoundError("The specified key does not exist."), "no such bucket or object (The specified key does not exist.)"),
    (PermissionError("Access Denied"), "access denied (Access Denied)"),
    (wrapped(403, "AccessDenied"), "access denied (AccessDenied message)"),
    (wrapped(400, "InvalidRequest"), "HTTP 400: InvalidRequest message"),
    (ValueError("something else"), "something else"),
])
def test_missing_denied_and_other_errors_are_not_retried(error, reason):
    calls = []

    def call():
        calls.append(1)
        raise error

    with pytest.raises(type(error)) as raised:
        with_retries(call, sleep=lambda seconds: pytest.fail("waited for an error that will not clear"))
    assert len(calls) == 1
    assert not is_transient(raised.value)
    assert store_error_reason(raised.value, "cannot read") == reason


def test_an_aiohttp_status_is_read_as_an_http_status():
    class ClientResponseError(Exception):
        status = 503

    assert is_transient(ClientResponseError("503, message='Service Unavailable'"))
    ClientResponseError.status = 403
    assert store_error_reason(ClientResponseError("403, message='Forbidden'"), "x") == \
        "access denied (403, message='Forbidden')"


def test_every_store_gets_timeouts_and_s3s_own_retries_are_turned_down():
    pytest.importorskip("s3fs")
    pytest.importorskip("aiohttp")
    s3, _ = remote.filesystem("s3://bucket/photos/p0.jpg")
    config = s3.config_kwargs
    assert (config["connect_timeout"], config["read_timeout"]) == (remote.CONNECT_TIMEOUT_SECONDS,
                                                                   remote.READ_TIMEOUT_SECONDS)
    assert config["retries"]["total_max_attempts"] == 1 and s3.retries == 1  # botocore's, s3fs's: ours retry
    assert config["max_pool_connections"] >= fetching.DEFAULT_REQUESTS  # no request queues for a connection
    web, _ = remote.filesystem("https://example.com/p0.jpg")
    timeout = web.client_kwargs["timeout"]
    assert (timeout.sock_connect, timeout.sock_read, timeout.total) == (
        remote.CONNECT_TIMEOUT_SECONDS, remote.READ_TIMEOUT_SECONDS, remote.TOTAL_TIMEOUT_SECONDS)
    # gcsfs's filesystem is not made here: it looks for credentials (the metadata server) for seconds.
    assert remote.filesystem_options("gs") == {"requests_timeout": timeout}
