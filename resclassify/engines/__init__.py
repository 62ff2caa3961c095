"""Where a run executes: here, through the streaming pipeline (local), or on a Ray cluster (ray).

An engine has one method, score(items, classifier, preprocessing, *, batch_size, workers,
decoding, max_pixels), yielding a pipeline.Scored per item in input order; predict and eval
build their records from it the same way whichever engine ran. (workers and decoding say how
this machine decodes, decoding.py; an engine that decodes elsewhere may ignore them.)
"""

from ..config import ENGINE_CHOICES

__all__ = ["ENGINE_CHOICES", "local_engine", "open_engine"]


def local_engine():
    from .local import LocalEngine

    return LocalEngine()


def open_engine(name="local", *, address=None, device="auto", threads=None, verbose=False):
    """The engine called name (config.ENGINE_CHOICES); use it as a context manager around the run.

    For "ray", address is the cluster's (else RAY_ADDRESS, else a Ray started on this machine for
    the run); device says where its actors run the network (auto: GPUs where the cluster has them).
    """
    if name == "local":
        return local_engine()
    if name == "ray":
        from .ray import RayEngine

        return RayEngine(address=address, device=device, threads=threads, verbose=verbose)
    raise ValueError(f"unknown engine {name!r}; choose from {', '.join(ENGINE_CHOICES)}")
