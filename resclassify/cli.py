"""The command line: reads options, calls the library, prints; errors become one line and an exit code."""

import functools
import os
import sys

import click

from . import __version__
from .config import DEVICE_CHOICES, PRECISION_CHOICES, PREPROCESS_CHOICES, resolve_preprocessing
from .errors import ResclassifyError
from .images import DEFAULT_MAX_PIXELS
from .output import FORMATS

DEBUG_VARIABLE = "RESCLASSIFY_DEBUG"


def debug_requested():
    return os.environ.get(DEBUG_VARIABLE, "").strip() not in ("", "0")


class CommandError(click.ClickException):
    """A ResclassifyError as Click shows it: one line on stderr, exit status 1."""

    def show(self, file=None):
        report_error(self.format_message())


def report_error(message):
    click.echo(f"resclassify: error: {message}", err=True)


def report_warning(message):
    click.echo(f"resclassify: warning: {message}", err=True)


def reports_errors(command):
    """Turn the library's errors into CommandError, unless RESCLASSIFY_DEBUG asks for the traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ResclassifyError as exc:
            if debug_requested():
                raise
            raise CommandError(str(exc)) from None

    return wrapper


def model_options(command):
    """Options every command that runs the network shares."""
    options = [
        click.option("--weights", default="imagenet", show_default=True, metavar="imagenet|URL|PATH",
                     help="ImageNet weights from Keras's cache (downloaded once), a URL "
                          "(optionally #sha256=... or #md5=...), or a weights file in Keras's HDF5 layout."),
        click.option("--offline", is_flag=True, envvar="RESCLASSIFY_OFFLINE",
                     help="Never touch the network; missing weights are an error. Also RESCLASSIFY_OFFLINE=1."),
        click.option("--preprocess", type=click.Choice(PREPROCESS_CHOICES), default="center-crop",
                     show_default=True,
                     help="center-crop: short side 256, centre 224x224, bicubic (standard evaluation). "
                          "squash: straight to 224x224, nearest neighbour, as keras.utils.load_img does."),
        click.option("--exact-decode", is_flag=True,
                     help="Decode large JPEGs at full size instead of at a reduced DCT scale."),
        click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
                     help="Images per network call."),
        click.option("--device", type=click.Choice(DEVICE_CHOICES), default="auto", show_default=True,
                     help="auto: the GPU when TensorFlow sees one."),
        click.option("--precision", type=click.Choice(PRECISION_CHOICES), default="float32", show_default=True,
                     help="Compute precision: bfloat16 is faster on CPUs that have it, float16 on GPUs."),
        click.option("--threads", type=click.IntRange(min=1), default=None,
                     help="CPU threads for decoding and the network [default: all cores]."),
        click.option("--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS, show_default=True,
                     help="Refuse images with more pixels than this, before decoding them."),
        click.option("-v", "--verbose", is_flag=True, help="Show TensorFlow's own log messages on stderr."),
        click.option("-q", "--quiet", is_flag=True, help="No progress bars or warnings on stderr."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def format_options(command):
    """The output options every command shares: one list of formats, --json as a short form."""
    command = click.option("--json", "json_lines", is_flag=True, help="Short for --format jsonl.")(command)
    return click.option("--format", "format_name", type=click.Choice(FORMATS), default="table",
                        show_default=True, help="Output format on stdout.")(command)


def chosen_format(format_name, json_lines):
    return "jsonl" if json_lines else format_name


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="resclassify")
def cli():
    """Classify images with Keras's ImageNet ResNet50 and measure its top-1/top-5 error."""


@cli.command()
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("-k", "--top-k", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="How many classes to show per image.")
@format_options
@model_options
@reports_errors
def predict(inputs, top_k, format_name, json_lines, weights, offline, preprocess, exact_decode, batch_size,
            device, precision, threads, max_pixels, verbose, quiet):
    """Print the top classes for each image.

    INPUT is an image file, a folder (searched recursively for images), or - to read paths
    from stdin, one a line. Results come in input order.

    \b
    Examples:
      resclassify predict sample_images/cat.jpg
      find photos -name '*.jpg' | resclassify predict --json - | jq .predictions[0].label
    """
    from . import classify, load_model
    from .datasets import expand_inputs
    from .output import open_writer

    preprocessing = resolve_preprocessing(preprocess, exact_decode=exact_decode)
    items = expand_inputs(inputs, sys.stdin if "-" in inputs else None)
    model = load_model(weights, device=device, precision=precision, threads=threads, offline=offline,
                       verbose=verbose, progress=not quiet)
    writer = open_writer(chosen_format(format_name, json_lines), sys.stdout)
    failed = 0
    for record in classify(items, model, top_k=top_k, batch_size=batch_size, preprocessing=preprocessing,
                           workers=threads, max_pixels=max_pixels):
        if "error" in record:
            failed += 1
            report_error(f"{record['path']}: {record['error']}")
        writer.write(record)
    writer.close()
    if failed:
        if not quiet:
            report_warning(f"{failed} of {len(items)} inputs could not be classified")
        sys.exit(1)


def main():
    """Console-script entry point: no traceback reaches the user unless RESCLASSIFY_DEBUG=1."""
    try:
        cli(prog_name="resclassify")
    except BrokenPipeError:
        # The reader (head, jq) went away: stop quietly, as other Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)
    except Exception as exc:
        if debug_requested():
            raise
        report_error(f"internal error: {type(exc).__name__}: {exc} (set {DEBUG_VARIABLE}=1 for the traceback)")
        sys.exit(1)
