"""An S3-protocol server (moto's server mode, as s3fs's own tests use) and a plain HTTP file server, both
on 127.0.0.1, started and stopped by the tests themselves; and helpers to fill them."""

import collections
import contextlib
import dataclasses
import functools
import http.client
import http.server
import logging
import os
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

# Credentials of the test server's own: moto accepts any, and nothing may reach a real account.
S3_ENVIRONMENT = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                  "AWS_DEFAULT_REGION": "us-east-1", "AWS_SESSION_TOKEN": "testing"}
# Variables that would send the client elsewhere (a profile, another config file).
S3_CLEARED = ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_SECURITY_TOKEN")


class S3Server:
    """moto's S3 server on 127.0.0.1 (a free port), quiet, with a client to fill its buckets."""

    def __init__(self):
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"

    def environment(self):
        """The variables a client (ours, in this process or a child) needs to reach this server."""
        return dict(S3_ENVIRONMENT, AWS_ENDPOINT_URL=self.endpoint)

    @functools.cached_property
    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def new_bucket(self, prefix="images"):
        """A fresh bucket of a unique name, so tests sharing the server never see each other's objects."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=name)
        return name

    def upload_folder(self, folder, bucket, prefix=""):
        """Every file under folder, at the same relative keys under prefix; the keys, sorted."""
        folder = Path(folder)
        keys = []
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            key = prefix + path.relative_to(folder).as_posix()
            self.client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
            keys.append(key)
        return keys

    def close(self):
        self._server.stop()


def use_s3_server(monkeypatch, server):
    """Point this process (and the children it starts) at server; forget filesystems made for another."""
    for name in S3_CLEARED:
        monkeypatch.delenv(name, raising=False)
    for name, value in server.environment().items():
        monkeypatch.setenv(name, value)
    with contextlib.suppress(ImportError):
        import fsspec

        fsspec.filesystem("s3").clear_instance_cache()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


class HttpServer:
    """A plain HTTP server on 127.0.0.1 (a free port) serving a folder's files; url(name) is a file's URL."""

    def __init__(self, folder):
        handler = functools.partial(_QuietHandler, directory=os.fspath(folder))
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}/"

    def url(self, name):
        return self.base + str(name)

    def close(self):
        self._server.shutdown()
        self._server.server_close()


# --- a fault-injecting proxy in front of the S3 server ------------------------------------------

_S3_ERROR = ('<?xml version="1.0" encoding="UTF-8"?>\n'
             "<Error><Code>{code}</Code><Message>{message}</Message><Key>{key}</Key></Error>")
# The S3 error codes a rule's status answers with, as a real store words them.
_S3_CODES = {403: ("AccessDenied", "Access Denied"), 404: ("NoSuchKey", "The specified key does not exist."),
             500: ("InternalError", "We encountered an internal error. Please try again."),
             503: ("SlowDown", "Please reduce your request rate.")}


class _QuietServer(http.server.ThreadingHTTPServer):
    # A client opens its pool's connections at once (32 and more): with the default backlog of 5
    # the kernel drops the rest, and their clients wait a second to try again.
    request_queue_size = 128

    def handle_error(self, request, client_address):
        pass  # a client that hung up (a test's timeout, a cut response): nothing to report


@dataclasses.dataclass
class Rule:
    """What the proxy does to requests whose path contains `key` (and of `method`, when given): answer with
    `status` (an S3 error body), or pass the object's bytes but cut after `cut_to` bytes and drop the
    connection; for the first `times` matching requests only (None: every one)."""

    key: str
    status: int | None = None
    cut_to: int | None = None
    times: int | None = None
    method: str | None = None
    hits: int = 0


class FaultProxy:
    """A plain HTTP proxy on 127.0.0.1 (a free port) in front of an S3 server, adding `delay` seconds to each
    request (a far region's latency) and applying rules (throttling, denial, cut bodies) to chosen keys.

    Point a client at it with AWS_ENDPOINT_URL = proxy.endpoint (environment() gives the variables).
    requests counts the requests seen per (method, path), so tests can tell how often a key was asked for.
    """

    def __init__(self, server, delay=0.0):
        self.server = server
        self.delay = delay
        self.rules = []
        self.requests = collections.Counter()
        self._lock = threading.Lock()
        upstream = urllib.parse.urlsplit(server.endpoint)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real store and the client's pool expect

            def log_message(self, format, *args):
                pass

            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = urllib.parse.urlsplit(self.path).path
                rule = proxy._match(self.command, path)
                if proxy.delay:
                    time.sleep(proxy.delay)
                if rule is not None and rule.status is not None:
                    return self._error(rule.status, path)
                connection = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                    connection.request(self.command, self.path, body=body, headers=headers)
                    response = connection.getresponse()
                    data = response.read()
                except OSError:  # the server stopped (a request still out when a test ended)
                    return self._error(502, path)
                finally:
                    connection.close()
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in ("connection", "transfer-encoding", "content-length", "server", "date"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                if rule is not None and rule.cut_to is not None and self.command == "GET":
                    # The full length announced, fewer bytes sent, the connection dropped: a cut response.
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(data[:rule.cut_to])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _error(self, status, path):
                code, message = _S3_CODES.get(status, ("Error", "error"))
                data = _S3_ERROR.format(code=code, message=message, key=path).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        # Polled often, so that close() returns at once rather than after the default half second.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def add_rule(self, key, **what):
        rule = Rule(key, **what)
        with self._lock:
            self.rules.append(rule)
        return rule

    def _match(self, method, path):
        with self._lock:
            self.requests[method, path] += 1
            for rule in self.rules:
                if rule.key in path and rule.method in (None, method) and (rule.times is None or rule.hits < rule.times):
                    rule.hits += 1
                    return rule
        return None

    def count(self, key, method="GET"):
        """How many requests of method asked for a path containing key."""
        with self._lock:
            return sum(n for (m, path), n in self.requests.items() if m == method and key in path)

    def environment(self):
        return dict(self.server.environment(), AWS_ENDPOINT_URL=self.endpoint)

    def close(self):
        self._server.shutdown()
        self._server.server_close()
