"""The one streaming pipeline predict and eval share: paths → decoded images → fixed-shape batches → probabilities."""

import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .decoding import decoder_for
from .errors import InputError
from .images import DEFAULT_MAX_PIXELS
from .metrics import top_k


@dataclass
class Scored:
    """One input after the network: probabilities, or the reason it has none."""

    path: str
    probabilities: np.ndarray = None
    error: InputError = None


# Batches being filled, run and handed out at once: batch n's array is filled again for batch
# n + 3 only, after batch n's results are back.
BATCH_BUFFERS = 3


def count_images(items):
    """How many items are paths to decode (the rest are InputErrors found earlier)."""
    return sum(1 for item in items if not isinstance(item, InputError))


def score(items, classifier, preprocessing, *, batch_size=32, workers=None, decoding="auto",
          max_pixels=DEFAULT_MAX_PIXELS):
    """Yield a Scored for every item (a path, or an InputError found earlier), in input order.

    decoding is "auto", "threads" or "processes" (see decoding.plan_decoding, which also gives
    the default workers), or an open decoder to use (its own plan then stands).
    """
    items = list(items)
    good = count_images(items)
    # A run smaller than one batch uses a batch of its own size: no padding to compute.
    batch_size = max(1, min(batch_size, good))
    with decoder_for(decoding, workers, images=good, device=getattr(classifier, "device", "auto")) as decoder:
        # Two batches ahead, as many as the network thread and the batch being filled can use.
        decoded_items = decoder.map(items, preprocessing, max_pixels, ahead=2 * batch_size + decoder.plan.workers)
        with contextlib.closing(decoded_items):
            yield from _score(decoded_items, classifier, preprocessing, batch_size)


def _score(decoded_items, classifier, preprocessing, batch_size):
    # The network runs on a thread of its own: while it works on one batch, this thread
    # assembles the next and hands out the results of the last, so the network never waits
    # for the plumbing (about 4% of the wall time when it did).
    buffers = [np.empty((batch_size,) + tuple(preprocessing.array_shape), np.uint8) for _ in range(BATCH_BUFFERS)]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="resclassify-network") as network:
        running = None
        waiting = []
        batches = 0
        batch = buffers[0]
        ready = 0
        for decoded in decoded_items:
            waiting.append(Scored(decoded.path, error=decoded.error))
            if decoded.error is None:
                # Copied out at once: a worker's slot is only lent until the next image is taken.
                batch[ready] = decoded.pixels
                ready += 1
            if ready == batch_size:
                submitted = _submit_batch(network, waiting, batch[:ready], classifier, preprocessing, batch_size)
                if running is not None:
                    yield from running.result()
                running = submitted
                batches += 1
                batch = buffers[batches % BATCH_BUFFERS]
                waiting, ready = [], 0
        submitted = _submit_batch(network, waiting, batch[:ready], classifier, preprocessing, batch_size)
        if running is not None:
            yield from running.result()
        yield from submitted.result()


def _submit_batch(network, waiting, batch, classifier, preprocessing, batch_size):
    """Run a uint8 batch on the network thread; the future gives the Scored list back with probabilities set.

    The batch stays uint8 (a quarter of float32's bytes to move): the network normalizes it on
    the device, in the mode the preprocessing names.
    """
    loaded = [s for s in waiting if s.error is None]
    if loaded and hasattr(classifier, "stage"):
        # Start its copy to the device now (JAX copies asynchronously), while the network still
        # works on the batch before. The buffer is not filled again until this batch's results are back.
        batch = classifier.stage(batch, pad_to=batch_size)

    def run():
        if loaded:
            probabilities = probabilities_of(classifier, preprocessing, batch, pad_to=batch_size)
            for s, p in zip(loaded, probabilities):
                s.probabilities = p
        return waiting

    return network.submit(run)


def probabilities_of(classifier, preprocessing, batch, pad_to=None):
    """Class probabilities (float32, a row per image) for a uint8 batch of decoded images (images.load_image's
    arrays), normalized on the device as the preprocessing says.

    The network's one step, shared by this pipeline and the Ray engine's actors, so both compute alike.
    """
    return classifier.predict(batch, pad_to=pad_to, normalization=preprocessing.mode)


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
