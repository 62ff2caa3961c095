"""Shared-memory segments that carry decode workers' crops: made by a run and locked while it lives, attached by
workers, removed at the end; those of runs that died are found by their free lock and removed."""

import os
import sys

# Every shared-memory segment we make is /dev/shm/resclassify-<pid>-<random>, so a leak is easy
# to see and to clean up.
SEGMENT_PREFIX = "resclassify-"
# Where Linux keeps POSIX shared memory as files: the room a run's slots may take, and where the
# segments of runs that died are found.
SHM_FOLDER = "/dev/shm"


def remove_segment(segment):
    try:
        segment.unlink()
    except FileNotFoundError:
        pass
    try:
        segment.close()
    except BufferError:
        pass  # a caller still holds a view of a slot: the mapping goes with it
    lock = getattr(segment, "owner_lock", None)
    if lock is not None:
        segment.owner_lock = None
        os.close(lock)


# Segments whose run died ---------------------------------------------------------------------------
#
# A run that is killed (SIGKILL of its process group: the resource tracker goes with it) leaves
# its segment in /dev/shm, holding memory until the machine restarts. The next run that plans
# worker processes removes it. Which segments are dead is decided by a lock, not by the pid in the
# name alone: the run that makes a segment holds a shared flock on it for as long as it lives, and
# the kernel drops that lock however the process ends. A pid is not proof either way: the number
# may belong to a later, unrelated process (pid reuse), or to a process in another pid namespace
# that shares /dev/shm (the containers of one Kubernetes pod), which this one cannot see. So:
# a segment whose lock is held is alive, whoever holds it; a segment whose lock is free is dead,
# unless its pid is a process that started before the segment was made, which covers the instant
# between a segment's creation and its lock (and segments made by older versions, which had no
# lock, while their run lives).

def hold_segment_lock(name):
    """A descriptor holding a shared lock on our segment `name` while this process lives, or None."""
    import fcntl

    try:
        fd = os.open(os.path.join(SHM_FOLDER, name), os.O_RDONLY)
    except OSError:
        return None  # shared memory not kept as files here (not Linux): no segment to find later either
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def remove_stale_segments(folder=SHM_FOLDER):
    """Remove the segments of resclassify runs that ended without removing them; their names."""
    import fcntl

    try:
        names = [name for name in os.listdir(folder) if name.startswith(SEGMENT_PREFIX)]
    except OSError:
        return []
    removed = []
    for name in names:
        try:
            pid = int(name[len(SEGMENT_PREFIX):].split("-")[0])
        except ValueError:
            continue
        path = os.path.join(folder, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue  # gone already, or another user's (which only they may remove)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its run holds the lock: alive
            started = _process_start_time(pid)
            if started is not None and started <= os.fstat(fd).st_mtime:
                continue  # its run is starting up (between creation and lock), or an older version's
            try:
                os.unlink(path)
                removed.append(name)
            except OSError:
                pass
        finally:
            os.close(fd)
    return removed


def _process_start_time(pid):
    """When process pid started (seconds since the epoch, rounded down), or None when there is no
    such live process. From /proc: Linux, where the segments are files too."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    if fields[0] in ("Z", "X"):
        return None  # it has exited; only its parent has yet to collect it
    # The boot time is in whole seconds, rounded down, and a second more is taken off for clock
    # adjustments: a start found early can only keep a segment that could have gone, never
    # remove one in use.
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK") - 1


def attach(name):
    """The parent's segment, or None when that run has ended already. Never registered with the
    resource tracker: the parent owns the segment, and a second registration would have the
    tracker report it as leaked."""
    from multiprocessing import resource_tracker, shared_memory

    if sys.version_info >= (3, 13):
        try:
            return shared_memory.SharedMemory(name=name, track=False)
        except FileNotFoundError:
            return None
    register = resource_tracker.register
    resource_tracker.register = lambda *args, **kwargs: None
    try:
        return shared_memory.SharedMemory(name=name)
    except FileNotFoundError:
        return None
    finally:
        resource_tracker.register = register


def close_quietly(segment):
    try:
        segment.close()
    except BufferError:
        pass
