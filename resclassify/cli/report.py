"""`resclassify report`, and what eval shares with it: the records that feed the HTML page and --misclassified-out
(the one place both are filled), the one path from prediction files to a report, and writing the page."""

import os

import click

# The record writers and the HTML page.
from ..record_formats import open_file_writer
from ..render.html import write_html_report
from .exits import CommandError, reports_errors
from .options import ExistingFileOrUrl, report_images_option
from .outputs import check_can_write, open_whole_run_output


class WholeRunRecords:
    """Where every record of a run goes beside the record file, the earlier records of a --resume and the records
    of prediction files included: the HTML page's collector and --misclassified-out's rows."""

    def __init__(self, collector=None, misclassified=None):
        self.collector = collector  # render.html.ReportCollector, for --report
        self.misclassified = misclassified  # --misclassified-out's writer

    def add(self, record):
        from ..evaluation import misclassified_record

        if self.collector is not None:
            self.collector.add(record)
        if self.misclassified is not None:
            row = misclassified_record(record)
            if row is not None:
                self.misclassified.write(row)

    def close(self):
        if self.misclassified is not None:
            self.misclassified.close()


def whole_run_records(stack, *, report_path, report_images, misclassified_out, real_labels, force, resume=False):
    """WholeRunRecords for the options given; --misclassified-out's file is opened on stack (an ExitStack)."""
    collector = None
    if report_path:
        from ..render.html import ReportCollector

        collector = ReportCollector(report_images)
    misclassified = None
    if misclassified_out:
        stream = stack.enter_context(open_whole_run_output(misclassified_out, force, resume))
        misclassified = open_file_writer("misclassified", misclassified_out, stream, real_labels=real_labels)
    return WholeRunRecords(collector, misclassified)


def report_from_files(files, *, report_path, report_images, force, misclassified_out=None):
    """The report of prediction files' records, no model: `resclassify report` and eval --from-predictions
    (which also writes --misclassified-out). Returns (report, the page's collector or None); the page itself
    is written by write_report_page."""
    import contextlib

    from ..evaluation import report_from_prediction_files

    for path in (misclassified_out, report_path):
        if path is not None:
            check_can_write(path, force, replaced=path == report_path)
    report, records = report_from_prediction_files(files)
    with contextlib.ExitStack() as stack:
        outputs = whole_run_records(stack, report_path=report_path, report_images=report_images,
                                    misclassified_out=misclassified_out,
                                    real_labels=any("real_labels" in record for record in records), force=force)
        for record in records:
            outputs.add(record)
        outputs.close()
    return report, outputs.collector


def write_report_page(path, report, collector, force):
    """The HTML report, or one error line saying why it could not be written."""
    try:
        write_html_report(path, report, collector, force=force)
    except FileExistsError:
        raise CommandError(f"{path}: already exists; pass --force to overwrite it") from None
    except OSError as exc:
        raise CommandError(f"{path}: cannot write: {exc.strerror or exc}") from None


@click.command("report")
@click.argument("files", nargs=-1, required=True, type=ExistingFileOrUrl(),
                metavar="FILE.jsonl...")
@click.option("-o", "--output", "output_path", required=True, type=click.Path(dir_okay=False), metavar="FILE.html",
              help="Where to write the HTML page.")
@report_images_option
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@reports_errors
def report_command(files, output_path, report_images, force):
    """Build eval's HTML report from prediction files, without running the network.

    FILE is what eval --predictions-out wrote (a path, or a URL such as s3://bucket/run.jsonl):
    one run, or the files of the shards of one run (--shard), which are merged. The page is the one eval --report writes; thumbnails
    are made from the image paths in the records, so run it where the images are.

    \b
    Examples:
      resclassify report run.jsonl -o report.html
      resclassify report shard-*.jsonl -o report.html --report-images 500
    """
    if any(os.path.abspath(path) == os.path.abspath(output_path) for path in files):
        raise click.UsageError(f"{output_path} is one of the prediction files")
    report, collector = report_from_files(files, report_path=output_path, report_images=report_images, force=force)
    write_report_page(output_path, report, collector, force)
