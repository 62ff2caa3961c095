"""The library never draws, checked on the source: only cli.py and output.py print, draw or touch the terminal."""

import ast
from pathlib import Path

import resclassify

PACKAGE = Path(resclassify.__file__).resolve().parent
# The command line and its output: the only modules that may draw, print or ask for a terminal.
SHELL = {"cli.py", "output.py", "__main__.py"}


def terminal_uses(path):
    """What in a module prints, draws or looks at the terminal: click/rich, print(), sys.stdout/stderr.write(), .isatty()."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in ("click", "rich")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] in (
                "click", "rich"):
            found.append(f"from {node.module} import")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
            found.append("print()")
        elif isinstance(node, ast.Attribute) and node.attr == "isatty":
            found.append(".isatty()")
        elif isinstance(node, ast.Call) and _is_standard_stream_write(node.func):
            found.append(f"sys.{node.func.value.attr}.write()")
    return found


def _is_standard_stream_write(func):
    return (isinstance(func, ast.Attribute) and func.attr == "write" and isinstance(func.value, ast.Attribute)
            and func.value.attr in ("stdout", "stderr") and isinstance(func.value.value, ast.Name)
            and func.value.value.id == "sys")


def test_the_library_never_prints_or_draws():
    modules = sorted(p for p in PACKAGE.rglob("*.py") if p.name not in SHELL or p.parent != PACKAGE)
    assert len(modules) >= 10
    drawing = {str(p.relative_to(PACKAGE)): terminal_uses(p) for p in modules}
    assert {name: uses for name, uses in drawing.items() if uses} == {}


def test_the_check_sees_drawing(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import sys\nfrom rich.progress import Progress\n\n\ndef f():\n"
                      "    if sys.stderr.isatty():\n        print('x')\n        sys.stdout.write('y')\n"
                      "    sys.stderr.flush()\n")
    assert sorted(terminal_uses(module)) == [".isatty()", "from rich.progress import", "print()",
                                             "sys.stdout.write()"]
