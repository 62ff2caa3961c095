"""Prediction record files: what identifies the run behind a record, reading JSON Lines or CSV record
files back (for --resume and eval --from-predictions), a half-written last record dropped, opening
one to write, locked against a second run, and continuing an interrupted run's file (Resumption)."""

import collections
import csv
import functools
import hashlib
import json
import os
import stat
from dataclasses import dataclass, field

from .errors import RecordFileError
from .parquet_records import import_pyarrow, is_parquet, journal_path, read_parquet
from .record_formats import LABEL_SEPARATOR, LIST_SEPARATOR, PREDICT_CSV_COLUMNS, file_format
from .sources.remote import is_url, read_file

# A weights file is known by its name and a fingerprint of its bytes: a hash of its size and of
# FINGERPRINT_SAMPLES evenly spaced pieces. Retrained weights differ nearly everywhere, so the
# pieces tell them apart, and reading 64 KiB costs nothing beside loading the file.
FINGERPRINT_SAMPLES = 16
FINGERPRINT_PIECE_BYTES = 4096


# ---------------------------------------------------------------------------------------------
# Which run a record came from.

def file_fingerprint(path):
    """A short hex fingerprint of a file's bytes (size and sampled pieces); None if it cannot be read."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return _fingerprint(os.path.realpath(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _fingerprint(path, size, mtime_ns):
    digest = hashlib.sha256(str(size).encode())
    try:
        with open(path, "rb") as stream:
            for n in range(FINGERPRINT_SAMPLES):
                stream.seek(max(0, size - FINGERPRINT_PIECE_BYTES) * n // max(1, FINGERPRINT_SAMPLES - 1))
                digest.update(stream.read(FINGERPRINT_PIECE_BYTES))
    except OSError:
        return None
    return digest.hexdigest()[:16]


def run_identity(classifier, preprocessing, top_k):
    """What a record carries as "run", beside its model's name, so that files from different runs are never mixed.

    Another precision, weights file, class count, preprocessing or top-k makes another run (and so
    does another model): they change the answers. The runtime (backend, device) does not: ONNX
    Runtime, TensorFlow and JAX on a CPU or a GPU move probabilities by rounding only, so shards
    and resumes on different kinds of node belong to one run. Each record still names its backend.
    """
    return {
        "precision": classifier.precision,
        "weights": os.path.basename(str(classifier.weights)),
        "weights_fingerprint": file_fingerprint(classifier.weights),
        "classes": len(classifier.classes),
        "preprocessing": preprocessing.as_dict(),
        "top_k": top_k,
    }


def identity_of_run(classifier, preprocessing, top_k):
    """The identity of this run's records, as identity_of reads it back from one."""
    return {"model": classifier.name, **run_identity(classifier, preprocessing, top_k)}


def identity_of(record):
    """The run a record came from ({"model", ...run}); None for one with no model output (an error).

    The record's backend is not part of it (see run_identity)."""
    if "run" not in record:
        return None
    return {"model": record.get("model"), **record["run"]}


def _flattened(identity):
    flat = {}
    for key, value in identity.items():
        if isinstance(value, dict):
            flat.update({f"{key} {inner}": v for inner, v in value.items()})
        else:
            flat[key] = value
    return flat


def differences(first, second):
    """[(field, first's value, second's value)] where two run identities differ, field by field."""
    a, b = _flattened(first), _flattened(second)
    return [(key, a.get(key), b.get(key)) for key in dict.fromkeys([*a, *b]) if a.get(key) != b.get(key)]


def describe_differences(found, here, there):
    """One phrase: "top_k 3 in here, 5 in there; preprocessing size 256 in here, 224 in there"."""
    return "; ".join(f"{key} {_shown(a)} in {here}, {_shown(b)} in {there}" for key, a, b in found)


def _shown(value):
    return "none" if value is None else str(value)


def check_earlier_records(records, paths, identity, source):
    """How many records each input already has (a Counter), after checking that they belong to this run.

    An earlier run's file may be continued (--resume) only when every record is for one of this
    run's inputs, and every classified one came from the same model and run (identity: "model"
    plus run_identity); else RecordFileError naming source and the difference.
    """
    wanted = collections.Counter(paths)
    found = collections.Counter()
    for record in records:
        path = record["path"]
        found[path] += 1
        if found[path] > wanted[path]:
            if not wanted[path]:
                raise RecordFileError(f"{source} holds {path}, which is not among this run's inputs (other inputs, "
                                      "--limit or --shard?)")
            raise RecordFileError(f"{source} holds {path} {found[path]} times, more than this run's inputs do")
        earlier = identity_of(record)
        if earlier is not None and earlier != identity:
            raise RecordFileError(f"{source} was written by another run: "
                                  f"{describe_differences(differences(earlier, identity), source, 'this run')}; "
                                  "write to another file, or pass --force instead of --resume to start over")
    return found


# ---------------------------------------------------------------------------------------------
# Reading record files back.

@dataclass
class RecordFile:
    """A record file as read back: its whole records, and where a half-written last record began."""

    path: str
    records: list = field(default_factory=list)
    # Bytes of the file that hold whole records (and the CSV header): a resumed run cuts the
    # file here and appends; anything after is what a killed run left half-written.
    whole_bytes: int = 0
    cut_off: bool = False
    header: list | None = None  # CSV: the header row, if the file has a whole one
    # .parquet: "journal" where the records come from a run's journal (an unfinished run: path names the
    # journal), "parquet" where from a finished file (continuing it copies them into a journal first).
    parquet: str | None = None

    @property
    def kind(self):
        """"eval" when its records carry a true class, "predict" when they do not, None when empty."""
        if not self.records:
            return None
        return "eval" if "true" in self.records[0] else "predict"


def read_record_file(path):
    """Read a --predictions-out or predict --output file (.jsonl or .csv) back into records.

    A last line without its newline, or a last record that does not parse or is missing rows, is
    what a killed run leaves: it is left out (cut_off) and whole_bytes says where it began.
    Anything else that does not parse is a RecordFileError naming the file and line.
    A .parquet file is read from its journal where an unfinished run left one (see parquet_records).
    """
    kind = _file_format(path)
    if is_url(str(path)):
        return _read_remote_file(str(path), kind)
    if kind == "parquet":
        return _read_parquet_file(str(path))
    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except FileNotFoundError:
        return RecordFile(str(path))
    except OSError as exc:
        raise RecordFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if kind == "csv":
        return _read_csv(str(path), data)
    return _read_jsonl(str(path), data)


def _read_remote_file(url, kind):
    """A record file behind a URL (eval --from-predictions, report): read whole, read-only; a finished run's."""
    try:
        data = read_file(url)
    except FileNotFoundError:
        raise RecordFileError(f"{url}: no such file") from None
    except OSError as exc:
        raise RecordFileError(f"{url}: cannot read: {exc.strerror or exc}") from None
    if kind == "parquet":
        return RecordFile(url, read_parquet(url, data), len(data), parquet="parquet")
    return _read_csv(url, data) if kind == "csv" else _read_jsonl(url, data)


def _read_parquet_file(path):
    journal = journal_path(path)
    if os.path.exists(journal) and (os.path.getsize(journal) > 0 or not os.path.exists(path)):
        # The journal of a run that did not finish: it holds every record (a resumed finished file's too).
        try:
            with open(journal, "rb") as stream:
                data = stream.read()
        except OSError as exc:
            raise RecordFileError(f"{journal}: cannot read: {exc.strerror or exc}") from None
        result = _read_jsonl(journal, data)
        result.parquet = "journal"
        return result
    if not os.path.exists(path):
        return RecordFile(path)
    return RecordFile(path, read_parquet(path), os.path.getsize(path), parquet="parquet")


def _file_format(path):
    try:
        return file_format("eval-records", path)
    except ValueError as exc:
        raise RecordFileError(str(exc)) from None


def _lines(data):
    """(line number, start offset, bytes) of each line ending in \n; whether an unterminated tail was left out.

    Split at \n alone: a carriage return is no line end here (the writers end lines with \n,
    and a CSV field may hold a file name with \r in it); a CSV row whose quoted field holds
    \n spans lines, which csv.reader joins back (as it does for a file opened with newline="").
    """
    pieces = data.split(b"\n")
    lines, start = [], 0
    for number, piece in enumerate(pieces[:-1], start=1):
        lines.append((number, start, piece + b"\n"))
        start += len(piece) + 1
    return lines, pieces[-1] != b""


def _read_jsonl(path, data):
    lines, cut_off = _lines(data)
    result = RecordFile(path, cut_off=cut_off)
    for position, (number, start, line) in enumerate(lines):
        if not line.strip():
            result.whole_bytes = start + len(line)
            continue
        try:
            record = json.loads(line.decode("utf-8", errors="surrogateescape"))
            if not isinstance(record, dict) or "path" not in record:
                raise ValueError("not a record with a path")
        except ValueError as exc:
            if position == len(lines) - 1:
                # A last line that does not parse was cut short (a crash can leave it padded).
                result.cut_off = True
                break
            raise RecordFileError(f"{path}: line {number}: not a prediction record: {exc}") from None
        bad = _non_integer_index(record)
        if bad is not None:
            # Whole JSON, so not a killed run's: a file made or changed by hand, refused wherever it stands.
            raise RecordFileError(f"{path}: line {number}: the class index {bad!r} is not an integer")
        result.records.append(record)
        result.whole_bytes = start + len(line)
    return result


def _non_integer_index(record):
    """The first class index of a record (true class, predictions) that is not an integer, else None.

    The figures count classes by index and the report shows it: a string there is no class.
    """
    classes = [record["true"]] if isinstance(record.get("true"), dict) else []
    classes += [p for p in record.get("predictions") or () if isinstance(p, dict)]
    for cls in classes:
        index = cls.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            return index
    return None


def _read_csv(path, data):
    lines, cut_off = _lines(data)
    result = RecordFile(path, cut_off=cut_off)
    ends = []  # byte offset after each row

    def text_lines():
        for _, start, line in lines:
            ends.append(start + len(line))
            yield line.decode("utf-8", errors="surrogateescape")

    rows = []  # (row, end offset)
    # Strict: a file that ends inside a quoted field is an error here, not a short last row.
    reader = csv.reader(text_lines(), strict=True)
    try:
        for row in reader:
            rows.append((row, ends[-1]))
    except csv.Error as exc:
        if len(ends) < len(lines):
            raise RecordFileError(f"{path}: line {reader.line_num}: not CSV: {exc}") from None
        result.cut_off = True  # an open quote at the end: the last row was cut short
    if not rows:
        return result
    header, header_end = rows[0]
    result.header, result.whole_bytes = header, header_end
    if header == list(PREDICT_CSV_COLUMNS):
        _predict_rows(result, rows[1:])
    elif header[:4] == ["path", "true_index", "true_wnid", "true_label"]:
        _eval_rows(result, header, rows[1:])
    else:
        raise RecordFileError(f"{path}: line 1: not a resclassify record file (its columns are "
                              f"{', '.join(header)})")
    return result


def _row_or_cut(result, header, row, last):
    if len(row) == len(header):
        return dict(zip(header, row))
    if last:
        result.cut_off = True
        return None
    raise RecordFileError(f"{result.path}: a row has {len(row)} columns, not {len(header)}: {row[:1]}")


def _run_cell(result, text):
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise RecordFileError(f"{result.path}: the run column holds {text!r}, not JSON") from None


def _predict_rows(result, rows):
    """Rows of predict's CSV (one per image and rank) grouped back into records."""
    groups = []  # [record, end offset, ranks expected]
    for position, (row, end) in enumerate(rows):
        cells = _row_or_cut(result, PREDICT_CSV_COLUMNS, row, position == len(rows) - 1)
        if cells is None:
            break
        if cells["error"]:
            groups.append([{"path": cells["path"], "error": cells["error"]}, end, 0])
            continue
        try:
            prediction = {"rank": int(cells["rank"]), "index": int(cells["index"]), "wnid": cells["wnid"] or None,
                          "label": cells["label"], "probability": float(cells["probability"])}
        except ValueError as exc:
            if position == len(rows) - 1:
                result.cut_off = True
                break
            raise RecordFileError(f"{result.path}: the row of {cells['path']} does not read back: {exc}") from None
        previous = groups[-1][0] if groups else None
        if (prediction["rank"] == 1 or previous is None or "error" in previous
                or previous["path"] != cells["path"]):
            run = _run_cell(result, cells["run"])
            record = {"path": cells["path"], "model": cells["model"]}
            if cells["backend"]:
                record["backend"] = cells["backend"]
            record["predictions"] = []
            if run is not None:
                record["run"] = run
            groups.append([record, end, min(run["top_k"], run["classes"]) if run else 1])
        groups[-1][0]["predictions"].append(prediction)
        groups[-1][1] = end
    if groups and "error" not in groups[-1][0] and len(groups[-1][0]["predictions"]) < groups[-1][2]:
        groups.pop()  # the rows of the last image stop short of its top-k: a killed run's
        result.cut_off = True
    for record, end, _ in groups:
        result.records.append(record)
        result.whole_bytes = end


def _split(text, separator=LIST_SEPARATOR):
    return text.split(separator) if text else []


def _eval_rows(result, header, rows):
    """Rows of eval's --predictions-out CSV turned back into the records it was written from."""
    hit_columns = [name for name in header if name.startswith("hit@")]
    for position, (row, end) in enumerate(rows):
        cells = _row_or_cut(result, header, row, position == len(rows) - 1)
        if cells is None:
            break
        try:
            record = {"path": cells["path"]}
            for name in ("model", "backend"):
                if cells.get(name):
                    record[name] = cells[name]
            record["true"] = {"index": int(cells["true_index"]), "wnid": cells["true_wnid"] or None,
                              "label": cells["true_label"]}
            if "real_labels" in cells:
                record["real_labels"] = [int(i) for i in _split(cells["real_labels"])]
            if cells["error"]:
                record["error"] = cells["error"]
            else:
                indices = [int(i) for i in _split(cells["predicted_indices"])]
                wnids = _split(cells.get("predicted_wnids", "")) or [""] * len(indices)
                labels = _split(cells["predicted_labels"], LABEL_SEPARATOR)
                probabilities = [float(p) for p in _split(cells["predicted_probabilities"])]
                if not len(indices) == len(wnids) == len(labels) == len(probabilities):
                    raise ValueError("the predicted_* columns list different numbers of classes (a label with "
                                     f"{LABEL_SEPARATOR} in it? write .jsonl files instead)")
                record["predictions"] = [
                    {"rank": rank, "index": index, "wnid": wnid if wnid and wnid != "-" else None, "label": label,
                     "probability": probability}
                    for rank, (index, wnid, label, probability) in enumerate(
                        zip(indices, wnids, labels, probabilities), start=1)]
                record.update({name: cells[name] == "1" for name in hit_columns})
            run = _run_cell(result, cells.get("run", ""))
            if run is not None:
                record["run"] = run
        except (ValueError, KeyError) as exc:
            if position == len(rows) - 1:
                result.cut_off = True
                break
            raise RecordFileError(f"{result.path}: the row of {cells.get('path')} does not read back: {exc}") from None
        result.records.append(record)
        result.whole_bytes = end


# ---------------------------------------------------------------------------------------------
# Writing record files: one run at a time.

# How a run opens its record file: a new file (refused if one appeared meanwhile), an existing
# one emptied (--force), or one continued (--resume).
OPEN_FLAGS = {"new": os.O_CREAT | os.O_EXCL, "replace": os.O_CREAT, "append": os.O_CREAT | os.O_APPEND}


def open_record_file(path, how):
    """path opened to write records ("new", "replace" or "append"), locked against other runs while it stays open.

    The lock is flock on the file itself: the file is written in place (never renamed over), and
    the kernel drops the lock when its holder dies, so a killed run never blocks the next. The
    file is locked before it is emptied, so a refused run leaves another run's file as it was;
    --resume takes the lock before reading the file. A file another run holds is a
    RecordFileError naming it (and the holder's pid, where /proc/locks tells it).
    """
    import fcntl

    if is_parquet(path):
        import_pyarrow()  # missing: one error now, not a journal left behind by a run that cannot finish
        # Written through its journal, locked in its place (see parquet_records), made into the file at the end.
        path = journal_path(path)
    descriptor = os.open(path, os.O_WRONLY | OPEN_FLAGS[how], 0o666)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock_holder(descriptor)
            raise RecordFileError(f"{path}: is being written by another run{f' (pid {holder})' if holder else ''}; "
                                  "wait for it to end, or write to another file") from None
        # Only a regular file is emptied: a device (/dev/null, /dev/full) refuses truncation, as `>` never asks it.
        if how == "replace" and stat.S_ISREG(os.fstat(descriptor).st_mode):
            os.ftruncate(descriptor, 0)
        return open(descriptor, "a" if how == "append" else "w", encoding="utf-8", newline="")
    except BaseException:
        os.close(descriptor)
        raise


def lock_holder(descriptor):
    """The pid of a process that holds a flock on the open file, from Linux's /proc/locks; None if unknown."""
    stat = os.fstat(descriptor)
    # "1: FLOCK  ADVISORY  WRITE 4242 08:01:1234567 0 EOF": the device as hex major:minor, then the inode.
    key = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as locks:
            for line in locks:
                fields = line.split()
                if "FLOCK" in fields and key in fields and "->" not in fields:
                    pid = fields[fields.index(key) - 1]
                    if pid.isdigit() and int(pid) not in (0, os.getpid()):
                        return int(pid)
    except OSError:
        pass
    return None


def cut_to_whole_records(record_file):
    """Drop what a killed run left half-written at the end of the file, so that appending continues it.

    A finished .parquet file cannot be appended to: its records are copied into a journal, which the run
    continues and makes into the file again at its end."""
    if record_file.parquet == "parquet":
        with open(journal_path(record_file.path), "w", encoding="utf-8") as journal:
            journal.writelines(json.dumps(record, allow_nan=False) + "\n" for record in record_file.records)
        return
    if os.path.exists(record_file.path) and os.path.getsize(record_file.path) != record_file.whole_bytes:
        with open(record_file.path, "r+b") as stream:
            stream.truncate(record_file.whole_bytes)


# ---------------------------------------------------------------------------------------------
# Continuing an interrupted run's record file (--resume; classify's and evaluate's resume=).

@dataclass
class Resumption:
    """An earlier, interrupted run's record file, checked to belong to this run and cut to its whole records:
    what continuing it needs. The run appends its new records to the file."""

    file: RecordFile
    identity: dict  # the run it was checked against (identity_of_run)
    paths: tuple  # the inputs it was checked against
    done: collections.Counter  # how many records each input already has

    @property
    def path(self):
        return self.file.path

    @property
    def records(self):
        return self.file.records

    @property
    def header(self):
        """The CSV header the file already has; None where the writer appending to it writes one first."""
        return self.file.header

    @property
    def failed(self):
        """How many of its records are inputs that could not be read: they count toward the run's failures."""
        return sum(1 for record in self.file.records if "error" in record)

    def remaining(self, items, key=lambda item: item):
        """The items (in order) the file holds no record of: an input listed twice needs two records."""
        left = collections.Counter(self.done)
        todo = []
        for item in items:
            path = key(item)
            if left[path]:
                left[path] -= 1
            else:
                todo.append(item)
        return todo

    def covers(self, paths, identity):
        """Whether it was checked for exactly this run: its inputs and identity."""
        return self.identity == identity and self.paths == tuple(paths)


def resume_records(path, paths, identity, check=check_earlier_records):
    """The record file at path, read back to be continued by a run over paths (its identity: identity_of_run).

    Its records are checked (check, records.check_earlier_records or evaluation's stricter one)
    before a half-written last record is cut off the file, so a file that is refused stays whole:
    RecordFileError naming the file and what differs. A file that does not exist is an empty one.
    """
    existing = read_record_file(path)
    paths = tuple(paths)
    done = collections.Counter(check(existing.records, paths, identity, existing.path))
    cut_to_whole_records(existing)
    return Resumption(existing, identity, paths, done)


def resumption_for(resume, paths, identity, check=check_earlier_records):
    """resume= as classify and evaluate take it (a record file's path, or a Resumption made of it) for this run:
    a Resumption checked for it is used as it is, a path (or one checked for another run) is checked now."""
    if isinstance(resume, Resumption):
        if resume.covers(paths, identity):
            return resume
        resume = resume.path
    return resume_records(os.fspath(resume), paths, identity, check)
