"""Headless Chromium for the tests: the DOM of a page after its scripts ran.

The tests marked `browser` need it. Without one they are skipped, saying why, so that the README's
two commands pass on a machine with no browser; where RESCLASSIFY_REQUIRE_BROWSER=1 (.ci/run, which
installs Chromium) they fail instead, so CI never passes without having run them (conftest.py).
"""

import base64
import hashlib
import os
import re
import shutil
import subprocess
import tempfile

# Debian's package is "chromium"; CI (.ci/run) installs it. CHROMIUM names another binary.
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


REQUIRE_VARIABLE = "RESCLASSIFY_REQUIRE_BROWSER"
NO_BROWSER = ("no headless browser: install Debian's chromium package (apt-get install -y chromium; .ci/run "
              "does) or set CHROMIUM to a Chrome binary")


def find_chromium():
    """The browser binary: $CHROMIUM, else the first of CANDIDATES on PATH; None when there is none."""
    explicit = os.environ.get("CHROMIUM")
    return explicit or next((path for path in map(shutil.which, CANDIDATES) if path), None)


def browser_required():
    return os.environ.get(REQUIRE_VARIABLE, "").strip() not in ("", "0")


def chromium():
    found = find_chromium()
    if not found:
        raise AssertionError(NO_BROWSER)
    return found


def dump_dom(path, timeout=90):
    """The page's DOM as Chromium serialises it once the page has loaded and its scripts have run."""
    with tempfile.TemporaryDirectory(prefix="resclassify-chromium-") as profile:
        result = subprocess.run(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-extensions", "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={profile}",
             "--virtual-time-budget=5000", "--dump-dom", f"file://{os.path.abspath(path)}"],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert result.returncode == 0 and result.stdout.strip(), (
        f"chromium failed (exit {result.returncode}): {result.stderr[-2000:]}")
    return result.stdout


def with_test_script(page, script):
    """The page with a test's own script run after the page's, allowed by adding its hash to the page's policy."""
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    page, count = re.subn(r"script-src ('sha256-[^']+')", rf"script-src \1 'sha256-{digest}'", page, count=1)
    assert count == 1, "the page has no script-src hash to extend"
    return page.replace("</body>", f"<script>{script}</script>\n</body>", 1)
