"""`resclassify info`: versions, the backend a run gets, the weights cache (and with --devices, what each sees)."""

import sys

import click

from ..render.outputs import open_writer
from .exits import reports_errors
from .options import chosen_format, format_options


@click.command()
@click.option("--devices", is_flag=True,
              help="Also list the devices each installed backend sees (starts each backend in a child process: "
                   "seconds).")
@format_options("info")
@reports_errors
def info(devices, format_name, as_json):
    """Versions (resclassify, Keras, each backend, ONNX Runtime), the backend a run gets, the weights cache.

    \b
    Examples:
      resclassify info
      resclassify info --devices
      resclassify info --json | jq .backends.jax.version
    """
    from .. import about

    writer = open_writer("info", chosen_format("info", format_name, as_json), sys.stdout)
    writer.write(about(devices=devices))
    writer.close()
