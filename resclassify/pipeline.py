"""The one streaming pipeline predict and eval share: paths → decoded images → fixed-shape batches → probabilities."""

import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .decoding import decoder_for
from .errors import InputError
from .images import DEFAULT_MAX_PIXELS
from .metrics import top_k
from .sources.fetching import fetch_ahead, needs_fetching


@dataclass
class Scored:
    """One input after the network: probabilities, or the reason it has none."""

    path: str
    probabilities: np.ndarray | None = None
    error: InputError | None = None
    # What ran the network for it, where that is not the classifier at hand: a Ray actor chooses
    # the runtime for its own device.
    backend: str | None = None


# Batches being filled, run and handed out at once: batch n's array is filled again for batch
# n + 3 only, after batch n's results are back.
BATCH_BUFFERS = 3


def count_images(items):
    """How many items are paths to decode (the rest are InputErrors found earlier)."""
    return sum(1 for item in items if not isinstance(item, InputError))


def images_per_batch(batch_size, views):
    """How many images make one network call of about batch_size rows, all views of an image in one call."""
    return max(1, batch_size // views)


def score(items, classifier, preprocessing, *, batch_size=32, workers=None, decoding="auto",
          max_pixels=DEFAULT_MAX_PIXELS):
    """Yield a Scored for every item (a path, or an InputError found earlier), in input order.

    decoding is "auto", "threads" or "processes" (see decoding.plan_decoding, which also gives
    the default workers), or an open decoder to use (its own plan then stands). batch_size
    counts network inputs: with test-time augmentation each image brings preprocessing.views of
    them, and a batch holds batch_size // views whole images (at least one), whose views go
    through the network together and are averaged back to one row per image.
    """
    items = list(items)
    good = count_images(items)
    # A run smaller than one batch uses a batch of its own size: no padding to compute.
    per_batch = max(1, min(images_per_batch(batch_size, preprocessing.views), good))
    with decoder_for(decoding, workers, images=good, device=getattr(classifier, "device", "auto")) as decoder:
        inputs = iter(items)
        if needs_fetching(items):
            # Remote images' bytes are read ahead on threads of their own (sources.fetching).
            inputs = fetch_ahead(items)
        # Two batches ahead, as many as the network thread and the batch being filled can use.
        decoded_items = decoder.map(inputs, preprocessing, max_pixels, ahead=2 * per_batch + decoder.plan.workers)
        with contextlib.closing(decoded_items):
            yield from _score(decoded_items, classifier, preprocessing, per_batch)


def _score(decoded_items, classifier, preprocessing, per_batch):
    # The network runs on a thread of its own: while it works on one batch, this thread
    # assembles the next and hands out the results of the last, so the network never waits
    # for the plumbing (about 4% of the wall time when it did).
    buffers = [np.empty((per_batch,) + tuple(preprocessing.array_shape), np.uint8) for _ in range(BATCH_BUFFERS)]
    network = ThreadPoolExecutor(max_workers=1, thread_name_prefix="resclassify-network")
    try:
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
            if ready == per_batch:
                submitted = _submit_batch(network, waiting, batch[:ready], classifier, preprocessing, per_batch)
                if running is not None:
                    yield from running.result()
                running = submitted
                batches += 1
                batch = buffers[batches % BATCH_BUFFERS]
                waiting, ready = [], 0
        submitted = _submit_batch(network, waiting, batch[:ready], classifier, preprocessing, per_batch)
        if running is not None:
            yield from running.result()
        yield from submitted.result()
    finally:
        # Without waiting: when the caller stops early (Ctrl-C, an error writing the output),
        # a batch still on the network does not hold it up.
        network.shutdown(wait=False, cancel_futures=True)


def _submit_batch(network, waiting, batch, classifier, preprocessing, per_batch):
    """Run a uint8 batch on the network thread; the future gives the Scored list back with probabilities set.

    The batch stays uint8 (a quarter of float32's bytes to move): the network normalizes it on
    the device, in the mode the preprocessing names. Several views of an image are rows of their
    own in the batch (images x views rows); their probabilities are averaged back to one row per image.
    """
    loaded = [s for s in waiting if s.error is None]
    rows = as_rows(batch, preprocessing)
    if loaded and hasattr(classifier, "stage"):
        # Start its copy to the device now (JAX copies asynchronously), while the network still
        # works on the batch before. The buffer is not filled again until this batch's results are back.
        rows = classifier.stage(rows, pad_to=per_batch * preprocessing.views)

    def run():
        if loaded:
            probabilities = probabilities_of(classifier, preprocessing, rows, pad_to=per_batch)
            for s, p in zip(loaded, probabilities):
                s.probabilities = p
        return waiting

    return network.submit(run)


def as_rows(batch, preprocessing):
    """A batch of decoded images as network inputs: with test-time views, (images, views, S, S, 3) becomes
    (images x views, S, S, 3), each image's views side by side."""
    if preprocessing.views > 1 and batch.ndim == 5:
        return batch.reshape((-1,) + batch.shape[2:])
    return batch


def probabilities_of(classifier, preprocessing, batch, pad_to=None):
    """Class probabilities (float32, a row per image) for a uint8 batch of decoded images (images.load_image's
    arrays), normalized on the device as the preprocessing says.

    With test-time views the batch is each image's views side by side (as_rows; a staged batch
    already is), and an image's row is the mean of its views' probabilities, the ResNet paper's
    protocol. pad_to counts images. The network's one step, shared by this pipeline and the Ray
    engine's actors, so both compute alike.
    """
    views = preprocessing.views
    if isinstance(batch, np.ndarray):
        batch = as_rows(batch, preprocessing)
    probabilities = classifier.predict(batch, pad_to=None if pad_to is None else pad_to * views,
                                       normalization=preprocessing.mode)
    if views > 1:
        probabilities = probabilities.reshape(-1, views, probabilities.shape[-1]).mean(axis=1, dtype=np.float32)
    return probabilities


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
    backend = scored.backend or backend
    if backend is not None:
        record["backend"] = backend
    record["predictions"] = predictions
    if run is not None:
        record["run"] = run
    return record
