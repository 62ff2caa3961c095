"""An S3-protocol server (moto's server mode, as s3fs's own tests use) and a plain HTTP file server, both
on 127.0.0.1, started and stopped by the tests themselves; and helpers to fill them."""

import contextlib
import functools
import http.server
import logging
import os
import threading
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
