"""Facts about this machine and its installed packages, each with one answer, found without importing a framework."""

import importlib.metadata
import math
import os
import re
import stat

# The driver's per-GPU device files; /dev/nvidiactl, /dev/nvidia-uvm, /dev/nvidia-modeset and
# /dev/nvidia-caps are there on any machine with the driver, GPU or not.
_GPU_DEVICE = re.compile(r"nvidia\d+")
GPU_LIST_FOLDER = "/proc/driver/nvidia/gpus"
DEVICE_FOLDER = "/dev"


def nvidia_gpu_present():
    """Whether this machine has an NVIDIA GPU that CUDA would show (a guess for --device auto).

    The NVIDIA driver lists each GPU under /proc/driver/nvidia/gpus and makes a character device
    /dev/nvidiaN for it. A container given some GPUs gets their device files but often not the
    /proc listing, and not necessarily /dev/nvidia0 (a container given only the host's GPU 3
    sees /dev/nvidia3): so any /dev/nvidiaN counts. CUDA_VISIBLE_DEVICES="" or -1 hides them all.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    if _entries(GPU_LIST_FOLDER):
        return True
    return any(_GPU_DEVICE.fullmatch(name) and _is_character_device(os.path.join(DEVICE_FOLDER, name))
               for name in _entries(DEVICE_FOLDER))


def _entries(folder):
    try:
        return os.listdir(folder)
    except OSError:
        return []


def _is_character_device(path):
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


def available_cores():
    """CPU cores this process may use: its affinity mask, capped by a cgroup CPU quota (containers)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def _cgroup_cpu_quota():
    """The CPU quota of this process's cgroup in cores (v2 cpu.max, else v1), or None."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
            quota = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
            period = int(f.read())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def version(*distributions):
    """The version of the first of these distributions that is installed, or None; nothing is imported.

    Several names, because one framework ships under several (tensorflow, tensorflow-cpu; onnxruntime,
    onnxruntime-gpu).
    """
    for distribution in distributions:
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None
