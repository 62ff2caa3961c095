"""Every way results leave: one table of output formats (records, reports, listings, record files); progress display.

What --json means, everywhere: machine-readable JSON on stdout. A command that writes a stream
of records (predict: one per image; weights list: one per model) writes JSON Lines, one object a
line, as the records come; a command that writes one report (eval) writes one JSON object.
"""

import base64
import codecs
import csv
import io
import json
import os
import re
import time

from .errors import OutputError
from .records import LABEL_SEPARATOR, LIST_SEPARATOR, PREDICT_CSV_COLUMNS, eval_csv_columns

# ---------------------------------------------------------------------------------------------
# Streams and names: a write that fails says which file; a file name that is not text is shown
# so that it can be seen (table, stderr) or recovered (JSON).


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

    def isatty(self):
        return self.stream.isatty()

    def __getattr__(self, name):
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


# ---------------------------------------------------------------------------------------------
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


def _cell(value, console):
    """A table cell as plain text: a label like "a[/b]" or "[background]" is never read as rich markup,
    and what the terminal cannot show is replaced before rich measures the column."""
    from rich.text import Text

    return Text(shown_in(value, console.encoding))


def _row(console, *values):
    return [_cell(value, console) for value in values]


class TableWriter:
    """A rich table per image, for people; errors are already on stderr, so they are skipped."""

    def __init__(self, stream, about=None, **context):
        from rich.console import Console

        # Colour only on a terminal (rich checks isatty and NO_COLOR); 80 columns when piped.
        self.console = Console(file=stream, highlight=False, soft_wrap=False,
                               width=None if stream.isatty() else 80)
        self.about = about

    def write(self, record):
        from rich.table import Table

        if "predictions" not in record:
            return
        if self.about:
            # Once, above the first table: which model and preprocessing produced what follows.
            self.console.print(shown_in(self.about, self.console.encoding), style="dim", markup=False,
                               soft_wrap=True)
            self.about = None
        with_wnids = any(p.get("wnid") for p in record["predictions"])
        # The path on a line of its own, never wrapped or padded, so it can be copied whole;
        # a newline or an undecodable byte in the name is shown escaped, on the same line.
        self.console.print(shown_in(display_path(record["path"]), self.console.encoding), style="bold",
                           markup=False, highlight=False, soft_wrap=True)
        table = Table()
        table.add_column("#", justify="right")
        table.add_column("label", style="cyan")
        if with_wnids:
            table.add_column("WordNet id", style="dim")
        table.add_column("probability", justify="right", style="green")
        for p in record["predictions"]:
            wnid = [p["wnid"] or ""] if with_wnids else []
            table.add_row(*_row(self.console, p["rank"], p["label"], *wnid, f"{p['probability'] * 100:.2f}%"))
        self.console.print(table)

    def close(self):
        pass


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


# ---------------------------------------------------------------------------------------------
# eval: per-image record files (--predictions-out, --misclassified-out), the summary, progress.


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

    columns = ()

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


class ReportSummaryWriter:
    """An evaluation report as people read it: lines and rich tables."""

    def __init__(self, stream, **context):
        self.stream = stream

    def write(self, report):
        print_eval_summary(report, self.stream)

    def close(self):
        pass


# ---------------------------------------------------------------------------------------------
# --probabilities-out: every input's full probabilities, written as the run goes.

PATHS_SUFFIX = ".paths.txt"


def paths_file(probabilities_path):
    """The sidecar naming the rows of a --probabilities-out file: FILE.npy -> FILE.npy.paths.txt."""
    return str(probabilities_path) + PATHS_SUFFIX


def escape_path(path):
    """A path on one line: a backslash is written \\\\ and a newline \\n, so every line is one path."""
    return str(path).replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


class ProbabilitiesWriter:
    """An N x classes float32 .npy file written row by row through a memory map, and its sidecar of paths.

    numpy.lib.format.open_memmap makes the file (np.load reads it, with mmap_mode="r" too), then
    only a window of rows is mapped at a time (flushed and unmapped when full), so a run of
    50,000 images never holds its 200 MB of probabilities in memory. Row k is the k-th input in
    output order; an input that could not be read gets a row of NaN. Rows a run never reached
    (cut short) stay 0, which no probability row is.
    """

    WINDOW_BYTES = 4 * 2**20

    def __init__(self, path, rows, classes, force=False):
        import numpy as np

        self.path = str(path)
        self.rows, self.classes = rows, classes
        # Created here, exclusively unless forced: a file that appeared since the check is kept.
        self.paths = open(paths_file(path), "w" if force else "x", encoding="utf-8", errors="surrogateescape",
                          newline="\n")
        if not force:
            open(self.path, "xb").close()
        # numpy's own .npy layout, the file at its full size (sparse until rows are written); this
        # mapping of the whole file is dropped at once, before any row is touched.
        whole = np.lib.format.open_memmap(self.path, mode="w+", dtype=np.float32, shape=(rows, classes))
        self.offset = whole.offset
        del whole
        self.window_rows = max(1, self.WINDOW_BYTES // (4 * max(1, classes)))
        self.window = None
        self.window_start = 0
        self.written = 0

    def write(self, path, probabilities):
        import numpy as np

        if self.written >= self.rows:
            raise ValueError(f"{self.path}: more rows than the {self.rows} announced")
        if self.window is None or self.written >= self.window_start + len(self.window):
            self._next_window()
        row = self.window[self.written - self.window_start]
        row[:] = np.nan if probabilities is None else probabilities
        self.paths.write(escape_path(path) + "\n")
        self.written += 1

    def _next_window(self):
        import numpy as np

        self._release_window()
        self.window_start = self.written
        count = min(self.window_rows, self.rows - self.written)
        self.window = np.memmap(self.path, dtype=np.float32, mode="r+", shape=(count, self.classes),
                                offset=self.offset + 4 * self.classes * self.window_start)

    def _release_window(self):
        if self.window is not None:
            self.window.flush()
            self.window = None

    def close(self):
        self._release_window()
        self.paths.close()


def open_probabilities_writer(path, rows, classes, force=False):
    return ProbabilitiesWriter(path, rows, classes, force)


def write_json_report(report, stream):
    """--json: the whole report as one JSON object (failed images as records, with path_base64 where needed)."""
    if "failed" in report:
        report = {**report, "failed": [json_record(record) for record in report["failed"]]}
    stream.write(json.dumps(text_safe(report), indent=2, allow_nan=False) + "\n")
    stream.flush()


def _format_percent(value):
    return "n/a" if value is None else f"{value:.2f}%"


def _and_more(first_few):
    names = ", ".join(display_path(name) for name in first_few["first"])
    more = first_few["count"] - len(first_few["first"])
    return names + (f", and {more} more" if more > 0 else "")


def _listed(names):
    names = [display_path(name) for name in names]
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names)


def _plural(count, word):
    return f"{count:,} {word}" + ("" if count == 1 else "s")


SUMMARY_LABEL_WIDTH = 15
# How many prediction files the summary names before it says "and N more".
FIRST_FILES = 3


def summary_heading(report):
    """The summary's first line: what was evaluated."""
    files = report.get("prediction_files")
    if files:
        return f"Evaluation from {_plural(len(files), 'prediction file')}"
    return f"Evaluation of {display_path(report['folder'])}" if report.get("folder") else "Evaluation"


def summary_fields(report):
    """The summary's labelled lines as (label, text), in order; a label of "" continues the line above.

    The terminal summary and the HTML report both show these, so the two always say the same.
    """
    images = report["images"]
    model = report["model"]
    files = report.get("prediction_files")
    if files:
        more = f", and {len(files) - FIRST_FILES} more" if len(files) > FIRST_FILES else ""
        fields = [("Files", ", ".join(map(display_path, files[:FIRST_FILES])) + more)]
    else:
        fields = [("Ground truth", report["ground_truth"]["layout"])]
    for merged in report["ground_truth"].get("merged_class_folders") or []:
        fields.append(("", f"class folders {_listed(merged['folders'])} all name {merged['index']} "
                           f"{merged['label']}: counted together"))
    if report["ground_truth"]["labels_file"]:
        fields.append(("Labels file", display_path(report["ground_truth"]["labels_file"])))
    if report["ground_truth"]["real_labels_file"]:
        fields.append(("ReaL labels", display_path(report["ground_truth"]["real_labels_file"])))
    fields.append(("Model", model_line(model)))
    fields.append(("Preprocessing", report["preprocessing"]["description"]))
    decoding = report.get("decoding")
    if decoding:
        threads = decoding.get("network_threads")
        network = f"; network on {threads} CPU thread{'' if threads == 1 else 's'}" if threads else ""
        fields.append(("Decoding", f"on {decoding['description']}{network}"))
    counts = [f"{images['evaluated']:,} evaluated", f"{images['failed']:,} failed"]
    if images["skipped"] is not None:  # unknown when the report was rebuilt from prediction files
        counts.append(f"{images['skipped']:,} skipped")
    cut = [f"--limit {images['limit']}"] if images["limit"] is not None else []
    cut += [f"--shard {report['shard']}"] if report.get("shard") else []
    if cut:
        counts.append(f"{images['not_run']:,} not run ({', '.join(cut)})")
    found = f" (of {_plural(images['found'], 'image file')} found)" if images["found"] is not None else ""
    fields.append(("Images", f"{', '.join(counts)}{found}"))
    if report.get("resumed"):
        fields.append(("", f"{report['resumed']:,} of them from the earlier run's records (--resume)"))
    if images["failed"]:
        fields.append(("", "failed images are left out of every figure below, numerator and denominator"))
    return fields


def model_line(model):
    """Which network produced the figures: arch and weights (or the user's model), device, precision."""
    # No device for a report rebuilt from prediction files: the shards may have run on several.
    device = f", on {model['device']}" if model.get("device") else ""
    if model["arch"] == "custom":
        line = f"{model['weights']} ({model['classes']:,} classes){device}, {model['precision']}"
    else:
        line = f"{model['arch']}, weights {model['weights']}{device}, {model['precision']}"
    backends = model.get("backends") or ([model["backend"]] if model.get("backend") else [])
    if len(backends) > 1:  # shards or a resumed run on different kinds of node
        line += f", backends: {', '.join(backends)}"
    elif backends:
        line += f", {backends[0]} backend"
    return line


def unmatched_lines(report):
    """Skipped images and labels without an image: counted, the first few named."""
    lines = [f"skipped, {reason}: {first_few['count']:,} ({_and_more(first_few)})"
             for reason, first_few in report["skipped"].items()]
    lines += [f"labels with no image, in {source}: {first_few['count']:,} ({_and_more(first_few)})"
              for source, first_few in report["labels_without_image"].items()]
    return lines


ACCURACY_COLUMNS = ("", "accuracy", "95% CI", "error", "correct")


def accuracy_rows(report):
    """One row of text cells per top-k figure, under ACCURACY_COLUMNS."""
    evaluated = report["images"]["evaluated"]
    rows = []
    for name, figure in report["accuracy"].items():
        interval = figure["ci95_percent"]
        rows.append((f"top-{name[3:]}", _format_percent(figure["accuracy_percent"]),
                     "n/a" if interval is None else f"{interval[0]:.2f}–{interval[1]:.2f}%",
                     _format_percent(figure["error_percent"]), f"{figure['correct']:,}/{evaluated:,}"))
    return rows


def confidence_line(report):
    return f"Confidence intervals: {report['confidence_interval']}."


def throughput_line(report):
    """Images/s and wall time, or None when the report has no timing (built from prediction files)."""
    throughput = report.get("throughput")
    if not throughput or throughput.get("seconds") is None:
        return None
    images = report["images"]
    rate = throughput["images_per_second"]
    # A resumed run timed only the images it ran itself.
    done = images["evaluated"] + images["failed"] - (report.get("resumed") or 0)
    return (f"Throughput: {'n/a' if rate is None else f'{rate:,.1f}'} images/s "
            f"({done:,} images in {throughput['seconds']:.2f} s)")


def _classes(count):
    return f"{count:,} class" + ("" if count == 1 else "es")


PRECISION_RECALL_COLUMNS = ("", "precision", "recall", "F1")
WORST_F1_COLUMNS = ("class", "WordNet id", "images", "predicted", "precision", "recall", "F1")
_SCORES = ("precision", "recall", "f1")


def precision_recall_heading(report):
    count = report["precision_recall"]["classes_averaged"]
    return f"Precision, recall and F1 of the top-1 class, averaged over the {_classes(count)} with images"


def precision_recall_rows(report):
    """The macro and image-weighted averages as rows of text cells under PRECISION_RECALL_COLUMNS."""
    scores = report["precision_recall"]
    return [(name, *(_format_percent(scores[key][f"{f}_percent"]) for f in _SCORES))
            for name, key in (("macro", "macro"), ("image-weighted", "image_weighted"))]


def worst_f1_rows(report):
    """The classes with the lowest F1 as rows of text cells under WORST_F1_COLUMNS (n/a: never predicted)."""
    return [(f"{row['index']} {row['label']}", row["wnid"] or "", str(row["images"]), str(row["predicted"]),
             *(_format_percent(row[f"{f}_percent"]) for f in _SCORES))
            for row in report["precision_recall"]["worst_by_f1"]]


def print_eval_summary(report, stream):
    """The human summary of an evaluation report, with rich tables."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=stream, highlight=False, soft_wrap=False, width=None if stream.isatty() else 100)
    # Plain lines never wrap: a path broken across two lines could not be copied or grepped.
    def out(text):
        console.print(shown_in(text, console.encoding), markup=False, soft_wrap=True)

    def heading(text):
        console.print(shown_in(text, console.encoding), style="bold", markup=False, highlight=False)

    heading(summary_heading(report))
    for label, text in summary_fields(report):
        if label == "Images":
            out("")
        out(f"{label + ':' if label else '':<{SUMMARY_LABEL_WIDTH}}{text}")
    for line in unmatched_lines(report):
        out(f"  {line}")
    out("")

    heading("Accuracy")
    accuracy = Table()
    for column in ACCURACY_COLUMNS:
        accuracy.add_column(column, justify="left" if not column else "right")
    for row in accuracy_rows(report):
        accuracy.add_row(*_row(console, *row))
    console.print(accuracy)
    out(confidence_line(report))
    throughput = throughput_line(report)
    if throughput:
        out(throughput)

    scores = report.get("precision_recall")
    if scores and scores["macro"] is not None:
        out("")
        heading(precision_recall_heading(report))
        averages = Table()
        for column in PRECISION_RECALL_COLUMNS:
            averages.add_column(column, justify="left" if not column else "right")
        for row in precision_recall_rows(report):
            averages.add_row(*_row(console, *row))
        console.print(averages)
        if scores["predicted_without_image"]:
            out(f"{_classes(len(scores['predicted_without_image']))} predicted but without any image: "
                "F1 0, left out of the averages")

    if report["worst_classes"]:
        out("")
        heading("Worst classes by top-1 accuracy")
        worst = Table()
        top_ks = [name[3:] for name in report["accuracy"]]
        for column in ["class", "WordNet id", "images"] + [f"top-{k}" for k in top_ks]:
            worst.add_column(column, justify="left" if column in ("class", "WordNet id") else "right")
        for row in report["worst_classes"]:
            worst.add_row(*_row(console, f"{row['index']} {row['label']}", row["wnid"] or "", row["images"],
                                *(f"{row[f'top{k}_correct']}/{row['images']}" for k in top_ks)))
        console.print(worst)
    if scores and scores["worst_by_f1"]:
        out("")
        heading("Worst classes by F1 (top-1)")
        worst = Table()
        for column in WORST_F1_COLUMNS:
            worst.add_column(column, justify="left" if column in ("class", "WordNet id") else "right")
        for row in worst_f1_rows(report):
            worst.add_row(*_row(console, *row))
        console.print(worst)
    if report["confusions"]:
        out("")
        heading("Most frequent confusions (top-1)")
        confusions = Table()
        for column in ("true class", "predicted as", "images"):
            confusions.add_column(column, justify="right" if column == "images" else "left")
        for row in report["confusions"]:
            confusions.add_row(*_row(console, f"{row['true']['index']} {row['true']['label']}",
                                     f"{row['predicted']['index']} {row['predicted']['label']}", row["count"]))
        console.print(confusions)


class EvalProgress:
    """A rich progress bar on stream (images done, images/s, time left), or nothing when disabled.

    Lines printed through line() go above the bar while it shows, so errors do not tear it.
    """

    def __init__(self, total, stream, enabled):
        self.stream = stream
        self.progress = None
        if enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                                       TimeRemainingColumn)

            self.progress = Progress(TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("images"), TaskProgressColumn(),
                                     TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                                     console=Console(file=stream, highlight=False), transient=True)
            self.started = time.perf_counter()
            self.task = self.progress.add_task("evaluating", total=total, rate="")

    def __enter__(self):
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc_info):
        if self.progress is not None:
            self.progress.stop()

    def advance(self):
        if self.progress is not None:
            done = self.progress.tasks[0].completed + 1
            elapsed = time.perf_counter() - self.started
            rate = f"{done / elapsed:.1f} img/s" if elapsed > 0 else ""
            self.progress.update(self.task, advance=1, rate=rate)

    def line(self, text):
        if self.progress is not None:
            self.progress.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()


class DownloadProgress:
    """Draws the download progress the library reports (progress(file_name, bytes_done, bytes_total))
    as a rich bar on stream: bytes, speed, time left; one line per file; nothing when disabled."""

    def __init__(self, stream, enabled):
        self.stream = stream
        self.enabled = enabled
        self.progress = None
        self.tasks = {}

    def __call__(self, name, done, total):
        if not self.enabled:
            return
        if self.progress is None:
            from rich.console import Console
            from rich.progress import DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

            self.progress = Progress(*Progress.get_default_columns()[:2], DownloadColumn(), TransferSpeedColumn(),
                                     TimeRemainingColumn(), console=Console(file=self.stream), transient=True)
            self.progress.start()
        if name not in self.tasks:
            from rich.markup import escape

            # The description is rich markup: a file name is escaped, so that it shows as it is.
            self.tasks[name] = self.progress.add_task(f"downloading {escape(name)}", total=total)
        self.progress.update(self.tasks[name], completed=done, total=total)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        # Gone before anything else is printed: the next line (a result, an error) starts clean.
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
            self.tasks = {}


# ---------------------------------------------------------------------------------------------
# The HTML report (eval --report, resclassify report): a page of its own, written whole.

def summary_parts(report):
    """The terminal summary's pieces, in the terminal's own words, for the HTML report."""
    return (summary_heading(report), summary_fields(report), unmatched_lines(report), accuracy_rows(report),
            confidence_line(report), throughput_line(report))


def write_html_report(path, report, collector, force=False):
    """Write the self-contained HTML report to path: thumbnails made now, the page written whole.

    collector is the report_html.ReportCollector that saw the run's records. The page goes to a
    temporary file beside path and is renamed into place, so an interrupted run leaves no half page;
    without force an existing file (even one that appeared meanwhile) is kept: FileExistsError.
    """
    from . import __version__
    from .report_html import make_thumbnails, plan_thumbnails, render_page

    examples, grid = plan_thumbnails(report, collector)
    paths = [p for chosen in examples.values() for p in chosen] + [entry["path"] for entry in grid]
    thumbnails = make_thumbnails(paths)
    folder = os.path.dirname(os.path.abspath(path))
    page = render_page(report, summary_parts(report), collector, examples, grid, thumbnails, folder, __version__)
    write_file_atomically(path, page, force)


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


# ---------------------------------------------------------------------------------------------
# weights list: one row per known model.

WEIGHTS_COLUMNS = ("model", "file", "size", "md5", "cached", "state", "path", "url")
_CACHED_SHOWN = {"cached": "yes", "missing": "no", "damaged": "damaged (wrong md5)"}


class WeightsTableWriter:
    """The cache folder, then one aligned line per model; the path last, unpadded, so it copies whole.

    context: cache_folder, and approx_mib (model -> size in MiB shown for a file not yet here).
    """

    header = ("model", "file", "size", "md5", "cached", "path")

    def __init__(self, stream, cache_folder=None, approx_mib=None, **context):
        self.stream = stream
        self.cache_folder = cache_folder
        self.approx_mib = approx_mib or {}
        self.cells = [self.header]

    def write(self, row):
        if row["size"] is not None:
            size = f"{row['size'] / 2**20:.1f} MiB"
        else:
            size = f"~{self.approx_mib[row['model']]} MiB" if row["model"] in self.approx_mib else "?"
        self.cells.append((row["model"], row["file"], size, row["md5"], _CACHED_SHOWN[row["state"]], row["path"]))

    def close(self):
        # Widths need every row: a listing of a handful of models is written whole at the end.
        lines = [f"cache folder: {self.cache_folder}"] if self.cache_folder is not None else []
        widths = [max(len(line[i]) for line in self.cells) for i in range(len(self.header) - 1)]
        for line in self.cells:
            lines.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths)) + "  " + line[-1])
        self.stream.write("".join(line + "\n" for line in lines))
        self.stream.flush()


class WeightsCsvWriter(FlatCsvWriter):
    columns = WEIGHTS_COLUMNS


# ---------------------------------------------------------------------------------------------
# info: versions, backends and their devices, the weights cache.

class InfoTextWriter:
    """resclassify.about() as aligned lines: versions, the default backend, devices if listed, the cache."""

    def __init__(self, stream, **context):
        self.stream = stream

    def write(self, info):
        lines = [("resclassify", info["resclassify"]), ("python", info["python"]),
                 ("keras", info["keras"] or "not installed")]
        for name, backend in info["backends"].items():
            if not backend["installed"]:
                lines.append((name, f"not installed: {backend['install']}"))
                continue
            companions = [f"{key} {value}" for key, value in backend.items()
                          if key not in ("installed", "version", "devices", "install") and value]
            lines.append((name, (backend["version"] or "installed") +
                          (f" ({', '.join(companions)})" if companions else "")))
        lines.append(("onnxruntime", info["onnxruntime"] or "not installed"))
        default = info["default_backend"]
        lines.append(("backend", f"{default['name']} ({default['why']})" if default["name"] else default["why"]))
        listed = [(name, backend["devices"]) for name, backend in info["backends"].items() if "devices" in backend]
        for i, (name, devices) in enumerate(listed):
            shown = f"error: {devices['error']}" if isinstance(devices, dict) else ", ".join(devices) or "none"
            lines.append(("devices" if i == 0 else "", f"{name}: {shown}"))
        lines.append(("cache folder", info["cache_folder"]))
        if info.get("cache_problem"):
            lines.append(("cache problem", info["cache_problem"]))
        cached = info["cached_weights"]
        for i, row in enumerate(cached):
            about = f"{row['model']}, " if row["model"] else ""
            lines.append(("cached weights" if i == 0 else "", f"{row['file']} ({about}{row['size'] / 2**20:.1f} MiB)"))
        if not cached:
            lines.append(("cached weights", "none"))
        for i, row in enumerate(info.get("cached_onnx", ())):
            lines.append(("cached onnx" if i == 0 else "", f"{row['file']} ({row['size'] / 2**20:.1f} MiB)"))
        width = max(len(label) for label, _ in lines) + 2
        self.stream.write("".join(f"{label:<{width}}{text}\n" for label, text in lines))
        self.stream.flush()

    def close(self):
        pass


# ---------------------------------------------------------------------------------------------
# The one table of output formats. Each kind of output lists the formats it comes in and the
# writer of each; --format offers exactly these, and --json stands for the kind's JSON format.
# Every writer is writer(stream, **context), then write(item) for each item, then close().

class ConfusionCsvWriter(FlatCsvWriter):
    """--confusion-out: `true,predicted,count` rows, classes by index (labels repeat: crane, maillot)."""

    columns = ("true", "predicted", "count")


FORMATS = ("table", "jsonl", "json", "csv")  # every format name, in the order help lists them


class OutputKind:
    """One kind of output: what an item is, its writer per format, and the format --json means."""

    def __init__(self, item, writers, json=None):
        self.item = item
        self.writers = writers
        self.json = json

    @property
    def formats(self):
        return tuple(name for name in FORMATS if name in self.writers)


OUTPUTS = {
    # predict's records on stdout (one per image, input order)
    "predictions": OutputKind("image", {"table": TableWriter, "jsonl": JsonLinesWriter, "json": JsonArrayWriter,
                                        "csv": CsvWriter}, json="jsonl"),
    # eval's report on stdout (one per run)
    "report": OutputKind("report", {"table": ReportSummaryWriter, "json": ReportJsonWriter}, json="json"),
    # predict --output FILE: predict's records, format from the file's extension
    "predict-records": OutputKind("image", {"jsonl": JsonLinesWriter, "csv": CsvWriter}),
    # eval --predictions-out FILE: one record per image, format from the file's extension
    "eval-records": OutputKind("image", {"jsonl": JsonLinesWriter, "csv": PredictionsCsvWriter}),
    # eval --misclassified-out FILE: one record per top-1 miss
    "misclassified": OutputKind("image", {"jsonl": JsonLinesWriter, "csv": MisclassifiedCsvWriter}),
    # eval --confusion-out FILE: one row per (true class, top-1 class) pair that occurred
    "confusion": OutputKind("class pair", {"csv": ConfusionCsvWriter}),
    # weights list: one row per known model
    "weights": OutputKind("model", {"table": WeightsTableWriter, "jsonl": JsonLinesWriter, "json": JsonArrayWriter,
                                    "csv": WeightsCsvWriter}, json="jsonl"),
    # info: one description of this installation
    "info": OutputKind("description", {"table": InfoTextWriter, "json": ReportJsonWriter}, json="json"),
}

# A record file's format, from its extension.
FILE_EXTENSIONS = {".jsonl": "jsonl", ".csv": "csv", ".json": "json"}


def formats(kind):
    """The format names one kind of output comes in, in FORMATS order."""
    return OUTPUTS[kind].formats


def json_format(kind):
    """The format --json stands for: jsonl for a stream of records, json for one report."""
    return OUTPUTS[kind].json


def json_help(kind):
    """--json's help text, the same words for every command."""
    output = OUTPUTS[kind]
    if output.json == "jsonl":
        shape = f"one object per {output.item}, a line each"
    else:
        shape = f"the {output.item} as one object"
    return f"Machine-readable JSON on stdout: {shape} (short for --format {output.json})."


def open_writer(kind, format_name, stream, **context):
    """A writer for one kind of output in one format.

    context is what some writers need and the others ignore: about (a line saying which model
    ran, shown where people read), ks and real_labels (eval's record files), cache_folder and
    approx_mib (weights list).
    """
    writers = OUTPUTS[kind].writers
    if format_name not in writers:
        raise ValueError(f"no {format_name} format for {kind} output; choose from {', '.join(formats(kind))}")
    return writers[format_name](stream, **context)


def file_extensions(kind):
    """The extensions a record file of this kind may have, e.g. (".jsonl", ".csv")."""
    return tuple(ext for ext, name in FILE_EXTENSIONS.items() if name in OUTPUTS[kind].writers)


def file_format(kind, path):
    """The format of a record file, from its extension; ValueError if the kind has no format for it."""
    extensions = file_extensions(kind)
    suffix = os.path.splitext(str(path))[1].lower()
    if suffix not in extensions:
        raise ValueError(f"{path}: the file name must end in {' or '.join(extensions)}")
    return FILE_EXTENSIONS[suffix]


def open_file_writer(kind, path, stream, **context):
    """A writer for a record file, in the format its extension names."""
    return open_writer(kind, file_format(kind, path), stream, **context)
