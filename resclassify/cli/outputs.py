"""The files a command writes: checked before the run (there already? can it be written?) and opened as streams
that name the file when a write fails; record files locked while written (and continued by --resume), whole-run
files replaced at the end, --probabilities-out's array."""

import contextlib
import os

from ..probabilities import open_probabilities_writer, paths_file
from ..streams import GuardedStream, ReplacingFile
from .exits import CommandError


def check_can_write(path, force, replaced=False):
    """Refuse an existing file without --force, and a missing folder or one that cannot be written, before anything
    runs. replaced: the file is written beside and renamed into place (the HTML report), so its folder must take
    a new file even where the file itself exists."""
    if os.path.exists(path) and not force:
        raise CommandError(f"{path}: already exists; pass --force to overwrite it")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CommandError(f"{path}: cannot write: no such folder {folder}")
    try:
        if os.path.exists(path) and not replaced:
            if os.path.isfile(path):  # not a FIFO, which would wait for a reader
                open(path, "ab").close()  # written in place: changes nothing, but fails where it cannot be written
        else:
            # A real file made and removed, not os.access: root passes that where writing fails (/proc, a
            # read-only mount; a folder of another user over NFS).
            import tempfile

            with tempfile.TemporaryFile(dir=folder, prefix=".resclassify-check-"):
                pass
    except OSError as exc:
        raise CommandError(f"{path}: cannot write in {folder}: {exc.strerror or exc}") from None


def open_for_writing(path, force):
    """The file, opened for writing as a GuardedStream: a full disk is an error that names it."""
    try:
        # "x" rather than "w" without --force: a file that appeared since the check is kept.
        return GuardedStream(open(path, "w" if force else "x", encoding="utf-8", newline=""), path)
    except FileExistsError:
        raise CommandError(f"{path}: already exists; pass --force to overwrite it") from None
    except OSError as exc:
        raise CommandError(f"{path}: cannot write: {exc.strerror or exc}") from None


def open_record_output(path, how):
    """A record file (predict --output, eval --predictions-out) opened as records.open_record_file does ("new",
    "replace" or "append"), locked while this run writes it, as a GuardedStream: a full disk names it."""
    from ..records import open_record_file

    from ..parquet_records import is_parquet, journal_path

    try:
        return GuardedStream(open_record_file(path, how), path)
    except FileExistsError:
        if is_parquet(path):
            raise CommandError(f"{journal_path(path)}: an unfinished run's records are there; pass --resume to "
                               "continue it, or --force to start over") from None
        raise CommandError(f"{path}: already exists; pass --force to overwrite it") from None
    except OSError as exc:
        raise CommandError(f"{path}: cannot write: {exc.strerror or exc}") from None


def open_for_appending(path):
    """The record file, opened to add records (--resume) and locked against other runs, as a GuardedStream."""
    return open_record_output(path, "append")


def lock_early(path, resume):
    """--resume of a file that exists: open and lock it now, before anything slow starts, so that a second run
    on the same file stops at once. Entered, the locked stream, or None where the file is opened and locked later,
    where it is first read or written."""
    if resume and os.path.exists(path):
        return open_for_appending(path)
    return contextlib.nullcontext()


def open_whole_run_output(path, force, resume):
    """A file that holds what the whole run found (--misclassified-out, --confusion-out): after --resume, made again
    from every record and put in place of the earlier run's at the end; else written as the run goes."""
    if not resume:
        return open_for_writing(path, force)
    try:
        return ReplacingFile(path)
    except OSError as exc:
        raise CommandError(f"{path}: cannot write: {exc.strerror or exc}") from None


def probability_files(path):
    return [] if path is None else [path, paths_file(path)]


@contextlib.contextmanager
def opened_probabilities(path, rows, classes, force):
    """--probabilities-out's writer (None without the option), closed however the run ends."""
    if path is None:
        yield None
        return
    try:
        writer = open_probabilities_writer(path, rows, classes, force)
    except FileExistsError as exc:
        raise CommandError(f"{exc.filename}: already exists; pass --force to overwrite it") from None
    except OSError as exc:
        raise CommandError(f"{exc.filename or path}: cannot write: {exc.strerror or exc}") from None
    try:
        yield writer
    finally:
        writer.close()
