"""The manual: docs/ builds with MkDocs in strict mode, and the README's links and set-up commands hold."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"


def build_site(root, site_dir):
    """`mkdocs build --strict` from root; the CompletedProcess (strict: any warning, a broken link, fails it)."""
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
                          cwd=root, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    site_dir = tmp_path_factory.mktemp("site")
    built = build_site(REPO, site_dir)
    assert built.returncode == 0, built.stderr
    return site_dir


def test_the_manual_builds_in_strict_mode_with_every_page(site):
    pages = sorted(path.stem for path in (REPO / "docs").glob("*.md"))
    assert {"index", "predict", "eval", "scale", "reliability"} <= set(pages)
    for page in pages:
        built = site / "index.html" if page == "index" else site / page / "index.html"
        assert built.is_file(), page


def test_a_broken_link_fails_the_build(tmp_path):
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    shutil.copy(REPO / "mkdocs.yml", tmp_path / "mkdocs.yml")
    page = tmp_path / "docs" / "eval.md"
    page.write_text(page.read_text() + "\nSee [the missing page](missing.md).\n")
    built = build_site(tmp_path, tmp_path / "site")
    assert built.returncode == 1
    assert "missing.md" in built.stderr


def readme_links():
    """(target file, anchor or None) for each relative link in README.md."""
    links = re.findall(r"\]\(([^)\s]+)\)", README.read_text())
    return [(target.partition("#")[0], target.partition("#")[2] or None)
            for target in links if not re.match(r"[a-z]+://", target)]


def test_the_readmes_links_reach_the_manuals_pages_and_sections(site):
    links = readme_links()
    assert len({target for target, _ in links}) >= 8  # the front door links every page of the manual
    for target, anchor in links:
        assert (REPO / target).is_file(), target
        if anchor is not None:
            page = Path(target).relative_to("docs").with_suffix("")
            html = site / ("index.html" if page.name == "index" else page / "index.html")
            assert f'id="{anchor}"' in html.read_text(), f"{target}#{anchor}"


def test_the_readme_stays_a_front_door():
    # The manual lives in docs/; the README keeps what it is, the set-up, a first run, examples, links.
    assert len(README.read_bytes()) < 10_240


def test_the_readmes_set_up_commands_are_what_ci_runs():
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks[0].splitlines() == ["pip install -e '.[test]'", "python -m pytest -q"]
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert "python -m pip install --quiet -e '.[test]'" in ci  # the README's install, quieter
    assert "python -m pytest -q --durations=25" in ci  # the README's test command, naming the 25 slowest
