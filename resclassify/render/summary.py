"""The eval summary for people: its lines and figures as text (shared by the terminal and the HTML
report, so the two always say the same), and the terminal's version of it with rich tables."""

from ..streams import display_path
from .tables import plain_cells
from .terminal import shown_in


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


def summary_parts(report):
    """The terminal summary's pieces, in the terminal's own words, for the HTML report."""
    return (summary_heading(report), summary_fields(report), unmatched_lines(report), accuracy_rows(report),
            confidence_line(report), throughput_line(report))


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

    def table(columns, rows, left):
        """A rich table of plain cells (never markup); the columns named in left are left-aligned."""
        drawn = Table()
        for column in columns:
            drawn.add_column(column, justify="left" if column in left else "right")
        for row in rows:
            drawn.add_row(*plain_cells(console, *row))
        console.print(drawn)

    heading(summary_heading(report))
    for label, text in summary_fields(report):
        if label == "Images":
            out("")
        out(f"{label + ':' if label else '':<{SUMMARY_LABEL_WIDTH}}{text}")
    for line in unmatched_lines(report):
        out(f"  {line}")
    out("")

    heading("Accuracy")
    table(ACCURACY_COLUMNS, accuracy_rows(report), left=("",))
    out(confidence_line(report))
    throughput = throughput_line(report)
    if throughput:
        out(throughput)

    scores = report.get("precision_recall")
    if scores and scores["macro"] is not None:
        out("")
        heading(precision_recall_heading(report))
        table(PRECISION_RECALL_COLUMNS, precision_recall_rows(report), left=("",))
        if scores["predicted_without_image"]:
            out(f"{_classes(len(scores['predicted_without_image']))} predicted but without any image: "
                "F1 0, left out of the averages")

    class_columns = ("class", "WordNet id")
    if report["worst_classes"]:
        out("")
        heading("Worst classes by top-1 accuracy")
        top_ks = [name[3:] for name in report["accuracy"]]
        table(["class", "WordNet id", "images"] + [f"top-{k}" for k in top_ks],
              ([f"{row['index']} {row['label']}", row["wnid"] or "", row["images"],
                *(f"{row[f'top{k}_correct']}/{row['images']}" for k in top_ks)] for row in report["worst_classes"]),
              left=class_columns)
    if scores and scores["worst_by_f1"]:
        out("")
        heading("Worst classes by F1 (top-1)")
        table(WORST_F1_COLUMNS, worst_f1_rows(report), left=class_columns)
    if report["confusions"]:
        out("")
        heading("Most frequent confusions (top-1)")
        table(("true class", "predicted as", "images"),
              ([f"{row['true']['index']} {row['true']['label']}",
                f"{row['predicted']['index']} {row['predicted']['label']}", row["count"]] for row in report["confusions"]),
              left=("true class", "predicted as"))

class ReportSummaryWriter:
    """An evaluation report as people read it: lines and rich tables."""

    def __init__(self, stream, **context):
        self.stream = stream

    def write(self, report):
        print_eval_summary(report, self.stream)

    def close(self):
        pass
