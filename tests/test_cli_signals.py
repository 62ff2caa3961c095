"""Ctrl-C and full disks, through real child processes: exit status, stderr, and what was written."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import REPO, save_image

# The real command line, with one decode that never ends (a hung network file system, say): the
# run is then certainly mid-way when Ctrl-C comes, whatever the machine's speed, and a thread is
# left that would keep a process alive that waited for its threads.
STUCK_RUN = """
import os, sys, threading
import resclassify.decoding as decoding

real_load_image = decoding.load_image

def load_image(path, *args, **kwargs):
    if "stuck" in os.path.basename(path):
        open(os.environ["STUCK_MARKER"], "w").close()
        threading.Event().wait()
    return real_load_image(path, *args, **kwargs)

decoding.load_image = load_image  # decoding in threads of this process (--decoding threads)
from resclassify.cli import main
sys.argv[0] = "resclassify"
main()
"""


# Results leave the pipeline one batch behind the network, so with --batch-size 1 and the fourth
# image stuck, the first two have been written and the third is waiting.
IMAGES = ["a", "b", "c", "d_stuck"]


def start(args, marker):
    env = {**os.environ, "STUCK_MARKER": str(marker), "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", STUCK_RUN, *map(str, args)], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Should the test wait for output that never comes, the child goes, and the test's reads end.
    child.watchdog = threading.Timer(240, child.kill)
    child.watchdog.start()
    return child


def interrupt(child):
    """SIGINT as Ctrl-C sends it; the rest of stdout and stderr, the status, the seconds it took to end."""
    child.watchdog.cancel()
    sent = time.monotonic()
    child.send_signal(signal.SIGINT)
    try:
        child.wait(timeout=30)
    except subprocess.TimeoutExpired:
        child.kill()
        pytest.fail("the process was still running 30 s after Ctrl-C")
    # Read after the exit, from the pipes' own buffers (communicate would skip what readline buffered).
    return child.stdout.read(), child.stderr.read(), child.returncode, time.monotonic() - sent


def wait_for(condition, what, child):
    while not condition():
        if child.poll() is not None:  # ended, or killed by the watchdog
            pytest.fail(f"the process ended before {what}: {child.returncode}, {child.stderr.read()}")
        time.sleep(0.05)


def test_ctrl_c_in_predict_exits_130_and_stdout_is_a_whole_json_array(tmp_path, weights_file):
    paths = [save_image(tmp_path / f"{name}.png", seed=n, size=(64, 48)) for n, name in enumerate(IMAGES)]
    marker = tmp_path / "stuck.started"
    child = start(["predict", "--weights", weights_file, "--format", "json", "-k", "1", "--batch-size", "1",
                   "--decoding", "threads", *paths], marker)
    # "[", then a's record and its comma, which comes with b's record: two results are out.
    opening, first = child.stdout.readline(), child.stdout.readline()
    wait_for(marker.exists, "decode of d_stuck.png", child)
    rest, stderr, status, seconds = interrupt(child)
    assert status == 130
    assert stderr == ""  # no "Aborted!", no traceback, no "Exception ignored"
    records = json.loads(opening + first + rest)  # the array was closed
    assert [record["path"] for record in records] == [str(paths[0]), str(paths[1])]
    print(f"ended {seconds:.2f} s after SIGINT")


def test_ctrl_c_in_eval_exits_130_and_the_predictions_file_is_whole(tmp_path, weights_file):
    folder = tmp_path / "data"
    for n, name in enumerate(IMAGES):
        save_image(folder / "tabby" / f"{name}.png", seed=n, size=(64, 48))
    out = tmp_path / "run.jsonl"
    marker = tmp_path / "stuck.started"
    child = start(["eval", folder, "--weights", weights_file, "--device", "cpu", "--batch-size", "1",
                   "--decoding", "threads", "--predictions-out", out], marker)

    def two_records_written():
        return out.exists() and out.read_text().count("\n") >= 2

    wait_for(two_records_written, "two records in run.jsonl", child)
    wait_for(marker.exists, "decode of d_stuck.png", child)
    stdout, stderr, status, seconds = interrupt(child)
    assert status == 130
    assert stdout == "" and stderr == ""
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [os.path.basename(record["path"]) for record in records] == ["a.png", "b.png"]
    assert all("hit@1" in record for record in records)
    print(f"ended {seconds:.2f} s after SIGINT")


def full_disk():
    if not os.path.exists("/dev/full"):
        pytest.skip("this system has no /dev/full to stand in for a full disk")
    return "/dev/full"


def test_a_full_disk_on_stdout_is_one_line_naming_stdout(weights_file):
    sample = REPO / "sample_images" / "cat.jpg"
    with open(full_disk(), "w") as full:
        predict = subprocess.run([sys.executable, "-m", "resclassify", "predict", "--weights", str(weights_file),
                                  "--json", str(sample)], stdout=full, stderr=subprocess.PIPE, text=True,
                                 env={**os.environ, "PYTHONPATH": str(REPO)})
        listing = subprocess.run([sys.executable, "-m", "resclassify", "weights", "list"], stdout=full,
                                 stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    for result in (predict, listing):
        assert result.returncode == 1
        assert result.stderr == "resclassify: error: stdout: cannot write: No space left on device\n"


def test_a_full_disk_under_an_output_file_names_the_file(cli_run, weights_file, tmp_path):
    folder = tmp_path / "data"
    save_image(folder / "tabby" / "a.png", size=(64, 48))
    out = tmp_path / "run.jsonl"
    out.symlink_to(full_disk())  # a file on a full disk: every write fails with ENOSPC
    result = cli_run("eval", folder, "--weights", weights_file, "--device", "cpu", "--predictions-out", out,
                     "--force")
    assert result.exit_code == 1
    assert result.stderr == f"resclassify: error: {out}: cannot write: No space left on device\n"
