"""The local engine: the one streaming pipeline (pipeline.score) on this machine's cores and GPU."""

from ..images import DEFAULT_MAX_PIXELS
from ..pipeline import score


class LocalEngine:
    """Runs everything in this process: decoding on a thread pool, the network on a thread of its own."""

    name = "local"

    def score(self, items, classifier, preprocessing, *, batch_size=32, workers=None, max_pixels=DEFAULT_MAX_PIXELS):
        return score(items, classifier, preprocessing, batch_size=batch_size, workers=workers, max_pixels=max_pixels)

    def describe(self, classifier):
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        pass
