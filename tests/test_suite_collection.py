"""The suite itself: every test function lives where pytest collects it (a test it never runs cannot fail)."""

import ast
import fnmatch
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def functions_named_as_tests(path):
    """Names of the test functions pytest would look for in a file: test_* at the top or in a Test* class."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            found.append(node.name)
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            found += [f"{node.name}.{item.name}" for item in node.body
                      if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name.startswith("test")]
    return found


def test_every_test_function_is_in_a_collected_file(pytestconfig):
    patterns = pytestconfig.getini("python_files")
    stranded = {}
    for path in sorted(TESTS.rglob("*.py")):
        names = functions_named_as_tests(path)
        collected = path.name.startswith("test_") and any(fnmatch.fnmatch(path.name, p) for p in patterns)
        if names and not collected:
            stranded[str(path.relative_to(TESTS))] = names
    assert stranded == {}, "test functions pytest never runs; move them into a tests/test_*.py file"


def test_the_suite_is_tests_slash_test_files(pytestconfig, request):
    assert pytestconfig.getini("testpaths") == ["tests"]
    for item in request.session.items:
        path = Path(str(item.path)).resolve()
        assert TESTS in path.parents and path.name.startswith("test_"), item.nodeid


def test_the_check_finds_a_stranded_test(tmp_path):
    helper = tmp_path / "helpers.py"
    helper.write_text("def make():\n    pass\n\n\ndef test_forgotten():\n    assert False\n\n\n"
                      "class TestGroup:\n    def test_method(self):\n        pass\n")
    assert functions_named_as_tests(helper) == ["test_forgotten", "TestGroup.test_method"]
