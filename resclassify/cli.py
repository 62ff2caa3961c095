"""The command line: reads options, calls the library, prints; errors become one line and an exit code."""

import functools
import os
import sys

import click

from . import __version__
from .config import ARCH_CHOICES, DEFAULT_ARCH, DEVICE_CHOICES, NORMALIZE_MODES, PREPROCESS_CHOICES
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
    """Options every command that runs the network shares; open_model turns them into a network."""
    options = [
        click.option("--arch", type=click.Choice(ARCH_CHOICES), default=None,
                     help=f"Which of Keras's ImageNet ResNets to run [default: {DEFAULT_ARCH}]. "
                          "v1 models use caffe normalization, v2 models scale RGB to [-1, 1]."),
        click.option("--weights", default=None, metavar="imagenet|URL|PATH",
                     help="ImageNet weights from Keras's cache (downloaded once) [default: imagenet], a URL "
                          "(optionally #sha256=... or #md5=...), or a weights file in Keras's HDF5 layout."),
        click.option("--model", "model_path", type=click.Path(dir_okay=False), default=None,
                     help="Your own Keras model instead (.keras, or a full-model .h5); its input size "
                          "is read from it."),
        click.option("--classes", "classes_path", type=click.Path(dir_okay=False), default=None,
                     help="Class names for the model's outputs: one label per line, or a TSV/CSV with "
                          "a label column (and optional index, wnid columns)."),
        click.option("--offline", is_flag=True, envvar="RESCLASSIFY_OFFLINE",
                     help="Never touch the network; missing weights are an error. Also RESCLASSIFY_OFFLINE=1."),
        click.option("--preprocess", type=click.Choice(PREPROCESS_CHOICES), default="center-crop",
                     show_default=True,
                     help="center-crop: short side 256, centre 224x224, bicubic (standard evaluation). "
                          "squash: straight to 224x224, nearest neighbour, as keras.utils.load_img does. "
                          "(224 is the model's input size.)"),
        click.option("--preprocess-mode", type=click.Choice(NORMALIZE_MODES), default=None,
                     help="Pixel normalization [default: the model's own: caffe for resnet50/101/152, tf for "
                          "the v2 models; for --model, none if it starts with a Rescaling or Normalization "
                          "layer, else caffe]."),
        click.option("--exact-decode", is_flag=True,
                     help="Decode large JPEGs at full size instead of at a reduced DCT scale."),
        click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
                     help="Images per network call."),
        click.option("--device", type=click.Choice(DEVICE_CHOICES), default="auto", show_default=True,
                     help="auto: the GPU when TensorFlow sees one."),
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


def open_model(*, arch, weights, model_path, classes_path, offline, preprocess, preprocess_mode, exact_decode,
               device, threads, verbose, quiet, **_unused):
    """The network and the preprocessing it needs, from model_options' values (pass them all: **options)."""
    from . import load_model

    if model_path is not None and (arch is not None or weights is not None):
        raise click.UsageError("--model is a whole model: it does not go with --arch or --weights")
    classifier = load_model(weights or "imagenet", arch=arch or DEFAULT_ARCH, model=model_path,
                            classes=classes_path, device=device, threads=threads, offline=offline,
                            verbose=verbose, progress=not quiet, notice=None if quiet else report_warning)
    if model_path is not None and classes_path is None and len(classifier.classes) != 1000 and not quiet:
        report_warning(f"no --classes file: {classifier.name}'s {len(classifier.classes)} classes are "
                       "named by their output index")
    preprocessing = classifier.preprocessing(preprocess, mode=preprocess_mode, exact_decode=exact_decode)
    return classifier, preprocessing


def describe_run(classifier, preprocessing):
    """One line saying which network and preprocessing produced a run's results."""
    if classifier.arch == "custom":
        network = f"{classifier.name} ({len(classifier.classes)} classes)"
    else:
        network = f"{classifier.arch}, weights {os.path.basename(classifier.weights)}"
    return f"{network} · {preprocessing.describe()}"


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
    """Classify images with Keras's ImageNet ResNets, or your own Keras model, and measure top-1/top-5 error."""


@cli.command()
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("-k", "--top-k", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="How many classes to show per image.")
@format_options
@model_options
@reports_errors
def predict(inputs, top_k, format_name, json_lines, **options):
    """Print the top classes for each image.

    INPUT is an image file, a folder (searched recursively for images), or - to read paths
    from stdin, one a line. Results come in input order.

    \b
    Examples:
      resclassify predict sample_images/cat.jpg
      find photos -name '*.jpg' | resclassify predict --json - | jq .predictions[0].label
      resclassify predict --arch resnet152v2 photos/
      resclassify predict --model flowers.keras --classes flowers.txt photos/
    """
    from . import classify
    from .datasets import expand_inputs
    from .output import open_writer

    items = expand_inputs(inputs, sys.stdin if "-" in inputs else None)
    model, preprocessing = open_model(**options)
    writer = open_writer(chosen_format(format_name, json_lines), sys.stdout,
                         about=describe_run(model, preprocessing))
    failed = 0
    for record in classify(items, model, top_k=top_k, batch_size=options["batch_size"],
                           preprocessing=preprocessing, workers=options["threads"],
                           max_pixels=options["max_pixels"]):
        if "error" in record:
            failed += 1
            report_error(f"{record['path']}: {record['error']}")
        writer.write(record)
    writer.close()
    if failed:
        if not options["quiet"]:
            report_warning(f"{failed} of {len(items)} inputs could not be classified")
        sys.exit(1)


@cli.group("weights")
def weights_group():
    """List, fetch, locate and check Keras's ImageNet weight files.

    They live in Keras's own cache, $KERAS_HOME/models (default ~/.keras/models);
    RESCLASSIFY_WEIGHTS_MIRROR=<base URL> fetches the same file names from a mirror.
    """


def _weights_arguments(models):
    """MODEL arguments (architectures, or all) as KnownWeights, in the order given."""
    from .weights import KNOWN_WEIGHTS

    chosen = ARCH_CHOICES if "all" in models else models
    return [KNOWN_WEIGHTS[name] for name in dict.fromkeys(chosen)]


MODEL_ARGUMENT = click.Choice(ARCH_CHOICES + ("all",))


@weights_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines, one object per model, instead of a table.")
def weights_list(as_json):
    """Each known model's weights: file, size, md5, whether it is cached, and its path."""
    import json

    from .weights import KNOWN_WEIGHTS, cache_dir, cached_state

    rows = []
    for known in KNOWN_WEIGHTS.values():
        state, size = cached_state(known)
        rows.append({"model": known.arch, "file": known.file_name, "size": size, "md5": known.md5,
                     "cached": state == "cached", "state": state, "path": str(known.cache_path),
                     "url": known.url()})
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    click.echo(f"cache folder: {cache_dir()}")
    header = ("model", "file", "size", "md5", "cached", "path")
    cells = [header]
    for row, known in zip(rows, KNOWN_WEIGHTS.values()):
        size = f"{row['size'] / 2**20:.1f} MiB" if row["size"] is not None else f"~{known.approx_mib} MiB"
        cached = {"cached": "yes", "missing": "no", "damaged": "damaged (wrong md5)"}[row["state"]]
        cells.append((row["model"], row["file"], size, row["md5"], cached, row["path"]))
    widths = [max(len(line[i]) for line in cells) for i in range(len(header) - 1)]
    for line in cells:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths)) + "  " + line[-1])


@weights_group.command("download")
@click.argument("models", nargs=-1, type=MODEL_ARGUMENT, metavar="[MODEL...]")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or messages on stderr.")
@reports_errors
def weights_download(models, quiet):
    """Fetch weights into the cache (to copy to a machine without network); print each file's path.

    MODEL is an architecture (resnet50, resnet152v2, ...) or all [default: resnet50]. A file
    already cached with the right md5 is not fetched again.
    """
    from .weights import cached_state, official_file, offline_requested

    for known in _weights_arguments(models or (DEFAULT_ARCH,)):
        was_cached = cached_state(known)[0] == "cached"
        path = official_file(known, offline=offline_requested(), progress=not quiet,
                             notice=None if quiet else report_warning)
        if not quiet:
            what = "already in the cache" if was_cached else "downloaded"
            click.echo(f"{known.arch}: {what}, md5 {known.md5} checked", err=True)
        click.echo(str(path))


@weights_group.command("path")
@click.argument("model", type=click.Choice(ARCH_CHOICES))
def weights_path(model):
    """Print where MODEL's weights file is, or goes, in the cache (whether or not it is there yet)."""
    from .weights import KNOWN_WEIGHTS

    click.echo(str(KNOWN_WEIGHTS[model].cache_path))


@weights_group.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--arch", type=click.Choice(ARCH_CHOICES), default=None,
              help="The architecture to load it into [default: from the file name, else resnet50].")
@click.option("-v", "--verbose", is_flag=True, help="Show TensorFlow's own log messages on stderr.")
@reports_errors
def weights_verify(file, arch, verbose):
    """Check a weights file: its md5 against Keras's (when the name is one of Keras's) and that it loads.

    Exit status 0 when every check passes, 1 otherwise.
    """
    from .errors import WeightsError
    from .model import load_classifier
    from .weights import file_hash, known_by_file_name

    known = known_by_file_name(os.path.basename(file))
    arch = arch or (known.arch if known else DEFAULT_ARCH)
    md5 = file_hash(file, "md5")
    click.echo(f"file    {file} ({os.path.getsize(file) / 2**20:.1f} MiB)")
    click.echo(f"sha256  {file_hash(file, 'sha256')}")
    if known is None:
        click.echo(f"md5     {md5} (no known checksum for this file name)")
    elif md5 == known.md5:
        click.echo(f"md5     {md5} matches Keras's {known.arch} file")
    else:
        raise WeightsError(f"{file}: md5 is {md5}, expected {known.md5} for Keras's {known.file_name}")
    classifier = load_classifier(file, arch, "cpu", verbose=verbose)
    click.echo(f"loads   into {arch} ({classifier.keras_model.count_params():,} parameters)")


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
