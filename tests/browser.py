"""Headless Chromium for the tests: the DOM of a page after its scripts ran. No Chromium is a failure, not a skip."""

import base64
import hashlib
import os
import re
import shutil
import subprocess
import tempfile

# Debian's package is "chromium"; CI (.ci/run) installs it. CHROMIUM names another binary.
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium():
    explicit = os.environ.get("CHROMIUM")
    found = explicit or next((path for path in map(shutil.which, CANDIDATES) if path), None)
    if not found:
        raise AssertionError("no headless browser: install Debian's chromium package "
                             "(apt-get install -y chromium; .ci/run does) or set CHROMIUM to a Chrome binary")
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
