"""The one table of every kind of output: the formats each comes in, their writers (tables for people
among them) and what --json stands for.

What --json means, everywhere: machine-readable JSON on stdout. A command that writes a stream
of records (predict: one per image; weights list: one per model) writes JSON Lines, one object a
line, as the records come; a command that writes one report (eval) writes one JSON object.
"""


from ..record_formats import (RECORD_FILES, CsvWriter, JsonArrayWriter, JsonLinesWriter, OutputKind,
                              ReportJsonWriter, WeightsCsvWriter)
from .summary import ReportSummaryWriter
from .tables import InfoTextWriter, TableWriter, WeightsTableWriter


# Every kind of output: those on stdout, where people may read them (a table), and the record
# files of record_formats (below the records that read them back).
OUTPUTS = {
    # predict's records on stdout (one per image, input order)
    "predictions": OutputKind("image", {"table": TableWriter, "jsonl": JsonLinesWriter, "json": JsonArrayWriter,
                                        "csv": CsvWriter}, json="jsonl"),
    # eval's report on stdout (one per run)
    "report": OutputKind("report", {"table": ReportSummaryWriter, "json": ReportJsonWriter}, json="json"),
    # weights list: one row per known model
    "weights": OutputKind("model", {"table": WeightsTableWriter, "jsonl": JsonLinesWriter, "json": JsonArrayWriter,
                                    "csv": WeightsCsvWriter}, json="jsonl"),
    # info: one description of this installation
    "info": OutputKind("description", {"table": InfoTextWriter, "json": ReportJsonWriter}, json="json"),
    **RECORD_FILES,
}


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
