"""Output formats: one table of writers, each streaming records to a text stream as they come."""

import csv
import json


class TableWriter:
    """A rich table per image, for people; errors are already on stderr, so they are skipped."""

    def __init__(self, stream, about=None):
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
            self.console.print(self.about, style="dim", markup=False, soft_wrap=True)
            self.about = None
        with_wnids = any(p.get("wnid") for p in record["predictions"])
        table = Table(title=record["path"], title_justify="left", title_style="bold")
        table.add_column("#", justify="right")
        table.add_column("label")
        if with_wnids:
            table.add_column("WordNet id")
        table.add_column("probability", justify="right")
        for p in record["predictions"]:
            wnid = [p["wnid"] or ""] if with_wnids else []
            table.add_row(str(p["rank"]), p["label"], *wnid, f"{p['probability'] * 100:.2f}%")
        self.console.print(table)

    def close(self):
        pass


class JsonLinesWriter:
    def __init__(self, stream, about=None):
        self.stream = stream

    def write(self, record):
        self.stream.write(json.dumps(record, allow_nan=False) + "\n")
        self.stream.flush()

    def close(self):
        pass


class JsonArrayWriter:
    """One JSON array, written element by element so nothing waits for the whole run."""

    def __init__(self, stream, about=None):
        self.stream = stream
        self.count = 0

    def write(self, record):
        self.stream.write(("[\n" if self.count == 0 else ",\n") + json.dumps(record, allow_nan=False))
        self.stream.flush()
        self.count += 1

    def close(self):
        self.stream.write("[]\n" if self.count == 0 else "\n]\n")
        self.stream.flush()


class CsvWriter:
    """One row per (image, rank); an image that failed gets one row with its error."""

    columns = ("path", "model", "rank", "index", "wnid", "label", "probability", "error")

    def __init__(self, stream, about=None):
        self.stream = stream
        self.writer = csv.DictWriter(stream, fieldnames=self.columns, lineterminator="\n")
        self.writer.writeheader()

    def write(self, record):
        if "error" in record:
            self.writer.writerow({"path": record["path"], "error": record["error"]})
        for p in record.get("predictions", ()):
            self.writer.writerow({"path": record["path"], "model": record.get("model"), **p})
        self.stream.flush()

    def close(self):
        pass


WRITERS = {"table": TableWriter, "jsonl": JsonLinesWriter, "json": JsonArrayWriter, "csv": CsvWriter}
FORMATS = tuple(WRITERS)


def open_writer(format_name, stream, about=None):
    """A writer for one format; about is a line saying which model ran, shown where people read (table)."""
    return WRITERS[format_name](stream, about=about)
