"""`resclassify weights`: list, fetch, locate and check Keras's ImageNet weight files."""

import os
import sys

import click

from ..config import ARCH_CHOICES, DEFAULT_ARCH
from ..render.outputs import open_writer
from ..render.terminal import exact_stream
from .exits import report_warning, reports_errors
from .options import chosen_format, format_options
from .running import download_progress


@click.group("weights")
def weights_group():
    """List, fetch, locate and check Keras's ImageNet weight files.

    They live in Keras's own cache, $KERAS_HOME/models (default ~/.keras/models);
    RESCLASSIFY_WEIGHTS_MIRROR=<base URL> fetches the same file names from a mirror.
    """


def _weights_arguments(models):
    """MODEL arguments (architectures, or all) as KnownWeights, in the order given."""
    from ..weights import KNOWN_WEIGHTS

    chosen = ARCH_CHOICES if "all" in models else models
    return [KNOWN_WEIGHTS[name] for name in dict.fromkeys(chosen)]


MODEL_ARGUMENT = click.Choice(ARCH_CHOICES + ("all",))


@weights_group.command("list")
@format_options("weights")
@reports_errors
def weights_list(format_name, as_json):
    """Each known model's weights: file, size, md5, whether it is cached, and its path."""
    from ..weights import KNOWN_WEIGHTS, cache_dir, listing

    chosen = chosen_format("weights", format_name, as_json)
    writer = open_writer("weights", chosen, exact_stream(sys.stdout) if chosen == "csv" else sys.stdout,
                         cache_folder=str(cache_dir()),
                         approx_mib={known.arch: known.approx_mib for known in KNOWN_WEIGHTS.values()})
    for row in listing():
        writer.write(row)
    writer.close()


@weights_group.command("download")
@click.argument("models", nargs=-1, type=MODEL_ARGUMENT, metavar="[MODEL...]")
@click.option("--onnx", "with_onnx", is_flag=True,
              help="Also export each to ONNX for --backend onnxruntime (needs the onnx extra), so a machine "
                   "without network gets both.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or messages on stderr.")
@reports_errors
def weights_download(models, with_onnx, quiet):
    """Fetch weights into the cache (to copy to a machine without network); print each file's path.

    MODEL is an architecture (resnet50, resnet152v2, ...) or all [default: resnet50]. A file
    already cached with the right md5 is not fetched again. With --onnx, the ONNX file made from
    each is printed after it (made once, then reused).
    """
    from ..weights import cached_state, official_file, offline_reason

    notice = None if quiet else report_warning
    for known in _weights_arguments(models or (DEFAULT_ARCH,)):
        was_cached = cached_state(known)[0] == "cached"
        with download_progress(quiet) as progress:
            path = official_file(known, offline=offline_reason(), progress=progress, notice=notice)
        if not quiet:
            what = "already in the cache" if was_cached else "downloaded"
            click.echo(f"{known.arch}: {what}, md5 {known.md5} checked", err=True)
        click.echo(str(path))
        if with_onnx:
            from ..runners import onnx

            exported = onnx.prepare(known.arch, notice=notice)
            if not quiet:
                click.echo(f"{known.arch}: ONNX file {'exported' if exported.made else 'already in the cache'}",
                           err=True)
            click.echo(str(exported.path))


@weights_group.command("path")
@click.argument("model", type=click.Choice(ARCH_CHOICES))
@reports_errors
def weights_path(model):
    """Print where MODEL's weights file is, or goes, in the cache (whether or not it is there yet)."""
    from ..weights import KNOWN_WEIGHTS

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
    from ..errors import WeightsError
    from ..runners.keras import load_classifier
    from ..weights import file_hash, known_by_file_name

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
    click.echo(f"loads   into {arch} ({classifier.parameters:,} parameters)")
