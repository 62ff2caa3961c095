"""Ctrl-C, SIGTERM, SIGHUP and full disks, through real child processes: exit status, stderr, and what was written."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import REPO, save_image
from processes import live_processes_in_group
from resclassify.shm import SEGMENT_PREFIX

# The real command line, with one decode that never ends (a hung network file system, say): the
# run is then certainly mid-way when Ctrl-C comes, whatever the machine's speed, and a thread is
# left that would keep a process alive that waited for its threads. With STUCK_BATCH=n it is the
# network's n-th batch that never ends instead (decode worker processes run the real decoding).
# With STUCK_CLOSE_MARKER, closing a JSON array on the way out never ends either (a stop that hangs).
STUCK_RUN = """
import os, sys, threading
import resclassify.decoding as decoding
import resclassify.record_formats as record_formats
import resclassify.pipeline as pipeline

real_load_image = decoding.load_image
real_probabilities_of = pipeline.probabilities_of
batches = []

def stick(marker):
    open(os.environ[marker], "w").close()
    threading.Event().wait()

def load_image(path, *args, **kwargs):
    if "stuck" in os.path.basename(path):
        stick("STUCK_MARKER")
    return real_load_image(path, *args, **kwargs)

def probabilities_of(*args, **kwargs):
    batches.append(None)
    if len(batches) == int(os.environ.get("STUCK_BATCH", 0)):
        stick("STUCK_MARKER")
    return real_probabilities_of(*args, **kwargs)

def close_json_array(writer):
    stick("STUCK_CLOSE_MARKER")

decoding.load_image = load_image  # decoding in threads of this process (--decoding threads)
pipeline.probabilities_of = probabilities_of
if "STUCK_CLOSE_MARKER" in os.environ:
    record_formats.JsonArrayWriter.close = close_json_array
from resclassify.cli import main
sys.argv[0] = "resclassify"
main()
"""


# Results leave the pipeline one batch behind the network, so with --batch-size 1 and the fourth
# image stuck, the first two have been written and the third is waiting.
IMAGES = ["a", "b", "c", "d_stuck"]
# With the network's fourth batch stuck instead: a, b and c are written, e waits in the fifth batch,
# and f is still in the decoder's hands, so its shared memory is still there.
SIX_IMAGES = ["a", "b", "c", "d", "e", "f"]


def start(args, marker, group=False, **variables):
    """The stuck run; group=True: in a process group of its own (as a scheduler's job), which the watchdog kills whole."""
    env = {**os.environ, "STUCK_MARKER": str(marker), "PYTHONPATH": str(REPO),
           **{name: str(value) for name, value in variables.items()}}
    child = subprocess.Popen([sys.executable, "-c", STUCK_RUN, *map(str, args)], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=group)
    # Should the test wait for output that never comes, the child goes, and the test's reads end.
    child.watchdog = threading.Timer(240, (lambda: kill_group(child.pid)) if group else child.kill)
    child.watchdog.start()
    return child


def kill_group(group):
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass


def interrupt(child, number=signal.SIGINT, group=False):
    """SIGINT as Ctrl-C sends it (or another signal, to the child or its whole process group); the rest
    of stdout and stderr, the status, the seconds it took to end."""
    child.watchdog.cancel()
    sent = time.monotonic()
    if group:
        os.killpg(child.pid, number)
    else:
        child.send_signal(number)
    try:
        child.wait(timeout=30)
    except subprocess.TimeoutExpired:
        kill_group(child.pid) if group else child.kill()
        pytest.fail(f"the process was still running 30 s after {signal.Signals(number).name}")
    # Read after the exit, from the pipes' own buffers (communicate would skip what readline buffered).
    return child.stdout.read(), child.stderr.read(), child.returncode, time.monotonic() - sent


def wait_until_group_gone(group, seconds=30):
    """The processes of group still alive after at most `seconds` (the fork server leaves after its parent)."""
    deadline = time.monotonic() + seconds
    while live_processes_in_group(group) and time.monotonic() < deadline:
        time.sleep(0.05)
    return live_processes_in_group(group)


def segments_of(pid):
    return sorted(name for name in os.listdir("/dev/shm") if name.startswith(f"{SEGMENT_PREFIX}{pid}-"))


def wait_for(condition, what, child):
    while not condition():
        if child.poll() is not None:  # ended, or killed by the watchdog
            pytest.fail(f"the process ended before {what}: {child.returncode}, {child.stderr.read()}")
        time.sleep(0.05)


# Ctrl-C, a scheduler's time limit or `kill` (and a closed terminal: below) stop the run alike, with 128 + the signal.
@pytest.mark.parametrize("number, expected_status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_signal_in_predict_exits_128_plus_it_and_stdout_is_a_whole_json_array(
        tmp_path, weights_file, number, expected_status):
    paths = [save_image(tmp_path / f"{name}.png", seed=n, size=(64, 48)) for n, name in enumerate(IMAGES)]
    marker = tmp_path / "stuck.started"
    child = start(["predict", "--weights", weights_file, "--format", "json", "-k", "1", "--batch-size", "1",
                   "--decoding", "threads", *paths], marker)
    # "[", then a's record and its comma, which comes with b's record: two results are out.
    opening, first = child.stdout.readline(), child.stdout.readline()
    wait_for(marker.exists, "decode of d_stuck.png", child)
    rest, stderr, status, seconds = interrupt(child, number)
    assert status == expected_status
    assert stderr == ""  # no "Aborted!", no traceback, no "Exception ignored"
    records = json.loads(opening + first + rest)  # the array was closed
    assert [record["path"] for record in records] == [str(paths[0]), str(paths[1])]
    print(f"ended {seconds:.2f} s after {signal.Signals(number).name}")


def test_sighup_stops_the_run_and_a_second_signal_while_stopping_ends_it_at_once(tmp_path, weights_file):
    paths = [save_image(tmp_path / f"{name}.png", seed=n, size=(64, 48)) for n, name in enumerate(IMAGES)]
    marker, closing = tmp_path / "stuck.started", tmp_path / "closing.started"
    child = start(["predict", "--weights", weights_file, "--format", "json", "--batch-size", "1",
                   "--decoding", "threads", *paths], marker, STUCK_CLOSE_MARKER=closing)
    wait_for(marker.exists, "decode of d_stuck.png", child)
    child.send_signal(signal.SIGHUP)  # the terminal went: the run stops as for Ctrl-C ...
    wait_for(closing.exists, "the stop began closing stdout's JSON array", child)  # ... and hangs there
    _, stderr, status, seconds = interrupt(child, signal.SIGHUP)
    assert status == 129
    assert stderr == ""
    assert seconds < 10


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


def test_sigterm_to_the_process_group_stops_decode_workers_removes_shared_memory_and_the_run_resumes(
        tmp_path, weights_file, cli_run):
    folder = tmp_path / "data"
    for n, name in enumerate(SIX_IMAGES):
        save_image(folder / "tabby" / f"{name}.png", seed=n, size=(64, 48))
    out = tmp_path / "run.jsonl"
    marker = tmp_path / "stuck.started"
    # As Slurm and Kubernetes stop a job: SIGTERM to every process of it, decode workers included.
    child = start(["eval", folder, "--weights", weights_file, "--device", "cpu", "--batch-size", "1",
                   "--decoding", "processes", "--workers", "2", "--predictions-out", out], marker, group=True,
                  STUCK_BATCH=4)
    try:
        wait_for(marker.exists, "the fourth batch", child)
        group = live_processes_in_group(child.pid)
        assert len(group) >= 4  # this run, the fork server, two decode workers (and the resource tracker)
        assert segments_of(child.pid) != []
        stdout, stderr, status, _ = interrupt(child, signal.SIGTERM, group=True)
        assert status == 143
        assert stdout == "" and stderr == ""  # no worker traceback, no resource tracker warning
        assert wait_until_group_gone(child.pid) == []
        assert segments_of(child.pid) == []
    finally:
        kill_group(child.pid)
    lines = out.read_text().splitlines(keepends=True)
    assert all(line.endswith("\n") for line in lines)
    records = [json.loads(line) for line in lines]
    assert [os.path.basename(record["path"]) for record in records] == ["a.png", "b.png", "c.png"]
    assert all("error" not in record for record in records)  # no image lost to a worker killed under it
    resumed = cli_run("eval", folder, "--weights", weights_file, "--device", "cpu", "--decoding", "threads",
                      "--predictions-out", out, "--resume", "--quiet")
    assert resumed.exit_code == 0, resumed.stderr
    paths = [os.path.basename(json.loads(line)["path"]) for line in out.read_text().splitlines()]
    assert sorted(paths) == [f"{name}.png" for name in SIX_IMAGES]


def test_a_segment_left_by_a_killed_run_is_removed_by_the_next_run(tmp_path, weights_file, cli_run):
    paths = [save_image(tmp_path / f"{name}.png", seed=n, size=(64, 48)) for n, name in enumerate(SIX_IMAGES)]
    marker = tmp_path / "stuck.started"
    child = start(["predict", "--weights", weights_file, "--batch-size", "1", "--decoding", "processes",
                   "--workers", "1", "--json", *paths], marker, group=True, STUCK_BATCH=4)
    try:
        wait_for(marker.exists, "the fourth batch", child)
        left = segments_of(child.pid)
        assert left != []
        os.killpg(child.pid, signal.SIGKILL)  # no clean-up runs anywhere: the resource tracker goes too
        child.wait(timeout=30)
        assert wait_until_group_gone(child.pid) == []
    finally:
        child.watchdog.cancel()
        kill_group(child.pid)
        child.communicate()
    try:
        assert segments_of(child.pid) == left
        result = cli_run("predict", "--weights", weights_file, "--decoding", "processes", "--workers", "1", "--json",
                         paths[0])
        assert result.exit_code == 0, result.stderr
        assert segments_of(child.pid) == []
    finally:
        for name in segments_of(child.pid):  # should the next run not have removed it
            os.unlink(os.path.join("/dev/shm", name))


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
