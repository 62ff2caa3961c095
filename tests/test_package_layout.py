"""STYLE.md's boundaries, checked on the source: only the cli package and render/'s drawing modules print,
draw or touch the terminal."""

import ast
from pathlib import Path

import resclassify

PACKAGE = Path(resclassify.__file__).resolve().parent
# The command line and the parts of render/ that draw (rich tables, progress bars): the only modules
# that may draw, print or ask for a terminal. Paths relative to the package; the cli package is all shell.
SHELL = {"__main__.py", "render/tables.py", "render/summary.py", "render/progress.py"}
CLI_PACKAGE = PACKAGE / "cli"


def is_shell(path):
    """The cli package's modules, and SHELL's modules."""
    return path.parent == CLI_PACKAGE or path.relative_to(PACKAGE).as_posix() in SHELL


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
    assert (CLI_PACKAGE / "__init__.py").is_file()
    modules = sorted(p for p in PACKAGE.rglob("*.py") if not is_shell(p))
    assert len(modules) >= 10
    drawing = {str(p.relative_to(PACKAGE)): terminal_uses(p) for p in modules}
    assert {name: uses for name, uses in drawing.items() if uses} == {}
    # The allowed list names modules that exist (a moved one would leave a hole in the check).
    assert sorted(name for name in SHELL if not (PACKAGE / name).is_file()) == []


def test_the_check_sees_drawing(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import sys\nfrom rich.progress import Progress\n\n\ndef f():\n"
                      "    if sys.stderr.isatty():\n        print('x')\n        sys.stdout.write('y')\n"
                      "    sys.stderr.flush()\n")
    assert sorted(terminal_uses(module)) == [".isatty()", "from rich.progress import", "print()",
                                             "sys.stdout.write()"]


def test_the_command_line_is_a_package_of_its_own_that_the_library_never_imports():
    commands = sorted(p.name for p in CLI_PACKAGE.glob("*.py"))
    assert {"__init__.py", "options.py", "predict.py", "evaluate.py", "report.py", "weights.py", "info.py"} <= \
        set(commands)
    assert not any(p.is_dir() for p in CLI_PACKAGE.iterdir() if p.name != "__pycache__")
    library = sorted(p for p in PACKAGE.rglob("*.py") if not is_shell(p))
    importing = {}
    for path in library:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        depth = len(path.relative_to(PACKAGE).parts)  # a module in a subpackage reaches the top with ".."
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                top = node.module or ""
                names = [a.name for a in node.names]
                if (node.level == depth and (top.split(".")[0] == "cli" or (not top and "cli" in names))) or \
                        (node.level == 0 and top.split(".")[:2] == ["resclassify", "cli"]):
                    importing.setdefault(str(path.relative_to(PACKAGE)), []).append(node.lineno)
            elif isinstance(node, ast.Import) and any(a.name.startswith("resclassify.cli") for a in node.names):
                importing.setdefault(str(path.relative_to(PACKAGE)), []).append(node.lineno)
    assert importing == {}
