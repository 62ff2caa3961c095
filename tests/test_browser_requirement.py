"""Without a browser the browser tests are skipped, saying why; where one is required (CI) they fail."""

import os
import subprocess
import sys

import pytest

from conftest import REPO

BROWSER_TEST = "tests/test_report_html.py::test_page_loads_in_a_headless_browser_without_errors"


def pytest_without_a_browser(tmp_path, **env):
    """The suite's own browser test, run by pytest in a process whose PATH holds no browser."""
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("CHROMIUM", "RESCLASSIFY_REQUIRE_BROWSER", "PYTEST_ADDOPTS")}
    environment.update(PATH=str(tmp_path), PYTHONPATH=str(REPO), **env)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", BROWSER_TEST],
                          cwd=REPO, env=environment, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # two pytest child processes
def test_browser_tests_skip_without_a_browser_and_fail_where_one_is_required(tmp_path):
    skipped = pytest_without_a_browser(tmp_path)
    assert skipped.returncode == 0, skipped.stdout[-3000:]
    assert "1 skipped" in skipped.stdout and "passed" not in skipped.stdout
    assert "SKIPPED [1]" in skipped.stdout  # with the reason, as the README's pytest -q shows it
    assert "no headless browser: install Debian's chromium package" in skipped.stdout

    required = pytest_without_a_browser(tmp_path, RESCLASSIFY_REQUIRE_BROWSER="1")
    assert required.returncode == 1, required.stdout[-3000:]
    assert "1 error" in required.stdout and "skipped" not in required.stdout
    assert "RESCLASSIFY_REQUIRE_BROWSER=1 says this run must have one" in required.stdout


def test_ci_requires_the_browser_and_runs_the_whole_suite_showing_the_slowest():
    script = (REPO / ".ci" / "run").read_text()
    assert "export RESCLASSIFY_REQUIRE_BROWSER=1\npython -m pytest -q --durations=25\n" in script


def test_the_suite_registers_its_markers(pytestconfig):
    registered = {line.split(":")[0] for line in pytestconfig.getini("markers")}
    assert {"browser", "ray", "jax", "onnx", "slow"} <= registered
