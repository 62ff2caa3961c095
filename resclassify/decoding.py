"""The decode workers: image files to uint8 arrays on threads or in worker processes, results in input order.

Worker processes write each crop into a slot of one shared-memory segment and send back only
its number, so no pixels are pickled; the number of slots bounds the memory however many
images a run has. Threads serve where processes do not pay: few cores that the network needs,
or a run too short to start them.
"""

import collections
import contextlib
import os
import secrets
import signal
import sys
import threading
import traceback
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from . import machine
from .config import DECODING_CHOICES, check_choice
from .errors import DecodingError, ImageError, InputError
from .images import DEFAULT_MAX_PIXELS, ImageBytes, load_image
from .shm import (SEGMENT_PREFIX, SHM_FOLDER, attach, close_quietly, hold_segment_lock, remove_segment,
                  remove_stale_segments)

# The size of one slot when the preprocessing is not known yet: a 224x224 RGB crop.
DEFAULT_SLOT_BYTES = 224 * 224 * 3
# auto picks processes only for runs at least this long: starting them costs about a third of a
# second (an interpreter importing NumPy and Pillow), which threads repay within a few hundred images.
PROCESSES_MIN_IMAGES = 256
# ... and only with a GPU doing the network, or this many cores: on fewer, the network needs
# the cores, and threads already keep up with it (measured: 0.9 of the raw network on 2 cores).
PROCESSES_MIN_CORES = 8
# Images in flight per worker (one decoding, one waiting in its pipe), and slots per worker:
# the slots beyond those in flight absorb a slow image at the head of the input order.
TASKS_PER_WORKER = 2
SLOTS_PER_WORKER = 4
# At most this much of /dev/shm's free space goes to one run's slots (Docker gives 64 MB).
SHM_SHARE = 0.5
# Modules a worker must never hold: forking or importing them there would copy a running
# framework's threads and device state, or cost seconds and gigabytes per worker.
FRAMEWORKS = ("tensorflow", "jax", "keras", "torch")
# How long close() lets workers leave by themselves before it kills them.
STOP_GRACE_SECONDS = 1.0
# The signals that stop a run (Ctrl-C, a scheduler's time limit, a closed terminal). They often
# come to the whole process group, but they are the parent's to handle: it stops the workers in
# order; a worker that went at once would cost the image it was decoding.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def processes_supported():
    """Whether worker processes can be started without forking this process (forkserver: POSIX)."""
    import multiprocessing

    return "forkserver" in multiprocessing.get_all_start_methods() and hasattr(signal, "pthread_sigmask")


@dataclass(frozen=True)
class DecodePlan:
    """How a run decodes: mode "threads" or "processes", and how many workers.

    chosen: the mode was chosen by plan_decoding (--decoding auto), so it may fall back to threads.
    """

    mode: str
    workers: int
    chosen: bool = field(default=False, compare=False)

    def describe(self):
        noun = "thread" if self.mode == "threads" else "process"
        return f"{self.workers} {noun}{'' if self.workers == 1 else 'es' if noun == 'process' else 's'}"

    def as_dict(self):
        return {"mode": self.mode, "workers": self.workers}


def plan_decoding(images, *, workers=None, mode="auto", device="auto", cores=None, slot_bytes=None, notice=None):
    """The decoding for a run of `images` images: the one place the defaults are worked out.

    mode "auto" chooses processes for a run of at least PROCESSES_MIN_IMAGES images when a GPU
    does the network (every core is free to decode) or there are PROCESSES_MIN_CORES cores, and
    /dev/shm has room for the images they keep in flight (slot_bytes each, default a 224x224 crop),
    and threads otherwise (saying why to notice, when it is the room). workers defaults to every
    available core, never more than the images. device is "cpu", "gpu" or "auto" (a GPU guessed
    from the driver, without importing a framework). Where processes are planned, the segments of
    runs that died are removed first (remove_stale_segments), so that their room counts.
    """
    check_choice("decoding", mode, DECODING_CHOICES)
    cores = cores or machine.available_cores()
    count = workers or cores
    count = max(1, min(count, images)) if images else 1
    chosen = mode == "auto"
    if mode == "auto":
        gpu = device == "gpu" or (device == "auto" and machine.nvidia_gpu_present())
        many = cores >= PROCESSES_MIN_CORES or (gpu and cores >= 2)
        mode = "processes" if images >= PROCESSES_MIN_IMAGES and many and processes_supported() else "threads"
    elif mode == "processes" and not processes_supported():
        raise DecodingError("decoding in worker processes needs Python's forkserver start method, which this "
                            "platform lacks; use --decoding threads")
    plan = DecodePlan(mode, count, chosen)
    if mode == "processes":
        remove_stale_segments()
        shortage = _shm_shortage(plan, slot_bytes or DEFAULT_SLOT_BYTES)
        if shortage and not chosen:
            raise DecodingError(f"{shortage} (use fewer --workers, --decoding threads, or a larger /dev/shm)")
        if shortage:
            plan = DecodePlan("threads", count, chosen)
            if notice is not None:
                notice(f"{shortage}: decoding on {plan.describe()} instead")
    return plan


def shm_free_bytes():
    """Free bytes in /dev/shm, or None where it cannot be asked (then nothing is checked)."""
    try:
        stats = os.statvfs(SHM_FOLDER)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


def _shm_room(slot_bytes):
    """How many slots of slot_bytes one run may take in /dev/shm (SHM_SHARE of its free space), or None."""
    free = shm_free_bytes()
    return None if free is None else int(free * SHM_SHARE) // slot_bytes


def _shm_shortage(plan, slot_bytes):
    """Why /dev/shm cannot hold the slots plan's workers keep in flight, or None when it can."""
    room = _shm_room(slot_bytes)
    needed = TASKS_PER_WORKER * plan.workers
    if room is None or room >= needed:
        return None
    return f"/dev/shm has room for {room} decoded images, fewer than the {needed} in flight with {plan.describe()}"


@dataclass
class Decoded:
    """One input after decoding: its pixels, or the reason it has none.

    pixels is a uint8 array of the preprocessing's array_shape. From a worker process it is a
    view of a shared slot, valid until the next result is taken: copy it to keep it.
    """

    path: str
    pixels: np.ndarray | None = None
    error: InputError | None = None


def open_decoder(plan, notice=None):
    """A started decoder for plan (processes start in the background); use it as a context manager.

    notice receives one-line messages (a chosen plan falling back to threads for want of /dev/shm).
    """
    return ProcessDecoder(plan, notice) if plan.mode == "processes" else ThreadDecoder(plan)


def plan_for(decoding="auto", workers=None, *, images, device="auto"):
    """The plan a run follows: an open decoder's own, else plan_decoding's for the mode decoding names."""
    if isinstance(decoding, (ThreadDecoder, ProcessDecoder)):
        return decoding.plan
    return plan_decoding(images, workers=workers, mode=decoding, device=device)


@contextlib.contextmanager
def decoder_for(decoding="auto", workers=None, *, images, device="auto"):
    """The decoder a run uses: decoding is a mode (then one is opened and closed here) or an open decoder."""
    if isinstance(decoding, (ThreadDecoder, ProcessDecoder)):
        yield decoding
        return
    with open_decoder(plan_for(decoding, workers, images=images, device=device)) as decoder:
        yield decoder


def ordered_map(function, items, workers, ahead):
    """function over items on a thread pool, results in input order, at most `ahead` in flight.

    Pillow releases the GIL while decoding, so threads decode in parallel with each other and
    with the network; the bounded window keeps memory flat however many items there are.
    """
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="resclassify-decode")
    pending = collections.deque()
    try:
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        # Without waiting: when the caller stops early (Ctrl-C, an error writing the output),
        # nothing queued starts, and a decode still running (a hung network file system, say)
        # does not hold the caller up.
        pool.shutdown(wait=False, cancel_futures=True)


def _decode_here(item, preprocessing, max_pixels):
    if isinstance(item, InputError):
        return Decoded(item.path, error=item)
    path, data = _path_and_data(item)
    try:
        return Decoded(path, pixels=load_image(path, preprocessing, max_pixels, data=data))
    except InputError as exc:
        return Decoded(path, error=exc)


def _path_and_data(item):
    """An item's name, and its bytes when they were fetched already (sources.fetching), else None."""
    if isinstance(item, ImageBytes):
        return item.path, item.data
    return os.fspath(item), None


class ThreadDecoder:
    """Decodes on a pool of threads in this process."""

    def __init__(self, plan):
        self.plan = plan

    def map(self, items, preprocessing, max_pixels=DEFAULT_MAX_PIXELS, *, ahead=None):
        """A Decoded for every item (a path, or an InputError found earlier), in input order.

        At most `ahead` images (default SLOTS_PER_WORKER per worker) are decoded before they are taken.
        """
        workers = self.plan.workers
        return ordered_map(lambda item: _decode_here(item, preprocessing, max_pixels), items, workers,
                           ahead=ahead or SLOTS_PER_WORKER * workers)

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


_END = object()


class _Worker:
    """One worker process as the parent sees it: its pipe, and the tasks it was sent, oldest first."""

    def __init__(self, process, connection):
        self.process = process
        self.connection = connection
        self.outstanding = collections.deque()  # (job, index, slot, path, data)
        self.ready = False
        self.at_end = False  # its pipe reached end of file: it is exiting


class _Entry:
    """An input waiting its turn: its path, the slot its pixels go to, and its Decoded once known."""

    __slots__ = ("path", "slot", "decoded")

    def __init__(self, path, decoded=None):
        self.path = path
        self.slot = None
        self.decoded = decoded


class ProcessDecoder:
    """Decodes in worker processes that write crops into shared-memory slots.

    The workers come from the forkserver start method (never a fork of this process, which may
    be running TensorFlow or JAX), started from a thread with STOP_SIGNALS blocked, so that Ctrl-C,
    SIGTERM or SIGHUP sent to the process group reaches only this process, which stops them. They start in the background as soon as the
    decoder is made (the command line makes it before loading the model, so the two overlap).
    One map() at a time. close() (or the with block) stops the workers and removes the shared
    memory; should neither run, the same happens when the decoder is collected or at exit.
    """

    def __init__(self, plan, notice=None):
        import multiprocessing
        from multiprocessing import forkserver

        self.plan = plan
        self.notice = notice
        remove_stale_segments()
        self._context = multiprocessing.get_context("forkserver")
        if getattr(forkserver._forkserver, "_forkserver_pid", None) is None:
            # The fork server imports this module (NumPy, Pillow, our images module) and nothing
            # else: not the caller's main module, which may import a framework.
            self._context.set_forkserver_preload([__name__])
        self._workers = []
        self._segments = []
        self._job_message = None
        self._start_error = None
        self._mapping = False
        self._closed = False
        self._jobs = 0
        self.worker_frameworks = {}  # pid -> the FRAMEWORKS a worker had loaded when it started
        self._finalizer = weakref.finalize(self, _shut_down, self._workers, self._segments)
        self._starter = threading.Thread(target=self._start_workers, name="resclassify-decode-start", daemon=True)
        self._starter.start()

    # Starting ----------------------------------------------------------------------------------

    def _start_workers(self):
        # A process started from here (the fork server and the resource tracker the first time,
        # and every worker the fork server forks) inherits this thread's signal mask: the stop
        # signals stay blocked in all of them.
        signal.pthread_sigmask(signal.SIG_BLOCK, set(STOP_SIGNALS))
        try:
            for _ in range(self.plan.workers):
                if self._closed:
                    return
                self._start_one()
        except BaseException as exc:  # noqa: BLE001 - raised again by map(), in the caller's thread
            self._start_error = exc

    def _start_one(self):
        parent_end, child_end = self._context.Pipe()
        process = self._context.Process(target=_worker_main, args=(child_end,), name="resclassify-decode",
                                        daemon=True)
        try:
            process.start()
        finally:
            child_end.close()
        worker = _Worker(process, parent_end)
        self._workers.append(worker)
        return worker

    def _wait_started(self):
        while self._starter.is_alive():
            self._starter.join(0.1)
        if self._start_error is not None:
            raise DecodingError(f"cannot start decode worker processes: {self._start_error} "
                                "(--decoding threads decodes without them)")

    # Decoding ----------------------------------------------------------------------------------

    def map(self, items, preprocessing, max_pixels=DEFAULT_MAX_PIXELS, *, ahead=None):
        """A Decoded for every item (a path, or an InputError found earlier), in input order.

        The read-ahead is bounded by the shared-memory slots (SLOTS_PER_WORKER per worker), whatever `ahead` says.
        """
        if self._closed:
            raise RuntimeError("this decoder is closed")
        if self._mapping:
            raise RuntimeError("a decoder runs one map() at a time")
        return self._map(items, preprocessing, max_pixels)

    def _map(self, items, preprocessing, max_pixels):
        # Busy from the first result asked for, not from the call: a map never iterated never
        # runs its finally, and would hold the decoder for good.
        if self._mapping:
            raise RuntimeError("a decoder runs one map() at a time")
        self._mapping = True
        segment = None
        try:
            self._wait_started()
            shape = tuple(preprocessing.array_shape)
            slot_bytes = int(np.prod(shape))
            shortage = _shm_shortage(self.plan, slot_bytes)
            if shortage and self.plan.chosen:
                # The plan counted on a smaller crop (a model's own input size) or on room another
                # run has taken since: this map decodes on threads, as the plan would have.
                threads = DecodePlan("threads", self.plan.workers)
                if self.notice is not None:
                    self.notice(f"{shortage}: decoding on {threads.describe()} instead")
                yield from ThreadDecoder(threads).map(items, preprocessing, max_pixels)
                return
            if shortage:
                raise DecodingError(f"{shortage} (use fewer --workers, --decoding threads, or a larger /dev/shm)")
            slot_count = self._slot_count(slot_bytes)
            segment = self._create_segment(slot_count * slot_bytes)
            self._jobs += 1
            self._job_message = ("job", self._jobs, segment.name, shape, slot_bytes, preprocessing, max_pixels)
            for worker in self._workers:
                self._send(worker, self._job_message)
            yield from self._run(self._jobs, iter(items), segment, shape, slot_bytes, slot_count)
        finally:
            # Tasks still out belong to this job alone: their answers are dropped when they come,
            # and their writes land in a segment nobody reads again.
            self._job_message = None
            self._mapping = False
            if segment is not None:
                remove_segment(segment)
                if segment in self._segments:  # close() may have cleared the list already
                    self._segments.remove(segment)

    def _run(self, job, items, segment, shape, slot_bytes, slot_count):
        free_slots = list(range(slot_count - 1, -1, -1))
        order = collections.deque()  # _Entry per input, in input order, until it is handed out
        in_flight = {}  # task index -> its _Entry
        index = 0
        exhausted = False
        while True:
            # Hand out work while a slot is free, a worker has room, and the window is not full.
            while not exhausted and free_slots and len(order) < 2 * slot_count:
                worker = self._least_busy()
                if worker is None:
                    break
                item = next(items, _END)
                if item is _END:
                    exhausted = True
                elif isinstance(item, InputError):
                    order.append(_Entry(item.path, Decoded(item.path, error=item)))
                else:
                    path, data = _path_and_data(item)
                    entry = _Entry(path)
                    entry.slot = free_slots.pop()
                    order.append(entry)
                    in_flight[index] = entry
                    worker.outstanding.append((job, index, entry.slot, path, data))
                    self._send(worker, ("decode", index, path, entry.slot, data))
                    index += 1
            if order and order[0].decoded is not None:
                entry = order.popleft()
                yield entry.decoded
                if entry.decoded.pixels is not None:
                    entry.decoded.pixels = None
                    free_slots.append(entry.slot)
                continue
            if not order and exhausted:
                return
            for kind, task, detail in self._receive():
                task_job, task_index, slot, path, _ = task
                if task_job != job:
                    continue  # from a run given up earlier
                entry = in_flight.pop(task_index)
                if kind == "ok":
                    entry.decoded = Decoded(path, pixels=np.ndarray(shape, np.uint8, buffer=segment.buf,
                                                                    offset=slot * slot_bytes))
                elif kind in ("error", "died"):
                    free_slots.append(slot)
                    entry.decoded = Decoded(path, error=ImageError(path, detail))
                else:
                    raise DecodingError(f"decoding {path} failed in a worker process:\n{detail}")

    def _least_busy(self):
        best = None
        for worker in self._workers:
            if not worker.at_end and len(worker.outstanding) < TASKS_PER_WORKER and (
                    best is None or len(worker.outstanding) < len(best.outstanding)):
                best = worker
        return best

    def _send(self, worker, message):
        try:
            worker.connection.send(message)
        except OSError:
            worker.at_end = True  # it died: its sentinel tells _receive, which hands its tasks on

    def _receive(self):
        """Wait until a worker answers or dies; (kind, task, detail) for each task answered."""
        from multiprocessing.connection import wait

        waitables = {}
        for worker in self._workers:
            if not worker.at_end:
                waitables[worker.connection] = worker
            waitables[worker.process.sentinel] = worker
        answers = []
        dead = []
        for ready in wait(list(waitables)):
            worker = waitables[ready]
            if ready == worker.process.sentinel:
                dead.append(worker)
                continue
            try:
                while worker.connection.poll():
                    answers.extend(self._take_message(worker, worker.connection.recv()))
            except (EOFError, OSError):
                worker.at_end = True
        for worker in dead:
            answers.extend(self._replace(worker))
        return answers

    def _take_message(self, worker, message):
        if message[0] == "ready":
            _, pid, frameworks = message
            worker.ready = True
            self.worker_frameworks[pid] = frameworks
            return []
        kind, job, index, *detail = message
        task = worker.outstanding.popleft()
        if task[:2] != (job, index):
            raise DecodingError(f"decode worker {worker.process.pid} answered out of turn")
        return [(kind, task, detail[0] if detail else None)]

    def _replace(self, worker):
        """A worker died: the image it was decoding is an error, the tasks queued behind it go to a new one."""
        answers = []
        try:
            while worker.connection.poll():
                answers.extend(self._take_message(worker, worker.connection.recv()))
        except (EOFError, OSError):
            pass
        worker.process.join()
        worker.connection.close()
        self._workers.remove(worker)
        code = worker.process.exitcode
        if not worker.ready:
            raise DecodingError(
                f"a decode worker process exited with status {code} as it started; see its error above. A script "
                "that runs resclassify in worker processes needs its main code under "
                "`if __name__ == \"__main__\":` (or --decoding threads)")
        how = f"signal {-code}" if code is not None and code < 0 else f"status {code}"
        tasks = list(worker.outstanding)
        if tasks:
            answers.append(("died", tasks[0], f"cannot decode image: the decoding process died ({how})"))
        replacement = self._start_one()
        if self._job_message is not None:
            self._send(replacement, self._job_message)
            current = self._job_message[1]
            for task in tasks[1:]:
                if task[0] == current:
                    replacement.outstanding.append(task)
                    self._send(replacement, ("decode", task[1], task[3], task[2], task[4]))
        return answers

    # Shared memory -----------------------------------------------------------------------------

    def _slot_count(self, slot_bytes):
        """Slots for this map: SLOTS_PER_WORKER a worker, fewer where /dev/shm is short (never
        fewer than in flight: _map checked that)."""
        wanted = SLOTS_PER_WORKER * self.plan.workers
        room = _shm_room(slot_bytes)
        return wanted if room is None else min(wanted, room)

    def _create_segment(self, size):
        from multiprocessing import shared_memory

        name = f"{SEGMENT_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
        segment = shared_memory.SharedMemory(name=name, create=True, size=size)
        segment.owner_lock = hold_segment_lock(name)
        self._segments.append(segment)
        return segment

    # Stopping ----------------------------------------------------------------------------------

    def close(self):
        """Stop the workers and remove the shared memory; safe to call twice, and after a Ctrl-C."""
        self._closed = True
        while self._starter.is_alive():
            self._starter.join(0.1)
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _shut_down(workers, segments):
    """Remove the segments, then let the workers go: end of file on their pipes, then SIGKILL (they ignore SIGTERM)."""
    import time

    for segment in list(segments):
        remove_segment(segment)
    segments.clear()
    for worker in workers:
        worker.connection.close()
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for worker in workers:
        worker.process.join(max(0.0, deadline - time.monotonic()))
    for worker in workers:
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()
    workers.clear()


# The worker process ------------------------------------------------------------------------------

def _worker_main(connection):
    """Decode the images the parent sends, each into the slot it names; leave when the parent does."""
    # The stop signals are blocked already (see ProcessDecoder._start_workers); this covers a fork
    # server someone else started. A worker still leaves when its parent goes: its pipe ends.
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)
    try:
        connection.send(("ready", os.getpid(), [name for name in FRAMEWORKS if name in sys.modules]))
        _serve(connection)
    except (EOFError, OSError):
        pass  # the parent is gone or closed our pipe: nothing is left to do


def _serve(connection):
    segment = job = None
    try:
        while True:
            message = connection.recv()
            if message[0] == "job":
                _, job, name, shape, slot_bytes, preprocessing, max_pixels = message
                if segment is not None:
                    close_quietly(segment)
                segment = attach(name)
                continue
            _, index, path, slot, data = message
            try:
                pixels = load_image(path, preprocessing, max_pixels, data=data)
                if segment is None:
                    raise ImageError(path, "the run ended before it was decoded")
                target = np.ndarray(shape, np.uint8, buffer=segment.buf, offset=slot * slot_bytes)
                target[...] = pixels
                del target
                reply = ("ok", job, index)
            except InputError as exc:
                reply = ("error", job, index, exc.reason)
            except Exception:  # noqa: BLE001 - a bug, not a bad file: the parent stops the run with it
                reply = ("crash", job, index, traceback.format_exc())
            connection.send(reply)
    finally:
        if segment is not None:
            close_quietly(segment)
