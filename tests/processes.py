"""What /proc (Linux) says about processes: the tests check that a run leaves none behind."""

import os

# A zombie has exited (only its parent has yet to collect it); X: dead, on its way out of the table.
GONE = ("Z", "X")


def process_table():
    """pid -> (state, parent pid, process group) of every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()  # the name, in parentheses, may hold spaces
            except OSError:  # it ended while the table was read
                continue
            table[int(entry)] = (fields[0], int(fields[1]), int(fields[2]))
    return table


def alive(pid):
    """Whether a process runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in GONE
    except OSError:
        return False


def children(pid):
    """The live processes whose parent is pid."""
    return [child for child, (state, parent, _) in process_table().items() if parent == pid and state not in GONE]


def descendants(pid):
    """Every process below pid (children, their children, ...)."""
    below = {}
    for child, (_, parent, _) in process_table().items():
        below.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:  # a tree (each process has one parent): it ends
        for child in below.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def live_processes_in_group(group):
    """The live processes of a process group."""
    return [pid for pid, (state, _, pgrp) in process_table().items() if pgrp == group and state not in GONE]
