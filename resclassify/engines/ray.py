"""The Ray engine: inputs (paths, URLs, tar members) become a Ray Dataset; reading remote bytes and decoding
run as CPU tasks, the network in an actor pool (one actor per GPU, CPU actors where the cluster has none),
each actor loading the model once; results stream back to the driver in input order.

Ray is imported here only, and only when a Ray run starts: `pip install 'resclassify[ray]'`.
"""

import contextlib
import importlib.util
import logging
import os
import sys

import numpy as np

from ..errors import InputError, ResclassifyError, first_line
from ..images import DEFAULT_MAX_PIXELS, ImageBytes, load_image
from ..pipeline import Scored, images_per_batch, probabilities_of
from ..sources.fetching import fetch_ahead
from ..sources.inputs import input_path
from ..sources.remote import RemoteImage, is_url

INSTALL_HINT = "--engine ray needs Ray: pip install 'resclassify[ray]'"
# What a worker on another machine needs from this process's environment to load the same model.
FORWARDED_VARIABLES = ("RESCLASSIFY_OFFLINE", "RESCLASSIFY_WEIGHTS_MIRROR", "KERAS_BACKEND")
# What a decoding task needs to read objects as the driver listed them: the store's own variables that hold
# their whole value (endpoint, region, keys). Those naming a file on the driver's machine (AWS_PROFILE and
# its files, GOOGLE_APPLICATION_CREDENTIALS) are not sent: the file may not be on the nodes, and a profile
# the nodes lack would stop them using their own credentials (an instance role): the nodes set those.
STORAGE_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                     "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION")
# Paths handed to one decoding task: enough to keep a core busy, few enough to keep results streaming.
DECODE_BATCH = 16
MAX_BLOCKS = 1000
# Remote reads in flight per decoding task: a core decodes about 100 JPEGs/s, and 8 requests of 50 ms
# (a far region) bring 160/s, so the core never waits on the store; per core, so that a node with many
# cores does not flood the store (the local engine keeps 32 in flight per process).
TASK_REQUESTS = 8
CPU_ACTOR_CPUS = 0.5


class RayEngineError(ResclassifyError):
    """Ray is missing, cannot be reached, or a Ray run failed."""


def ray_installed():
    return importlib.util.find_spec("ray") is not None


def image_shape(preprocessing):
    """The shape of one decoded input (images.load_image's array)."""
    shape = getattr(preprocessing, "array_shape", None)
    return tuple(shape) if shape is not None else (preprocessing.size, preprocessing.size, 3)


def decode_batch(batch, preprocessing, max_pixels=DEFAULT_MAX_PIXELS):
    """Ray Data stage (a CPU task): {"path", optional "url", "start", "end", "error"} rows → adds "pixels"
    (uint8), "error" and "failure".

    A row with a "url" is a remote image or a tar member (sources.remote.RemoteImage: the bytes of url,
    or bytes start..end of it, -1 for none): its bytes are read here, in the task, several at once
    (sources.fetching), and "path" only names it. Other rows are local files at "path". Each is
    decoded with images.load_image; one that cannot be read gets its reason in "error" ("" when it
    loaded) and zeros for pixels, so that the batch keeps one shape. "failure" is "" unless this node
    cannot read the store at all (no credentials, a missing extra): then it says why, for the driver
    to stop the run with.
    """
    paths = [str(path) for path in batch["path"]]
    errors = [str(e) for e in batch["error"]] if "error" in batch else [""] * len(paths)
    pixels = np.zeros((len(paths),) + image_shape(preprocessing), dtype=np.uint8)
    todo = [row for row in range(len(paths)) if not errors[row]]
    items = [_row_item(batch, paths, row) for row in todo]
    failure = ""
    # fetch_ahead passes local paths through and reads remote images ahead of the decoding, several at
    # once, so a far store's latency is not paid image after image.
    with contextlib.closing(fetch_ahead(items, requests=TASK_REQUESTS)) as fetched:
        for row in todo:
            try:
                item = next(fetched)  # an InputError stands for an input that cannot be read
            except Exception as exc:
                # Not one input's fault: this node cannot read the store at all (no credentials, the
                # extra not installed). The driver stops the run with it (see matched_results).
                failure = _node_failure(exc)
                for rest in todo[todo.index(row):]:
                    errors[rest] = failure  # the network passes them over
                break
            try:
                if isinstance(item, InputError):
                    raise item
                if isinstance(item, ImageBytes):
                    pixels[row] = load_image(item.path, preprocessing, max_pixels, data=item.data)
                else:
                    pixels[row] = load_image(item, preprocessing, max_pixels)
            except InputError as exc:
                errors[row] = exc.reason
    return {**batch, "pixels": pixels, "error": np.array(errors, dtype=object),
            "failure": np.array([failure] * len(paths), dtype=object)}


def _node_failure(exc):
    """One line for the driver: what stopped a task reading the store, and on which node."""
    reason = str(exc) if isinstance(exc, ResclassifyError) else f"{type(exc).__name__}: {first_line(exc)}"
    try:
        import ray

        return f"{reason} (in a decoding task on the Ray node at {ray.util.get_node_ip_address()})"
    except Exception:
        return reason


def _row_item(batch, paths, row):
    """What a row reads: a RemoteImage where it has a url, else the local path."""
    url = str(batch["url"][row]) if "url" in batch else ""
    if not url:
        return paths[row]
    start, end = (int(batch[column][row]) if column in batch else -1 for column in ("start", "end"))
    return RemoteImage(paths[row], url, start if start >= 0 else None, end if end >= 0 else None)


def input_row(item):
    """The row decode_batch reads for an item of the driver's list (a path, a RemoteImage or an InputError).

    A local file travels as its absolute path (the tasks do not run in this directory); a remote
    image as its name (the URL, or shard/member: what its record says, never made absolute) and where
    its bytes are (url, and the range of a tar member, -1 for none; a local shard's url made absolute).
    """
    row = {"path": "", "url": "", "start": -1, "end": -1, "error": ""}
    if isinstance(item, InputError):
        return {**row, "path": item.path, "error": item.reason}
    if isinstance(item, RemoteImage):
        url = item.url if is_url(item.url) else os.path.abspath(item.url)
        return {**row, "path": item.path, "url": url,
                "start": -1 if item.start is None else item.start, "end": -1 if item.end is None else item.end}
    return {**row, "path": os.path.abspath(item)}


def storage_runtime_env(items, environ=None):
    """The runtime_env of decoding tasks that read items: the driver's storage variables (STORAGE_VARIABLES)
    when some item is behind a URL, else None.

    Ray's workers have the environment of the Ray they belong to, not the driver's (Ray's
    documented remedy is runtime_env env_vars): a cluster joined by address, or a Ray this
    process started before the variables were set, would otherwise read with other credentials
    or at another endpoint than the driver listed with.
    """
    environ = os.environ if environ is None else environ
    if not any(isinstance(item, RemoteImage) and is_url(item.url) for item in items):
        return None
    variables = {name: environ[name] for name in STORAGE_VARIABLES if name in environ}
    return {"env_vars": variables} if variables else None


class Classify:
    """Ray Data stage: decoded images in, class probabilities out; for `Dataset.map_batches` in your own pipelines.

    The model loads once per actor, from load_model's arguments (recipe, or keyword arguments:
    weights, arch, model, classes, device, precision, ...). Input columns: "pixels", uint8
    arrays as images.load_image gives them (decode_batch makes them from "path"); optionally
    "error", where a non-empty value marks a row to pass over. Output: the same columns but
    "pixels", plus "probabilities" (rows, classes) float32, zeros for rows passed over, and
    "backend" (what ran the network: without a backend named, each actor chooses the runtime for
    its own device, as load_model does); with top_k, also "top_k_indices", "top_k_labels" and
    "top_k_probabilities".

        import ray
        from resclassify.engines.ray import Classify, decode_batch
        import resclassify

        preprocessing = resclassify.resolve_preprocessing("center-crop")
        ds = ray.data.from_items([{"path": p} for p in paths])
        ds = ds.map_batches(decode_batch, fn_kwargs={"preprocessing": preprocessing}, batch_size=16)
        ds = ds.map_batches(Classify, fn_constructor_kwargs={"arch": "resnet50", "device": "gpu", "top_k": 5},
                            compute=ray.data.ActorPoolStrategy(size=4), num_gpus=1, batch_size=64)
    """

    def __init__(self, recipe=None, *, preprocessing=None, batch_size=32, top_k=None, **load_model_arguments):
        from ..runners import load

        self.classifier = load(**{**(recipe or {}), **load_model_arguments})
        self.preprocessing = preprocessing or self.classifier.preprocessing()
        # batch_size counts network inputs, as in the local pipeline: with test-time views, the
        # images whose views fill one call (at least one), never split across calls.
        self.batch_size = images_per_batch(batch_size, self.preprocessing.views)
        self.top_k = top_k

    def __call__(self, batch):
        batch = dict(batch)
        pixels = batch.pop("pixels")
        errors = batch.get("error")
        good = np.arange(len(pixels)) if errors is None else np.flatnonzero([not e for e in errors])
        probabilities = np.zeros((len(pixels), len(self.classifier.classes)), dtype=np.float32)
        # Fixed-shape network calls, as the local pipeline makes them: the graph is traced once.
        for start in range(0, len(good), self.batch_size):
            rows = good[start:start + self.batch_size]
            probabilities[rows] = probabilities_of(self.classifier, self.preprocessing, pixels[rows],
                                                   pad_to=self.batch_size)
        batch["probabilities"] = probabilities
        batch["backend"] = np.array([self.classifier.backend] * len(pixels), dtype=object)
        if self.top_k:
            from ..metrics import top_k

            indices = np.array([top_k(p, self.top_k) for p in probabilities], dtype=np.int64).reshape(len(pixels), -1)
            batch["top_k_indices"] = indices
            batch["top_k_labels"] = np.array([[self.classifier.classes.labels[i] for i in row] for row in indices],
                                             dtype=object)
            batch["top_k_probabilities"] = np.take_along_axis(probabilities, indices, axis=1)
        return batch


@contextlib.contextmanager
def _quiet_core_worker(enabled=True):
    """Ray's C++ core worker in this process logs to stderr (e.g. that Ray Data's actors have arguments in
    its object store); it reads its log level once, when Ray starts here."""
    if not enabled or "RAY_BACKEND_LOG_LEVEL" in os.environ:
        yield
        return
    os.environ["RAY_BACKEND_LOG_LEVEL"] = "fatal"
    try:
        yield
    finally:
        del os.environ["RAY_BACKEND_LOG_LEVEL"]


def _bound_stage(recipe, preprocessing, batch_size):
    """Classify with its arguments built in: Ray then has no constructor arguments to keep in its object store."""

    class ResclassifyNetwork(Classify):
        def __init__(self):
            super().__init__(recipe, preprocessing=preprocessing, batch_size=batch_size)

    return ResclassifyNetwork


@contextlib.contextmanager
def _stderr_silenced(enabled=True):
    """File descriptor 2 to /dev/null: Ray's start-up talks from C++ and from processes it spawns."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@contextlib.contextmanager
def _sigterm_handler_kept():
    """ray.init replaces the caller's SIGTERM handler with sys.exit: keep the caller's (the command
    line's stops a run as Ctrl-C does, closing its files whole)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if handler is not None:
            signal.signal(signal.SIGTERM, handler)


class RayEngine:
    """Runs the network on a Ray cluster: the one at address (else RAY_ADDRESS), else a Ray started here.

    A Ray started here listens on 127.0.0.1 only, has no dashboard, and is shut down when the
    engine closes; a Ray this process had already started (ray.init) is used and left running.
    Use it as a context manager. device: where actors run the network (auto: one actor per GPU
    when the cluster has GPUs, else CPU actors); actors: how many (default: one per GPU, or one
    per node). num_cpus: the CPUs of a Ray started here (default: all).
    """

    name = "ray"

    def __init__(self, address=None, *, device="auto", threads=None, verbose=False, actors=None, num_cpus=None):
        if not ray_installed():
            raise RayEngineError(INSTALL_HINT)
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.device = device
        self.threads = threads
        self.verbose = verbose
        self.actors = actors
        self.num_cpus = num_cpus
        self._started_here = False
        self._pool = None  # (actors, "GPU" or "CPU") of the last run, for the report

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc_info):
        self.close()

    def connect(self):
        import ray

        if ray.is_initialized():
            return
        logging_level = logging.INFO if self.verbose else logging.WARNING
        try:
            with _stderr_silenced(not self.verbose), _quiet_core_worker(not self.verbose), _sigterm_handler_kept():
                if self.address:
                    with _not_clustered(_loopback_only(self.address)):
                        ray.init(address=self.address, log_to_driver=self.verbose, logging_level=logging_level,
                                 runtime_env=self._runtime_env())
                else:
                    with _not_clustered():
                        ray.init(include_dashboard=False, log_to_driver=self.verbose, logging_level=logging_level,
                                 **({"num_cpus": self.num_cpus} if self.num_cpus else {}))
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError, ...
            where = f"at {self.address}" if self.address else "on this machine"
            raise RayEngineError(f"cannot start or reach Ray {where}: {first_line(exc)}") from None
        self._started_here = True

    def close(self):
        if self._started_here:
            import ray

            with _stderr_silenced(not self.verbose):
                ray.shutdown()
            self._started_here = False

    @staticmethod
    def _runtime_env():
        variables = {name: os.environ[name] for name in FORWARDED_VARIABLES if name in os.environ}
        return {"env_vars": variables} if variables else None

    def describe(self, classifier):
        """Where the network ran, for the report: "ray: 4 GPU actors"."""
        if self._pool is None:
            return None
        count, kind = self._pool
        return f"ray: {count} {kind} actor{'s' if count != 1 else ''}"

    def actor_pool(self):
        """(actors, num_gpus per actor, device) from the cluster's resources and the device asked for."""
        import ray

        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if self.device == "gpu" and not gpus:
            raise RayEngineError("--device gpu: the Ray cluster has no GPU (use --device cpu or auto)")
        if gpus and self.device != "cpu":
            return self.actors or gpus, 1, "gpu"
        nodes = sum(1 for node in ray.nodes() if node.get("Alive") and node.get("Resources", {}).get("CPU"))
        return self.actors or max(1, nodes), 0, "cpu"

    def score(self, items, classifier, preprocessing, *, batch_size=32, workers=None, decoding=None,
              max_pixels=DEFAULT_MAX_PIXELS):
        """Yield a Scored for every item (a path, a sources.remote.RemoteImage, or an InputError found
        earlier), in input order.

        workers and decoding (how this machine decodes) do not apply: Ray's tasks decode, as many
        at once as the cluster has CPUs. Remote images' bytes are read by those tasks too (this
        process only lists prefixes, before the run), with this process's storage variables.
        """
        recipe = getattr(classifier, "recipe", None)
        if recipe is None:
            raise RayEngineError("the Ray engine loads the model in its actors: load it with resclassify.load_model")
        items = list(items)
        if not items:
            return
        self.connect()
        import ray

        # A run smaller than one batch uses a batch of its own size, as the local pipeline does.
        good = sum(1 for item in items if not isinstance(item, InputError))
        batch_size = max(1, min(batch_size, good))
        actors, gpus_per_actor, device = self.actor_pool()
        self._pool = (actors, device.upper())
        rows = [input_row(item) for item in items]
        storage = storage_runtime_env(items)
        # Blocks are the decoding tasks: small enough that results stream, few enough to schedule.
        blocks = min(MAX_BLOCKS, max(1, -(-len(rows) // DECODE_BATCH)))
        dataset = ray.data.from_items(rows, override_num_blocks=blocks)
        context = dataset.context
        context.execution_options.preserve_order = True  # records in input order, as the local engine
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        context.enable_auto_log_stats = False
        if not self.verbose:
            # Ray Data logs each run's plan, and that progress bars are off, at INFO and WARNING.
            logging.getLogger("ray.data").setLevel(logging.ERROR)
        dataset = dataset.map_batches(decode_batch, fn_kwargs={"preprocessing": preprocessing,
                                                               "max_pixels": max_pixels},
                                      batch_size=DECODE_BATCH, num_cpus=1,
                                      **({"runtime_env": storage} if storage else {}))
        dataset = dataset.map_batches(
            _bound_stage(actor_recipe(recipe, device, self.threads), preprocessing, batch_size),
            compute=ray.data.ActorPoolStrategy(size=actors),
            batch_size=batch_size, num_gpus=gpus_per_actor,
            # A CPU actor's network uses every core whatever it reserves; reserving less than a
            # decoding task also keeps Ray from fusing decoding into the actors, where it would
            # wait on the network.
            num_cpus=0 if gpus_per_actor else CPU_ACTOR_CPUS)
        try:
            yield from matched_results(items, rows, dataset.iter_batches(batch_size=None, batch_format="numpy"))
        except Exception as exc:
            if isinstance(exc, ResclassifyError) or not _is_ray_error(exc):
                raise
            raise RayEngineError(f"the Ray run failed: {first_line(exc)}") from exc


def actor_recipe(recipe, device, threads):
    """load_model's arguments for an actor on device: the driver's recipe, whose backend is the one the user
    named or None, so that an actor on a GPU node chooses for its GPU (never the driver's CPU choice)."""
    return {**recipe, "device": device, "threads": threads}


def matched_results(items, rows, batches):
    """A Scored per item, in input order, from the result batches of the rows sent (rows[n] for items[n]).

    Ray is asked to keep the order; each result's path is still checked against the input due at
    its position, so that a shift is an error rather than every later record given another
    image's classes.
    """
    position = 0
    for batch in batches:
        for row in range(len(batch["path"])):
            if position >= len(rows):
                raise RayEngineError(f"the Ray run returned more results than its {len(rows)} inputs")
            if "failure" in batch and batch["failure"][row]:
                raise RayEngineError(f"the Ray run failed: {batch['failure'][row]}")
            got, due = str(batch["path"][row]), rows[position]["path"]
            if got != due:
                raise RayEngineError(f"the Ray run returned the result of {got} where the one of {due} was due "
                                     f"(input {position + 1}); no record was written for it")
            yield _scored(items[position], batch, row)
            position += 1
    if position != len(rows):
        raise RayEngineError(f"the Ray run returned {position} results for {len(rows)} inputs")


def _scored(item, batch, row):
    path = input_path(item)
    error = str(batch["error"][row])
    if error:
        return Scored(path, error=item if isinstance(item, InputError) else InputError(path, error))
    backend = str(batch["backend"][row]) if "backend" in batch else None
    return Scored(path, probabilities=np.asarray(batch["probabilities"][row], dtype=np.float32), backend=backend)


@contextlib.contextmanager
def _not_clustered(enabled=True):
    """Ray on this machine's loopback address only.

    ray.init has no switch for it: on Linux it binds a Ray it starts to the machine's address, and
    turns a 127.0.0.1 address to connect to into that address too, unless Ray is told it is not
    clustered (what it does on macOS and Windows).
    """
    if not enabled:
        yield
        return
    from ray._private import ray_constants

    clustered = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = clustered


def _loopback_only(address):
    """Whether address is a Ray on this machine that listens on the loopback address only (as one started by
    RayEngine here): 127.0.0.1:port answers, this machine's own address at that port does not."""
    import socket

    from ray._private import services

    host, _, port = str(address).rpartition(":")
    if host.strip("[]") not in ("127.0.0.1", "localhost", "::1") or not port.isdigit():
        return False
    try:
        socket.create_connection((services.get_node_ip_address(), int(port)), timeout=1).close()
        return False
    except OSError:
        return True


def _is_ray_error(exc):
    return type(exc).__module__.startswith("ray.")

