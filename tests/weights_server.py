"""A small HTTP(S) server on 127.0.0.1 (port 0) that serves files the tests make, and misbehaves on request."""

import http.server
import ssl
import threading
import urllib.parse


class WeightsServer:
    """Serves files[path] = bytes; `cut[path] = n` sends the full Content-Length but only n bytes;
    `stall[path] = n` sends n bytes, then nothing more until the server closes (a download in progress).

    Requests are recorded (path as the handler saw it) so tests can tell whether the network was
    touched. Works as an HTTP proxy too: a request line with an absolute URL is served by its path.
    """

    def __init__(self, tls_context=None):
        self.files = {}
        self.cut = {}
        self.stall = {}
        self.requests = []
        self.closing = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                path = urllib.parse.urlparse(self.path).path
                body = server.files.get(path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if path in server.stall:
                    self.wfile.write(body[: server.stall[path]])
                    self.wfile.flush()
                    server.closing.wait()
                    self.close_connection = True
                    return
                if path in server.cut:
                    self.wfile.write(body[: server.cut[path]])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls_context is not None:
            self.httpd.socket = tls_context.wrap_socket(self.httpd.socket, server_side=True)
        self.scheme = "https" if tls_context is not None else "http"
        # shutdown() waits for the loop's next poll: 0.5 s by default, paid by every test that starts a server.
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    @property
    def port(self):
        return self.httpd.server_address[1]

    def url(self, path="/"):
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def close(self):
        self.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def tls_server_context(cert_file, key_file):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context
