"""Parquet record files (a record file's name ending in .parquet): a JSON Lines journal written as the run goes,
made into a Parquet file in row groups when the run ends, and read back (pyarrow, the `parquet` extra).

Why a journal: a Parquet file is readable only once its footer is written, so a run killed while
writing one would leave nothing readable. The journal (preds.parquet.partial.jsonl) is appended and
flushed record by record, like any .jsonl record file: a killed run leaves it, and --resume continues
it. The run that ends converts it, streaming row groups of ROW_GROUP_RECORDS records (bounded memory
at any size), into a temporary file renamed onto the .parquet, then removes the journal.
"""

import json
import os

from .errors import RecordFileError
from .streams import json_record

ROW_GROUP_RECORDS = 1024
JOURNAL_SUFFIX = ".partial.jsonl"
# Key-value metadata of the file: the run's identity (records.identity_of of its first classified
# record) and which columns hold JSON text.
RUN_KEY = b"resclassify.run"
JSON_COLUMNS_KEY = b"resclassify.json_columns"

INSTALL_HINT = "pip install 'resclassify[parquet]'"


def is_parquet(path):
    return os.path.splitext(str(path))[1].lower() == ".parquet"


def journal_path(path):
    """Where the records of a .parquet file go while a run writes it."""
    return str(path) + JOURNAL_SUFFIX


def import_pyarrow():
    """pyarrow and pyarrow.parquet; a one-line RecordFileError naming the install where it is missing."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise RecordFileError(f"Parquet record files need pyarrow: {INSTALL_HINT}") from None
    return pyarrow, pyarrow.parquet


# Columns of known shape get proper Arrow types; any other key (the run identity, whose
# preprocessing part grows with the tool) is kept as JSON text, so the schema never needs to follow it.
STRING_COLUMNS = ("path", "path_base64", "model", "backend", "error")


def _arrow_type(pa, key):
    cls = [("index", pa.int64()), ("wnid", pa.string()), ("label", pa.string())]
    if key in STRING_COLUMNS:
        return pa.string()
    if key == "true":
        return pa.struct(cls)
    if key == "predictions":
        return pa.list_(pa.struct([("rank", pa.int64()), *cls, ("probability", pa.float64())]))
    if key == "real_labels":
        return pa.list_(pa.int64())
    if key.startswith("hit@"):
        return pa.bool_()
    return None  # JSON text


def _journal_lines(journal):
    with open(journal, encoding="utf-8") as stream:
        for line in stream:
            if line.strip():
                yield json.loads(line)


def _first_identity(record):
    if "run" in record:
        return {"model": record.get("model"), **record["run"]}
    return None


def write_parquet(journal, path):
    """The journal's records as a Parquet file at path (written beside it, then renamed into place)."""
    pa, pq = import_pyarrow()
    keys, identity = {}, None
    for record in _journal_lines(journal):  # a first pass: the columns, and the run's identity
        keys.update(dict.fromkeys(record))
        identity = identity or _first_identity(record)
    keys = keys or {"path": None}
    json_columns = [key for key in keys if _arrow_type(pa, key) is None]
    schema = pa.schema([(key, _arrow_type(pa, key) or pa.string()) for key in keys]).with_metadata(
        {RUN_KEY: json.dumps(identity), JSON_COLUMNS_KEY: json.dumps(json_columns)})
    temporary = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with pq.ParquetWriter(temporary, schema) as writer:
            rows = []
            for record in _journal_lines(journal):
                rows.append({key: json.dumps(value) if key in json_columns else value for key, value in record.items()})
                if len(rows) == ROW_GROUP_RECORDS:
                    writer.write_table(pa.Table.from_pylist(rows, schema=schema), row_group_size=ROW_GROUP_RECORDS)
                    rows = []
            if rows:
                writer.write_table(pa.Table.from_pylist(rows, schema=schema), row_group_size=ROW_GROUP_RECORDS)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def read_parquet(path, data=None):
    """The records of a .parquet record file, as the .jsonl file of the same run reads back (data: its bytes,
    already read from a URL)."""
    pa, pq = import_pyarrow()
    try:
        parquet = pq.ParquetFile(path if data is None else pa.BufferReader(data))
        metadata = parquet.schema_arrow.metadata or {}
        json_columns = set(json.loads(metadata.get(JSON_COLUMNS_KEY, b"[]")))
        records = []
        for batch in parquet.iter_batches(batch_size=ROW_GROUP_RECORDS):
            for row in batch.to_pylist():
                # A null cell is a key the record does not have (an error has no predictions).
                records.append({key: json.loads(value) if key in json_columns else value
                                for key, value in row.items() if value is not None})
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise RecordFileError(f"{path}: not a readable Parquet record file: {exc}") from None
    if any("path" not in record for record in records):
        raise RecordFileError(f"{path}: not a resclassify record file (a row without a path)")
    return records


def run_of_file(path):
    """The run identity stored in a .parquet record file's metadata (None when no record was classified)."""
    _, pq = import_pyarrow()
    metadata = pq.read_schema(path).metadata or {}
    return json.loads(metadata.get(RUN_KEY, b"null"))


class ParquetRecordWriter:
    """Records of a .parquet file: to its journal (the stream, opened by records.open_record_file) as they come,
    made into the Parquet file on close."""

    def __init__(self, stream, path=None, **context):
        import_pyarrow()  # before the run, not at its end
        self.stream = stream
        self.path = path
        self.closed = False

    def write(self, record):
        self.stream.write(json.dumps(json_record(record), allow_nan=False) + "\n")
        self.stream.flush()

    def close(self):
        if self.closed:
            return
        self.closed = True
        self.stream.flush()
        journal = journal_path(self.path)
        write_parquet(journal, self.path)
        os.remove(journal)  # still locked by this run: a second run never sees it half-removed
