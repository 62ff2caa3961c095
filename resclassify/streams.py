"""Text that leaves, made safe: streams whose write errors name their file (and one that replaces its file
whole); file names shown on one line (escaped) or made valid UTF-8 (for JSON and CSV)."""

import base64
import os
import re

from .errors import OutputError
from .files import AtomicFile


class GuardedStream:
    """A text stream whose write errors name it: "stdout: cannot write: No space left on device".

    A closed pipe stays a BrokenPipeError (the reader went away: not an error worth a line).
    After a failure, closing the stream drops what it still holds instead of failing again.
    """

    def __init__(self, stream, name):
        self.stream = stream
        self.name = name
        self.failed = False

    def _guard(self, operation, *args):
        try:
            return operation(*args)
        except BrokenPipeError:
            self.failed = True
            raise
        except OSError as exc:
            self.failed = True
            raise OutputError(f"{display_path(self.name)}: cannot write: {exc.strerror or exc}") from None

    def write(self, text):
        return self._guard(self.stream.write, text)

    def flush(self):
        return self._guard(self.stream.flush)

    def close(self):
        try:
            self.stream.close()
        except OSError:
            if not self.failed:
                self.failed = True
                raise OutputError(f"{display_path(self.name)}: cannot write: disk full or I/O error") from None

    def write_bytes(self, data):
        """Bytes straight to the byte stream below (after what was written as text)."""
        self._guard(self.stream.flush)
        return self._guard(self.stream.buffer.write, data)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __getattr__(self, name):
        # encoding, isatty(), fileno(): the stream's own.
        return getattr(self.stream, name)


# What a file name may hold that a terminal line or a text format cannot show as it is: control
# characters (a newline would split the line) and the lone surrogates Python uses for bytes that
# are not UTF-8 (os.fsdecode).
_NOT_SHOWABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def display_path(path):
    """A path as one printable line: control characters and undecodable bytes as backslash escapes.

    "a\nb.jpg" shows as a\\nb.jpg, the byte 0xE9 of a Latin-1 name as \\xe9. Names that need no
    escape are shown as they are; in one that does, a backslash is doubled, so it reads one way.
    """
    path = str(path)
    if not _NOT_SHOWABLE.search(path):
        return path
    shown = []
    for character in path:
        code = ord(character)
        if character == "\\":
            shown.append("\\\\")
        elif character in _SHORT_ESCAPES:
            shown.append(_SHORT_ESCAPES[character])
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, as os.fsdecode keeps it
            shown.append(f"\\x{code - 0xDC00:02x}")
        elif _NOT_SHOWABLE.match(character):
            shown.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            shown.append(character)
    return "".join(shown)


def _is_text(value):
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def text_safe(value):
    """value with every string made valid UTF-8: bytes that were not UTF-8 become U+FFFD."""
    if isinstance(value, str):
        return value if _is_text(value) else value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if isinstance(value, dict):
        return {key: text_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [text_safe(item) for item in value]
    return value


def json_record(record):
    """A record ready for JSON: valid UTF-8 throughout; a path whose name is not UTF-8 keeps its
    exact bytes in path_base64, right after path (which shows them as U+FFFD)."""
    path = record.get("path")
    if isinstance(path, str) and not _is_text(path):
        raw = os.fsencode(path)
        fields = {}
        for key, value in record.items():
            fields[key] = value
            if key == "path":
                fields["path_base64"] = base64.b64encode(raw).decode("ascii")
        record = fields
    return text_safe(record)


def escape_path(path):
    """A path on one line: a backslash is written \\\\ and a newline \\n, so every line is one path."""
    return str(path).replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


class ReplacingFile:
    """A file written whole or not at all: a text stream (a GuardedStream naming path) to a files.AtomicFile,
    put in place of path on close(); discard() instead keeps what path held.

    For the outputs eval --resume makes again from every record (--misclassified-out, --confusion-out):
    the earlier file stays in place until the new one is complete.
    """

    def __init__(self, path):
        self.path = str(path)
        self.file = AtomicFile(path)
        self.stream = GuardedStream(self.file.stream, self.path)

    def __getattr__(self, name):
        return getattr(self.stream, name)

    def write(self, text):
        return self.stream.write(text)

    def close(self):
        if self.file is None:
            return
        written, self.file = self.file, None
        try:
            self.stream.close()
            written.commit()
        except OSError as exc:
            raise OutputError(f"{display_path(self.path)}: cannot write: {exc.strerror or exc}") from None
        finally:
            written.discard()

    def discard(self):
        if self.file is None:
            return
        written, self.file = self.file, None
        self.stream.failed = True  # what it still holds is not wanted
        try:
            self.stream.close()
        except OutputError:
            pass
        written.discard()

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, traceback):
        # A run stopped (Ctrl-C) or failed elsewhere still leaves whole records: put them in place. A
        # write that failed here leaves the earlier file instead.
        if self.stream.failed:
            self.discard()
        else:
            self.close()
