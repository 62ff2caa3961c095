"""Files written whole or not at all: through a hidden temporary file beside the target and a rename."""

import os

from ..errors import OutputError
from ..streams import GuardedStream, display_path, text_safe


def write_file_atomically(path, text, force=False):
    """text to path through a hidden temporary file in the same folder and a rename.

    Without force the file is linked into place, which fails if path exists by then.
    """
    import tempfile

    folder, name = os.path.split(os.path.abspath(path))
    descriptor, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as stream:
            stream.write(text_safe(text))  # a file name that is not UTF-8 shows as U+FFFD
        os.chmod(temporary, 0o666 & ~_umask())
        if force:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)
            except FileExistsError:
                raise
            except OSError:
                # A file system without hard links: the check and the rename are then two steps.
                if os.path.exists(path):
                    raise FileExistsError(path) from None
                os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


class ReplacingFile:
    """A file written whole or not at all: a text stream (a GuardedStream naming path) to a hidden temporary
    file beside path, renamed over path on close(); discard() instead keeps what path held.

    For the outputs eval --resume makes again from every record (--misclassified-out, --confusion-out):
    the earlier file stays in place until the new one is complete.
    """

    def __init__(self, path):
        import tempfile

        self.path = str(path)
        folder, name = os.path.split(os.path.abspath(self.path))
        descriptor, self.temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
        self.stream = GuardedStream(os.fdopen(descriptor, "w", encoding="utf-8", newline=""), self.path)

    def __getattr__(self, name):
        return getattr(self.stream, name)

    def write(self, text):
        return self.stream.write(text)

    def close(self):
        if self.temporary is None:
            return
        try:
            self.stream.close()
            os.chmod(self.temporary, 0o666 & ~_umask())
            os.replace(self.temporary, self.path)
        except OSError as exc:
            raise OutputError(f"{display_path(self.path)}: cannot write: {exc.strerror or exc}") from None
        finally:
            self.discard()

    def discard(self):
        if self.temporary is None:
            return
        temporary, self.temporary = self.temporary, None
        self.stream.failed = True  # what it still holds is not wanted
        try:
            self.stream.close()
        except OutputError:
            pass
        if os.path.exists(temporary):
            os.unlink(temporary)

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, traceback):
        # A run stopped (Ctrl-C) or failed elsewhere still leaves whole records: put them in place. A
        # write that failed here leaves the earlier file instead.
        if self.stream.failed:
            self.discard()
        else:
            self.close()


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
