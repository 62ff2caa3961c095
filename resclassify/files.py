"""Every file the tool writes whole: a hidden temporary beside the target, locked by its writer, renamed into place.

One writer for weights downloads, the ONNX cache and its records, and the output files (the HTML
report, the files `eval --resume` makes again). A file is either there whole or not at all; a
killed writer's temporary is found by its lock (nobody holds it) and removed by the next writer.
"""

import contextlib
import glob
import os
import tempfile
import time
import types
from pathlib import Path

fcntl: types.ModuleType | None
try:
    import fcntl
except ImportError:  # not on this platform: temporaries are then judged by age alone
    fcntl = None


def _read_umask():
    """The process umask, read once. Linux shows it in /proc; elsewhere it is set and put back at import, before
    any thread of ours can be making files (os.umask has no read-only form)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _read_umask()
# A temporary is made private (0600); the finished file gets what any other new file would.
FILE_MODE = 0o666 & ~UMASK

# A writer holds an exclusive flock on its temporary for as long as it writes (the kernel drops it
# when the process dies, however it dies), so a temporary that can be locked has no writer. It
# must also be older than STALE_AGE_S: that covers the instants between creating the file and
# locking it, and between closing it and the rename, and, where flock does not work (no fcntl,
# some network file systems), it is the test on its own.
STALE_AGE_S = 10 * 60


def temporary_pattern(target):
    """The glob of target's temporaries: .<name>.<random>.part beside it."""
    return f".{glob.escape(Path(target).name)}.*.part"


def lock_writer(stream):
    """Take the writer's lock on an open temporary: True if taken, False if another holds it, None if unknown."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # no locks on this file system
        return None
    return True


def remove_stale_temporaries(target, now=None, *, unlocked_is_stale=False):
    """Remove what killed writers of target left beside it: temporaries no process writes to.

    unlocked_is_stale: the caller holds the lock under which target's temporaries are made (an
    ONNX export's, see held_lock), so no live writer can be between making its file and locking
    it: one that nobody holds is stale at any age. Best effort: a file that cannot be checked or
    removed (a read-only cache) is left alone.
    """
    try:
        candidates = list(Path(target).parent.glob(temporary_pattern(target)))
    except OSError:
        return
    remove_unowned_temporaries(candidates, now, unlocked_is_stale=unlocked_is_stale)


def remove_unowned_temporaries(candidates, now=None, *, unlocked_is_stale=False):
    """Remove the temporaries among candidates that no live process holds (see remove_stale_temporaries)."""
    now = time.time() if now is None else now
    for path in candidates:
        try:
            young = now - path.stat().st_mtime < STALE_AGE_S
            if young and not unlocked_is_stale:
                continue
            with open(path, "rb") as stream:
                held = lock_writer(stream)
                if held is False or (held is None and young):
                    continue  # a live writer, however slow (or no locks here to tell)
                # Still the file that was looked at (not one made since under the same name).
                if os.fstat(stream.fileno()).st_ino == path.stat().st_ino:
                    path.unlink()
        except OSError:
            continue


@contextlib.contextmanager
def held_lock(lock_path, on_wait=None):
    """Hold an exclusive lock on lock_path (made if need be) for the with block; one process at a time.

    The kernel drops a flock when its process dies, however it dies, so a lock left by a dead
    process is simply taken. on_wait(), if given, is called once when another process holds it
    and this one waits. The holder removes the file before letting go (so the cache is not
    littered with them); a waiter that then gets the removed file's lock tries again on the
    path. OSError if the file cannot be made (a read-only folder). Without flock (Windows, some
    network file systems) nothing is locked.
    """
    lock_path = Path(lock_path)
    fd = _open_locked(lock_path, on_wait)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock_path)
        os.close(fd)


def _open_locked(lock_path, on_wait):
    waited = False
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            if fcntl is None:
                return fd
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None and not waited:
                    on_wait()
                waited = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:  # no locks on this file system
                return fd
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(lock_path))
            except FileNotFoundError:
                same = False
            if same:
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the holder we waited for removed it: lock the path afresh


class AtomicFile:
    """A file written whole or not at all: a locked hidden temporary beside path, renamed onto path by commit().

    text: a text stream (UTF-8, newlines as written) rather than a binary one. commit(replace=False)
    puts the file in place only if path does not exist by then (FileExistsError). discard() removes
    the temporary and leaves path as it was. As a context manager it commits when the block ends
    normally and discards when it raises (Ctrl-C included). `stream` is the open file to write.
    """

    def __init__(self, path, *, text=True):
        self.path = Path(path)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part",
                                                 dir=self.path.parent)
        self.temporary = Path(temporary)
        try:
            self.stream = (os.fdopen(descriptor, "w", encoding="utf-8", newline="") if text
                           else os.fdopen(descriptor, "wb"))
        except BaseException:
            os.close(descriptor)
            os.unlink(temporary)
            raise
        lock_writer(self.stream)  # held until the stream closes: see remove_stale_temporaries

    def write(self, data):
        return self.stream.write(data)

    def commit(self, *, replace=True):
        """Close the temporary and put it in place of path (or beside nothing, with replace=False)."""
        if self.temporary is None:
            raise ValueError(f"{self.path}: already committed or discarded")
        try:
            self.stream.close()
            os.chmod(self.temporary, FILE_MODE)
            if replace:
                os.replace(self.temporary, self.path)
            else:
                _link_into_place(self.temporary, self.path)
        finally:
            self.discard()

    def discard(self):
        """Drop what was written: path keeps what it held."""
        if self.temporary is None:
            return
        temporary, self.temporary = self.temporary, None
        with contextlib.suppress(OSError):
            self.stream.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, traceback):
        if kind is None:
            self.commit()
        else:
            self.discard()


def _link_into_place(temporary, path):
    """temporary at path, failing with FileExistsError if path exists: a hard link is that check and the move in one."""
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise
    except OSError:
        # A file system without hard links: the check and the rename are then two steps.
        if os.path.exists(path):
            raise FileExistsError(path) from None
        os.replace(temporary, path)


def write_atomically(path, data, *, replace=True):
    """data (str, or bytes) to path whole: through a temporary beside it and a rename (see AtomicFile)."""
    written = AtomicFile(path, text=isinstance(data, str))
    try:
        written.write(data)
    except BaseException:
        written.discard()
        raise
    written.commit(replace=replace)
    return Path(path)
