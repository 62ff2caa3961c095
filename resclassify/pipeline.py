"""The one streaming pipeline predict and eval share: paths → decoded images → fixed-shape batches → probabilities."""

import collections
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .images import DEFAULT_MAX_PIXELS, load_image
from .metrics import top_k


@dataclass
class Scored:
    """One input after the network: probabilities, or the reason it has none."""

    path: str
    probabilities: np.ndarray = None
    error: InputError = None
    pixels: np.ndarray = None


def default_workers():
    return os.cpu_count() or 1


def ordered_map(function, items, workers, ahead):
    """function over items on a thread pool, results in input order, at most `ahead` in flight.

    Pillow releases the GIL while decoding, so threads decode in parallel with each other and
    with the network; the bounded window keeps memory flat however many items there are.
    """
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="resclassify-load") as pool:
        pending = collections.deque()
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def score(items, classifier, preprocessing, *, batch_size=32, workers=None, max_pixels=DEFAULT_MAX_PIXELS):
    """Yield a Scored for every item (a path, or an InputError found earlier), in input order."""
    items = list(items)
    good = sum(1 for item in items if not isinstance(item, InputError))
    # A run smaller than one batch uses a batch of its own size: no padding to compute.
    batch_size = max(1, min(batch_size, good))
    workers = workers or default_workers()

    def load(item):
        if isinstance(item, InputError):
            return Scored(item.path, error=item)
        try:
            return Scored(item, pixels=load_image(item, preprocessing, max_pixels))
        except InputError as exc:
            return Scored(item, error=exc)

    # The network runs on a thread of its own: while it works on one batch, this thread
    # assembles the next and hands out the results of the last, so the network never waits
    # for the plumbing (about 4% of the wall time when it did).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="resclassify-network") as network:
        running = None
        waiting = []
        ready = 0
        for scored in ordered_map(load, items, workers, ahead=2 * batch_size + workers):
            waiting.append(scored)
            if scored.error is None:
                ready += 1
            if ready == batch_size:
                submitted = _submit_batch(network, waiting, classifier, preprocessing, batch_size)
                if running is not None:
                    yield from running.result()
                running = submitted
                waiting, ready = [], 0
        submitted = _submit_batch(network, waiting, classifier, preprocessing, batch_size)
        if running is not None:
            yield from running.result()
        yield from submitted.result()


def _submit_batch(network, waiting, classifier, preprocessing, batch_size):
    """Stack a uint8 batch here, run it on the network thread; the future gives the Scored list back.

    The batch stays uint8 (a quarter of float32's bytes to move): the network normalizes it on
    the device, in the mode the preprocessing names.
    """
    loaded = [s for s in waiting if s.error is None]
    batch = np.stack([s.pixels for s in loaded]) if loaded else None

    def run():
        if loaded:
            probabilities = classifier.predict(batch, pad_to=batch_size, normalization=preprocessing.mode)
            for s, p in zip(loaded, probabilities):
                s.probabilities, s.pixels = p, None
        return waiting

    return network.submit(run)


def prediction_record(scored, classes, k, model_name=None, backend=None, run=None):
    """The record every output format writes: the top k classes (and which model, on which backend, in which
    run), or the error.

    wnid is None for classes without WordNet ids (a user's own). run is records.run_identity's
    dict: what else, beside the model's name, tells this run's records from another's.
    """
    if scored.error is not None:
        return {"path": scored.path, "error": scored.error.reason}
    predictions = []
    for rank, index in enumerate(top_k(scored.probabilities, k), start=1):
        index = int(index)
        predictions.append({
            "rank": rank,
            "index": index,
            "wnid": classes.wnid(index),
            "label": classes.labels[index],
            # Six significant digits: float32 carries about seven, and JSON stays readable.
            "probability": float(f"{scored.probabilities[index]:.6g}"),
        })
    record = {"path": scored.path}
    if model_name is not None:
        record["model"] = model_name
    if backend is not None:
        record["backend"] = backend
    record["predictions"] = predictions
    if run is not None:
        record["run"] = run
    return record
