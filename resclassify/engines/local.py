"""The local engine: the one streaming pipeline (pipeline.score) on this machine's cores and GPU."""

from ..images import DEFAULT_MAX_PIXELS
from ..pipeline import score


class LocalEngine:
    """Runs on this machine: decoding on threads or worker processes (decoding.py), the network on a thread of its own."""

    name = "local"

    def score(self, items, classifier, preprocessing, *, batch_size=32, workers=None, decoding="auto",
              max_pixels=DEFAULT_MAX_PIXELS):
        return score(items, classifier, preprocessing, batch_size=batch_size, workers=workers, decoding=decoding,
                     max_pixels=max_pixels)

    def describe(self, classifier):
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        pass
