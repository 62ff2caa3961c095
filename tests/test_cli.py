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


def test_every_command_and_option_has_help_text(cli_run):
    """Every command, reached by walking the command tree (so a new one cannot be missed), has help text."""
    paths = []
    for path, command in walk(cli):
        paths.append(" ".join(path))
        assert command.help, f"{' '.join(path) or 'resclassify'} has no help text"
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{' '.join(path)} {param.opts[0]} has no help text"
        result = cli_run(*path, "--help")
        assert result.exit_code == 0, path
        assert result.stdout.startswith(f"Usage: cli {' '.join(path)}".rstrip() + " "), path
    # The walk reached the commands and the weights group's commands.
    assert {"predict", "eval", "weights", "weights list", "weights path"} <= set(paths)


def test_json_means_one_thing_everywhere():
    """--json is machine-readable JSON on stdout: JSON Lines for a stream of records, one object for a report."""
    helps = {}
    for path, command in walk(cli):
        for param in command.params:
            if isinstance(param, click.Option) and "--json" in param.opts:
                formats = next(p for p in command.params if "--format" in getattr(p, "opts", ())).type.choices
                helps[" ".join(path)] = (param.help, tuple(formats))
    assert helps == {
        "predict": ("Machine-readable JSON on stdout: one object per image, a line each (short for --format jsonl).",
                    ("table", "jsonl", "json", "csv")),
        "eval": ("Machine-readable JSON on stdout: the report as one object (short for --format json).",
                 ("table", "json")),
        "weights list": ("Machine-readable JSON on stdout: one object per model, a line each (short for --format "
                         "jsonl).", ("table", "jsonl", "json", "csv")),
        "info": ("Machine-readable JSON on stdout: the description as one object (short for --format json).",
                 ("table", "json")),
    }


def test_python_dash_m_works_like_the_command():
    result = subprocess.run([sys.executable, "-m", "resclassify", "--version"], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout == f"resclassify, version {__version__}\n"
