"""The command line: the `resclassify` Click group and main(), the console script; one module per command group,
each only reading options, calling the library and printing through the output writers."""

import warnings

import click

from .. import __version__
from . import exits
from .evaluate import eval_command
from .info import info
from .predict import predict
from .report import report_command
from .weights import weights_group


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="resclassify")
def cli():
    """Classify images with Keras's ImageNet ResNets, or your own Keras model, and measure top-1/top-5 error."""
    from PIL import Image

    # Pillow warns about images over 89 megapixels; --max-pixels is our limit, refused with our message.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


for command in (predict, eval_command, report_command, info, weights_group):
    cli.add_command(command)


def main():
    """Console-script entry point: no traceback reaches the user unless RESCLASSIFY_DEBUG=1 (exits.run)."""
    exits.run(cli)
