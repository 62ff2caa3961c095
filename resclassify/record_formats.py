"""Machine-readable formats (JSON Lines, JSON, CSV): their names, the writers of records and reports, and
the one table of record files (which kinds come in which format, chosen by the file's extension).

Every writer is writer(stream, **context), then write(item) for each item, then close().
"""

import csv
import io
import json
import os

from .parquet_records import ParquetRecordWriter
from .streams import json_record, text_safe

FORMATS = ("table", "jsonl", "json", "csv", "parquet")  # every format name, in the order help lists them

# CSV cells that hold lists: numbers and WordNet ids are separated by spaces; labels by "|",
# since a user's own class names may hold spaces.
LIST_SEPARATOR = " "
LABEL_SEPARATOR = "|"

PREDICT_CSV_COLUMNS = ("path", "model", "backend", "rank", "index", "wnid", "label", "probability", "error", "run")


def eval_csv_columns(ks, real_labels=False):
    """The columns of eval's --predictions-out CSV, one row per image."""
    columns = ["path", "true_index", "true_wnid", "true_label"] + (["real_labels"] if real_labels else [])
    columns += [f"hit@{k}" for k in ks]
    columns += ["predicted_indices", "predicted_wnids", "predicted_labels", "predicted_probabilities", "error",
                "model", "backend", "run"]
    return columns


# ---------------------------------------------------------------------------------------------
# Records: JSON Lines, a JSON array, CSV (predict's rows per rank, eval's row per image).

class JsonLinesWriter:
    """One JSON object a line, flushed as each record comes."""

    def __init__(self, stream, **context):
        self.stream = stream

    def write(self, record):
        self.stream.write(json.dumps(json_record(record), allow_nan=False) + "\n")
        self.stream.flush()

    def close(self):
        pass


class JsonArrayWriter:
    """One JSON array, written element by element so nothing waits for the whole run."""

    def __init__(self, stream, **context):
        self.stream = stream
        self.count = 0

    def write(self, record):
        self.stream.write(("[\n" if self.count == 0 else ",\n") + json.dumps(json_record(record), allow_nan=False))
        self.stream.flush()
        self.count += 1

    def close(self):
        self.stream.write("[]\n" if self.count == 0 else "\n]\n")
        self.stream.flush()


class _CsvLines:
    """Where csv.writer writes: each row made with \r\n, written with \n.

    csv.writer quotes a field only for the characters of its own line ending, so with "\n" a
    file name holding a carriage return would go out bare, and every CSV reader (ours, Python's
    with newline="", a spreadsheet) would end the row there. Made with \r\n, such a field is
    quoted; the files still end their lines with \n alone, as they always have.
    """

    def __init__(self, stream):
        self.stream = stream

    def write(self, row):
        return self.stream.write(row[:-2] + "\n" if row.endswith("\r\n") else row)


def csv_writer(stream, fieldnames, **options):
    """A csv.DictWriter onto stream, one line a row ending in \n, every field that holds \r or \n quoted."""
    return csv.DictWriter(_CsvLines(stream), fieldnames=fieldnames, lineterminator="\r\n", **options)


def run_cell(record):
    """A record's run identity as one CSV cell: compact JSON, read back by records.read_record_file."""
    run = record.get("run")
    return "" if run is None else json.dumps(run, separators=(",", ":"), allow_nan=False)


class CsvWriter:
    """One row per (image, rank); an image that failed gets one row with its error.

    header=False when appending to a file that has one (predict --output --resume).
    """

    columns = PREDICT_CSV_COLUMNS

    def __init__(self, stream, header=True, **context):
        self.stream = stream
        if header:
            csv_writer(stream, self.columns).writeheader()

    def write(self, record):
        record = text_safe(record)
        # All of an image's rows in one write, so a killed run leaves at most one image half-written.
        text = io.StringIO()
        writer = csv_writer(text, self.columns)
        if "error" in record:
            writer.writerow({"path": record["path"], "error": record["error"]})
        run = run_cell(record)
        for p in record.get("predictions", ()):
            writer.writerow({"path": record["path"], "model": record.get("model"), "backend": record.get("backend"),
                             **p, "run": run})
        self.stream.write(text.getvalue())
        self.stream.flush()

    def close(self):
        pass


def _joined(values, separator=LIST_SEPARATOR):
    return separator.join(str(v) for v in values)


class PredictionsCsvWriter:
    """One row per image: its true class, hit@k as 1 or 0, its top-k as lists (labels split by |), model and run.

    header=False when appending to a file that has one (eval --resume).
    """

    def __init__(self, stream, ks=(1, 5), real_labels=False, header=True, **context):
        self.stream = stream
        self.ks = ks
        self.writer = csv_writer(stream, eval_csv_columns(ks, real_labels), extrasaction="ignore")
        if header:
            self.writer.writeheader()

    def write(self, record):
        record = text_safe(record)
        true = record["true"]
        row = {"path": record["path"], "true_index": true["index"], "true_wnid": true["wnid"],
               "true_label": true["label"], "error": record.get("error", ""), "model": record.get("model"),
               "backend": record.get("backend"), "run": run_cell(record)}
        if "real_labels" in record:
            row["real_labels"] = _joined(record["real_labels"])
        predictions = record.get("predictions")
        if predictions:
            row.update({f"hit@{k}": int(record[f"hit@{k}"]) for k in self.ks})
            row["predicted_indices"] = _joined(p["index"] for p in predictions)
            row["predicted_wnids"] = _joined(p["wnid"] or "-" for p in predictions)
            row["predicted_labels"] = _joined((p["label"] for p in predictions), LABEL_SEPARATOR)
            row["predicted_probabilities"] = _joined(p["probability"] for p in predictions)
        self.writer.writerow(row)
        self.stream.flush()

    def close(self):
        pass


class FlatCsvWriter:
    """Rows of flat records under fixed columns, header first; lists space-separated, None empty."""

    columns: tuple[str, ...] = ()

    def __init__(self, stream, columns=None, **context):
        columns = columns or self.columns
        self.stream = stream
        self.writer = csv_writer(stream, columns, extrasaction="ignore")
        self.writer.writeheader()

    def write(self, record):
        self.writer.writerow({key: _joined(value) if isinstance(value, list) else value
                              for key, value in text_safe(record).items()})
        self.stream.flush()

    def close(self):
        pass


MISCLASSIFIED_COLUMNS = ("path", "true_index", "true_wnid", "true_label", "predicted_index", "predicted_wnid",
                         "predicted_label", "probability")


class MisclassifiedCsvWriter(FlatCsvWriter):
    """--misclassified-out as CSV: one row per top-1 miss (and its ReaL labels when they are used)."""

    def __init__(self, stream, real_labels=False, **context):
        super().__init__(stream, MISCLASSIFIED_COLUMNS + (("real_labels",) if real_labels else ()))


class ReportJsonWriter:
    """A report as one JSON object (indented: it is read by people as often as by programs)."""

    def __init__(self, stream, **context):
        self.stream = stream

    def write(self, report):
        write_json_report(report, self.stream)

    def close(self):
        pass


def write_json_report(report, stream):
    """--json: the whole report as one JSON object (failed images as records, with path_base64 where needed)."""
    if "failed" in report:
        report = {**report, "failed": [json_record(record) for record in report["failed"]]}
    stream.write(json.dumps(text_safe(report), indent=2, allow_nan=False) + "\n")
    stream.flush()


# ---------------------------------------------------------------------------------------------
# Listings and matrices as CSV.

WEIGHTS_COLUMNS = ("model", "file", "size", "md5", "cached", "state", "path", "url")


class WeightsCsvWriter(FlatCsvWriter):
    """weights list as CSV: one row per known model (the fields of weights.listing)."""

    columns = WEIGHTS_COLUMNS


class ConfusionCsvWriter(FlatCsvWriter):
    """--confusion-out: `true,predicted,count` rows, classes by index (labels repeat: crane, maillot)."""

    columns = ("true", "predicted", "count")


# ---------------------------------------------------------------------------------------------
# The kinds of output. A kind lists the formats it comes in and the writer of each. Here the
# record files, which records.py reads back; render/outputs.py adds the kinds written to stdout,
# with their tables for people.

class OutputKind:
    """One kind of output: what an item is, its writer per format, and the format --json means."""

    def __init__(self, item, writers, json=None):
        self.item = item
        self.writers = writers
        self.json = json

    @property
    def formats(self):
        return tuple(name for name in FORMATS if name in self.writers)


# The one table of record files: a file's format is named by its extension.
RECORD_FILES = {
    # predict --output FILE: predict's records, format from the file's extension
    "predict-records": OutputKind("image", {"jsonl": JsonLinesWriter, "csv": CsvWriter, "parquet": ParquetRecordWriter}),
    # eval --predictions-out FILE: one record per image, format from the file's extension
    "eval-records": OutputKind("image", {"jsonl": JsonLinesWriter, "csv": PredictionsCsvWriter,
                                         "parquet": ParquetRecordWriter}),
    # eval --misclassified-out FILE: one record per top-1 miss
    "misclassified": OutputKind("image", {"jsonl": JsonLinesWriter, "csv": MisclassifiedCsvWriter}),
    # eval --confusion-out FILE: one row per (true class, top-1 class) pair that occurred
    "confusion": OutputKind("class pair", {"csv": ConfusionCsvWriter}),
}

# A record file's format, from its extension.
FILE_EXTENSIONS = {".jsonl": "jsonl", ".csv": "csv", ".json": "json", ".parquet": "parquet"}


def file_extensions(kind):
    """The extensions a record file of this kind may have, e.g. (".jsonl", ".csv")."""
    return tuple(ext for ext, name in FILE_EXTENSIONS.items() if name in RECORD_FILES[kind].writers)


def file_format(kind, path):
    """The format of a record file, from its extension; ValueError if the kind has no format for it."""
    extensions = file_extensions(kind)
    suffix = os.path.splitext(str(path))[1].lower()
    if suffix not in extensions:
        names = ", ".join(extensions[:-1]) + " or " + extensions[-1] if len(extensions) > 1 else extensions[0]
        raise ValueError(f"{path}: the file name must end in {names}")
    return FILE_EXTENSIONS[suffix]


def open_file_writer(kind, path, stream, **context):
    """A writer for a record file, in the format its extension names.

    context is what some writers need and the others ignore: ks and real_labels (eval's record
    files), header=False (a file continued by --resume); path itself goes to every writer (a .parquet file's
    writer makes the file from its journal, the stream, at the end).
    """
    return RECORD_FILES[kind].writers[file_format(kind, path)](stream, path=path, **context)
