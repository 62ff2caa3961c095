import subprocess
import sys

import click

from resclassify import __version__
from resclassify.cli import cli


def walk(command, prefix=()):
    yield prefix, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from walk(sub, prefix + (name,))


def test_every_command_and_option_has_help_text():
    for path, command in walk(cli):
        assert command.help, f"{' '.join(path) or 'resclassify'} has no help text"
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{' '.join(path)} {param.opts[0]} has no help text"


def test_python_dash_m_works_like_the_command():
    result = subprocess.run([sys.executable, "-m", "resclassify", "--version"], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout == f"resclassify, version {__version__}\n"
