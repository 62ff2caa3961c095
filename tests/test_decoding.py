import itertools
import os
import secrets
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from conftest import REPO, save_image, wait_for
from processes import alive, descendants
from resclassify.config import resolve_preprocessing
from resclassify.decoding import (SLOTS_PER_WORKER, DecodePlan, ProcessDecoder, ThreadDecoder, open_decoder, ordered_map,
                                  plan_decoding)
from resclassify.errors import DecodingError, InputError
from resclassify.images import load_image
from resclassify.shm import SEGMENT_PREFIX

CENTER = resolve_preprocessing()
SMALL = resolve_preprocessing(size=32)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("decoding")
    good = [str(save_image(folder / f"photo{i}.jpg", size=(96 + 8 * i, 64), seed=i, quality=90)) for i in range(6)]
    good.append(str(save_image(folder / "grey.png", size=(50, 70), mode="L", seed=9)))
    broken = folder / "broken.jpg"
    broken.write_bytes(b"not an image at all")
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(open(good[0], "rb").read()[:300])
    return {"good": good, "broken": str(broken), "truncated": str(truncated), "missing": str(folder / "gone.jpg"),
            "folder": str(folder)}


def mixed_inputs(photos):
    """Good files with bad ones between them, and an error found before decoding (as expand_inputs gives)."""
    good = photos["good"]
    return ([good[0], photos["broken"], good[1], InputError("stdin line 3", "no such file or directory"), good[2],
             photos["missing"], good[3], photos["truncated"]] + good[4:] + [photos["folder"]])


def decode_all(decoder, items, preprocessing=CENTER):
    """(path, a copy of the pixels or None, the error reason or None) for each result, in the order given."""
    return [(d.path, None if d.pixels is None else d.pixels.copy(), d.error and d.error.reason)
            for d in decoder.map(items, preprocessing)]


@pytest.fixture(scope="module")
def process_decoder():
    """Two worker processes, shared by the tests of this module (starting them is the slow part)."""
    with open_decoder(DecodePlan("processes", 2)) as decoder:
        yield decoder


@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_results_come_in_input_order_with_every_bad_file_an_error_in_its_place(mode, photos, process_decoder):
    items = mixed_inputs(photos)
    decoder = process_decoder if mode == "processes" else open_decoder(DecodePlan("threads", 3))
    results = decode_all(decoder, items)
    assert [path for path, _, _ in results] == [item.path if isinstance(item, InputError) else item for item in items]
    reasons = {path: reason for path, _, reason in results if reason}
    assert reasons == {
        photos["broken"]: "cannot identify image file",
        "stdin line 3": "no such file or directory",
        photos["missing"]: "no such file or directory",
        photos["truncated"]: reasons[photos["truncated"]],
        photos["folder"]: "is a directory",
    }
    assert reasons[photos["truncated"]].startswith("cannot decode image")
    for path, pixels, reason in results:
        if reason is None:
            # The very pixels load_image gives, whichever worker decoded them.
            assert pixels.dtype == np.uint8 and pixels.shape == CENTER.array_shape
            assert np.array_equal(pixels, load_image(path, CENTER))


@pytest.mark.slow  # imports TensorFlow here
def test_worker_processes_hold_no_framework_even_when_the_parent_runs_one(process_decoder, photos):
    import tensorflow  # noqa: F401 - the parent has a framework running, as it does after load_model

    decode_all(process_decoder, photos["good"][:2])
    assert len(process_decoder.worker_frameworks) == 2
    assert all(frameworks == [] for frameworks in process_decoder.worker_frameworks.values())


def test_one_decoder_serves_runs_of_different_shapes_one_after_another(process_decoder, photos):
    big = decode_all(process_decoder, photos["good"][:3], CENTER)
    small = decode_all(process_decoder, photos["good"][:3], SMALL)
    assert [p.shape for _, p, _ in big] == [(224, 224, 3)] * 3
    assert [p.shape for _, p, _ in small] == [(32, 32, 3)] * 3
    assert np.array_equal(small[2][1], load_image(photos["good"][2], SMALL))


def test_a_run_given_up_halfway_leaves_the_next_run_correct(process_decoder, photos):
    endless = process_decoder.map(itertools.cycle(photos["good"]), CENTER)
    next(endless), next(endless)
    endless.close()  # tasks still out answer later, into a segment that is gone: they must be ignored
    results = decode_all(process_decoder, photos["good"][::-1])
    assert [path for path, _, _ in results] == photos["good"][::-1]
    for path, pixels, _ in results:
        assert np.array_equal(pixels, load_image(path, CENTER))


def test_a_map_never_iterated_does_not_hold_the_decoder(process_decoder, photos):
    never_iterated = process_decoder.map(photos["good"][:2], CENTER)
    results = decode_all(process_decoder, photos["good"][:2])
    assert [path for path, _, _ in results] == photos["good"][:2]
    assert all(reason is None for _, _, reason in results)
    del never_iterated


def test_process_decoding_reads_ahead_only_as_far_as_its_slots(process_decoder, photos):
    pulled = []

    def source():
        for i in itertools.count():
            pulled.append(i)
            yield photos["good"][i % len(photos["good"])]

    results = process_decoder.map(source(), CENTER)
    for _ in range(5):
        next(results)
    slots = SLOTS_PER_WORKER * process_decoder.plan.workers
    assert len(pulled) <= 5 + 2 * slots  # never the whole (endless) input
    results.close()


def test_thread_decoding_reads_ahead_only_a_bounded_window():
    pulled = []

    def source():
        for i in itertools.count():
            pulled.append(i)
            yield i

    results = ordered_map(lambda x: x * 2, source(), workers=2, ahead=5)
    assert [next(results) for _ in range(3)] == [0, 2, 4]
    assert len(pulled) <= 3 + 5
    results.close()


def test_a_worker_that_dies_costs_the_image_it_was_decoding_and_the_run_goes_on(photos):
    good = photos["good"]
    with open_decoder(DecodePlan("processes", 1)) as decoder:
        decode_all(decoder, good[:1])  # started and ready
        [pid] = decoder.worker_frameworks
        os.kill(pid, signal.SIGSTOP)  # it takes no task now; its pipe still does
        results = []
        run = threading.Thread(target=lambda: results.extend(decode_all(decoder, good[:4])))
        run.start()
        try:
            sent = wait_for(lambda: len(decoder._workers[0].outstanding) >= 2)  # good[0] and good[1], unread
        finally:
            os.kill(pid, signal.SIGKILL)  # also on the way out: the run's thread must not wait for it forever
            run.join(timeout=60)
        assert sent, "the stopped worker was never sent two images"
        assert not run.is_alive(), "the run still waits for the killed worker"
        assert [path for path, _, _ in results] == good[:4]
        assert results[0][2] == "cannot decode image: the decoding process died (signal 9)"
        for path, pixels, reason in results[1:]:
            assert reason is None and np.array_equal(pixels, load_image(path, CENTER))
        [replacement] = [worker.process.pid for worker in decoder._workers]
        assert replacement != pid


def test_too_little_shared_memory_is_a_clear_error(monkeypatch, photos):
    import resclassify.decoding as decoding

    class Tiny:
        f_bavail, f_frsize = 10, 4096

    monkeypatch.setattr(decoding.os, "statvfs", lambda path: Tiny())
    with open_decoder(DecodePlan("processes", 1)) as decoder:
        with pytest.raises(DecodingError, match=r"/dev/shm has room for 0 decoded images.*--decoding threads"):
            decode_all(decoder, photos["good"][:1])


# 1 MB free in /dev/shm: half of it for one run's slots, room for 3 crops of 224x224 (150,528 bytes each).
SMALL_SHM = 1_000_000
# Docker's default /dev/shm, empty.
DOCKER_SHM = 64 * 2**20


def test_auto_decoding_falls_back_to_threads_with_a_note_when_dev_shm_is_too_small(monkeypatch):
    import resclassify.decoding as decoding

    notes = []
    monkeypatch.setattr(decoding, "shm_free_bytes", lambda: SMALL_SHM)
    assert plan_decoding(10_000, cores=16, device="cpu", notice=notes.append) == DecodePlan("threads", 16)
    assert notes == ["/dev/shm has room for 3 decoded images, fewer than the 32 in flight with 16 processes: "
                     "decoding on 16 threads instead"]
    notes.clear()
    monkeypatch.setattr(decoding, "shm_free_bytes", lambda: DOCKER_SHM)
    assert plan_decoding(10_000, cores=16, device="cpu", notice=notes.append) == DecodePlan("processes", 16)
    assert notes == []
    # Ten views of each image (--tta 10crop) take ten times the room.
    assert plan_decoding(10_000, cores=16, device="cpu", slot_bytes=10 * 224 * 224 * 3,
                         notice=notes.append) == DecodePlan("threads", 16)
    assert notes == ["/dev/shm has room for 22 decoded images, fewer than the 32 in flight with 16 processes: "
                     "decoding on 16 threads instead"]


def test_processes_asked_for_without_room_in_dev_shm_are_a_one_line_error(monkeypatch, cli_run, photos):
    import resclassify.decoding as decoding

    monkeypatch.setattr(decoding, "shm_free_bytes", lambda: SMALL_SHM)
    with pytest.raises(DecodingError, match=r"^/dev/shm has room for 3 decoded images, fewer than the 8 in flight "
                                            r"with 4 processes \(use fewer --workers, --decoding threads"):
        plan_decoding(10_000, mode="processes", workers=4, cores=16)
    # Said before the model loads (these weights do not exist).
    result = cli_run("predict", "--weights", "missing.h5", "--decoding", "processes", "--workers", "4",
                     *photos["good"][:4])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == ("resclassify: error: /dev/shm has room for 3 decoded images, fewer than the 8 in flight "
                             "with 4 processes (use fewer --workers, --decoding threads, or a larger /dev/shm)\n")


def test_a_chosen_process_plan_decodes_on_threads_when_its_crops_do_not_fit(monkeypatch, photos):
    import resclassify.decoding as decoding

    notes = []
    with open_decoder(DecodePlan("processes", 1, chosen=True), notice=notes.append) as decoder:
        # Room for the plan's guess, not for a model's larger input, or another run took it since.
        monkeypatch.setattr(decoding, "shm_free_bytes", lambda: 0)
        results = decode_all(decoder, photos["good"][:3])
    assert [path for path, _, _ in results] == photos["good"][:3]
    for path, pixels, reason in results:
        assert reason is None and np.array_equal(pixels, load_image(path, CENTER))
    assert notes == ["/dev/shm has room for 0 decoded images, fewer than the 2 in flight with 1 process: "
                     "decoding on 1 thread instead"]


def test_decode_workers_ignore_sigterm_and_sighup_sent_to_the_process_group(process_decoder, photos):
    decode_all(process_decoder, photos["good"][:2])  # started and ready
    pids = [worker.process.pid for worker in process_decoder._workers]
    for pid in pids:  # what a scheduler's SIGTERM, or a closed terminal's SIGHUP, to the whole group does
        os.kill(pid, signal.SIGTERM)
        os.kill(pid, signal.SIGHUP)
    time.sleep(0.2)
    results = decode_all(process_decoder, photos["good"])
    assert all(reason is None for _, _, reason in results)
    assert [worker.process.pid for worker in process_decoder._workers] == pids  # none died and was replaced


def stale_candidate(pid, age_seconds=0):
    """A file named as our segments are, for pid (as a run killed with SIGKILL leaves one), made age_seconds ago."""
    path = os.path.join("/dev/shm", f"{SEGMENT_PREFIX}{pid}-{secrets.token_hex(6)}")
    with open(path, "wb") as f:
        f.write(bytes(4096))
    if age_seconds:
        made = time.time() - age_seconds
        os.utime(path, (made, made))
    return path


def dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def segment_files():
    made = []
    yield made
    for path in made:
        if os.path.exists(path):
            os.unlink(path)


def test_segments_of_dead_runs_are_removed_and_live_ones_stay(segment_files, process_decoder, photos):
    import fcntl

    from resclassify.shm import remove_stale_segments

    dead = stale_candidate(dead_pid())
    # A live run's: its owner holds the lock, whatever its pid looks like from here (another pid namespace).
    locked = stale_candidate(dead_pid())
    lock = os.open(locked, os.O_RDONLY)
    fcntl.flock(lock, fcntl.LOCK_SH)
    # Unlocked, but its pid is a live process that started before it was made (a run starting up, or
    # an older version's run): it stays.
    young = stale_candidate(os.getpid())
    # Its pid's number now belongs to a process that started after the segment was made: the owner is dead.
    later = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    reused = stale_candidate(later.pid, age_seconds=3600)
    segment_files.extend([dead, locked, young, reused])
    try:
        # And a segment in use by a run in this process, mid-way.
        running = process_decoder.map(photos["good"], CENTER)
        first = next(running)
        [in_use] = [os.path.join("/dev/shm", segment.name) for segment in process_decoder._segments]
        removed = remove_stale_segments()
        ours = {os.path.basename(path) for path in (dead, locked, young, reused, in_use)}
        assert ours & set(removed) == {os.path.basename(dead), os.path.basename(reused)}
        assert [os.path.exists(path) for path in (dead, locked, young, reused, in_use)] == [False, True, True,
                                                                                             False, True]
        rest = [first.path] + [decoded.path for decoded in running]
        assert rest == photos["good"]
    finally:
        os.close(lock)
        later.kill()
        later.wait()


def test_a_run_planning_processes_removes_the_segment_a_killed_run_left(segment_files):
    left = stale_candidate(dead_pid())
    segment_files.append(left)
    plan_decoding(10, mode="processes", workers=1, cores=2)
    assert not os.path.exists(left)


@pytest.mark.parametrize("images, cores, device, expected", [
    (10_000, 2, "cpu", DecodePlan("threads", 2)),       # the network needs the two cores
    (10_000, 2, "gpu", DecodePlan("processes", 2)),     # a GPU runs the network: every core decodes
    (10_000, 16, "cpu", DecodePlan("processes", 16)),   # many cores
    (100, 16, "gpu", DecodePlan("threads", 16)),        # too short a run to start processes
    (3, 16, "gpu", DecodePlan("threads", 3)),           # never more workers than images
    (0, 16, "gpu", DecodePlan("threads", 1)),
])
def test_plan_picks_processes_where_they_pay_and_threads_where_they_do_not(images, cores, device, expected):
    assert plan_decoding(images, cores=cores, device=device) == expected


def test_plan_follows_what_the_user_asked_for(monkeypatch):
    from resclassify import machine

    assert plan_decoding(10, mode="processes", workers=4, cores=2) == DecodePlan("processes", 4)
    assert plan_decoding(10_000, mode="threads", cores=16, device="gpu") == DecodePlan("threads", 16)
    monkeypatch.setattr(machine, "nvidia_gpu_present", lambda: True)
    assert plan_decoding(10_000, cores=4, device="auto").mode == "processes"
    assert plan_decoding(10_000, cores=4, device="cpu").mode == "threads"
    with pytest.raises(ValueError, match="unknown decoding 'fork'"):
        plan_decoding(10, mode="fork")


def test_plans_describe_themselves():
    assert DecodePlan("processes", 16).describe() == "16 processes"
    assert DecodePlan("threads", 1).describe() == "1 thread"
    assert DecodePlan("threads", 2).as_dict() == {"mode": "threads", "workers": 2}
    assert isinstance(open_decoder(DecodePlan("threads", 2)), ThreadDecoder)


# A program that decodes an endless list in worker processes, slowly, and reports when it is under way.
DRIVER = """
import itertools, sys, time
from resclassify.config import resolve_preprocessing
from resclassify.decoding import DecodePlan, open_decoder

def main(paths):
    with open_decoder(DecodePlan("processes", 2)) as decoder:
        for i, decoded in enumerate(decoder.map(itertools.cycle(paths), resolve_preprocessing())):
            if i == 0:
                print("decoding", flush=True)
            time.sleep(0.01)

if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except KeyboardInterrupt:
        sys.exit(130)
"""


def segments_of(pid):
    return [name for name in os.listdir("/dev/shm") if name.startswith(f"{SEGMENT_PREFIX}{pid}-")]


def wait_until_gone(pids, deadline_seconds=60):
    deadline = time.monotonic() + deadline_seconds
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [pid for pid in pids if alive(pid)]


@pytest.fixture
def driver(tmp_path, photos):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    child = subprocess.Popen([sys.executable, str(script), *photos["good"][:2]], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert child.stdout.readline() == "decoding\n"
        yield child
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        child.communicate()


def test_ctrl_c_stops_the_workers_and_removes_the_shared_memory(driver):
    workers = descendants(driver.pid)
    assert len(workers) >= 3  # the fork server and two workers (and the resource tracker)
    assert segments_of(driver.pid) != []
    os.killpg(driver.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    _, stderr = driver.communicate(timeout=60)
    assert driver.returncode == 130
    assert stderr == ""  # no worker printed a KeyboardInterrupt, nothing was reported leaked
    assert wait_until_gone(workers) == []
    assert segments_of(driver.pid) == []


def test_workers_leave_when_their_parent_is_killed(driver):
    workers = descendants(driver.pid)
    os.kill(driver.pid, signal.SIGKILL)  # no clean-up code runs in the parent
    driver.wait(timeout=60)
    assert wait_until_gone(workers) == []
    # The resource tracker, last to go, removes the segment the parent could not.
    deadline = time.monotonic() + 60
    while segments_of(driver.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert segments_of(driver.pid) == []


def test_process_decoder_is_made_by_the_processes_plan():
    with open_decoder(DecodePlan("processes", 1)) as decoder:
        assert isinstance(decoder, ProcessDecoder)
