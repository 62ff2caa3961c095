"""Terminals that are not UTF-8: text for people degraded to what the encoding can show, never a crash;
CSV on such a stdout written as UTF-8 all the same."""

import codecs

from ..streams import GuardedStream

# Terminals that are not UTF-8 (PYTHONIOENCODING=ascii, a Latin-1 locale, LC_ALL=C where Python
# does not switch to UTF-8): text for people degrades to what the encoding can show, never a
# crash. Our own typography becomes its ASCII look-alike (tables' box-drawing becomes ASCII in
# rich itself); any other character a backslash escape (café shows as caf\xe9), as display_path
# writes control characters; a byte of a file name that was not UTF-8 is written back as it
# was, as Python's own surrogateescape does. Results are never degraded: JSON is ASCII with
# escapes, and CSV on stdout is written as UTF-8 whatever the terminal (see exact_stream).

TERMINAL_ERRORS = "resclassify.terminal"
_ASCII_LOOKALIKES = {"\u2013": "-", "\u2014": "--", "\u2026": "...", "\u00b7": "|", "\u2192": "->", "\u00d7": "x",
                     "\u00b1": "+-", "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'}


def _terminal_replacement(error):
    if not isinstance(error, UnicodeEncodeError):
        raise error
    # One character at a time: the codec asks again for the next, and a raw byte (bytes) and
    # an escape (str) cannot share one answer.
    character = error.object[error.start]
    code = ord(character)
    if 0xDC80 <= code <= 0xDCFF:
        return bytes([code - 0xDC00]), error.start + 1
    if character in _ASCII_LOOKALIKES:
        shown = _ASCII_LOOKALIKES[character]
    elif code < 0x100:
        shown = f"\\x{code:02x}"
    elif code < 0x10000:
        shown = f"\\u{code:04x}"
    else:
        shown = f"\\U{code:08x}"
    return shown, error.start + 1


codecs.register_error(TERMINAL_ERRORS, _terminal_replacement)


def _writes_utf(encoding):
    try:
        return codecs.lookup(encoding or "utf-8").name.startswith("utf-")
    except LookupError:
        return False


def degrade_for_terminal(*streams):
    """Make the standard text streams show what their encoding cannot as TERMINAL_ERRORS says."""
    for stream in streams:
        if not _writes_utf(getattr(stream, "encoding", None)) and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors=TERMINAL_ERRORS)


def shown_in(text, encoding):
    """text as a stream in this encoding will show it (for rich, so that it measures what is shown)."""
    text = str(text)
    if _writes_utf(encoding):
        return text
    return text.encode(encoding, TERMINAL_ERRORS).decode(encoding, "surrogateescape")


class _Utf8Writes:
    """A text stream written as UTF-8 bytes on its byte stream, whatever its own encoding."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        data = text.encode("utf-8", "surrogateescape")
        if isinstance(self.stream, GuardedStream):
            return self.stream.write_bytes(data)
        self.stream.flush()
        return self.stream.buffer.write(data)

    def flush(self):
        self.stream.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


def exact_stream(stream):
    """stream, or where it is not UTF-8 (and has bytes below) one that writes UTF-8 there: a CSV on
    stdout is a file format, to be read back exactly, not text for one terminal."""
    if _writes_utf(getattr(stream, "encoding", None)) or not hasattr(stream, "buffer"):
        return stream
    return _Utf8Writes(stream)
