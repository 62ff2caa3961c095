"""What predict and eval share to run the network from their options: the model, the engine, the decoder, the
threads; the warnings that go with them."""

import contextlib
import sys

import click

from ..config import DEFAULT_ARCH
# The download progress bar.
from ..render.progress import DownloadProgress
from .exits import report_warning
from .options import check_preprocessing_options


def open_model(*, arch, weights, model_path, classes_path, offline, preprocess, preprocess_mode, exact_decode,
               size, crop_fraction, interpolation, tta, backend, device, precision, threads, verbose, quiet,
               runs_here=True, **_unused):
    """The network and the preprocessing it needs, from model_options' values (pass them all: **options).

    runs_here=False: a copy for names and checks, while the network runs elsewhere (--engine ray).
    """
    from .. import load_model

    if model_path is not None and (arch is not None or weights is not None):
        raise click.UsageError("--model is a whole model: it does not go with --arch or --weights")
    check_preprocessing_options(model_path=model_path, preprocess=preprocess, preprocess_mode=preprocess_mode,
                                exact_decode=exact_decode, size=size, crop_fraction=crop_fraction,
                                interpolation=interpolation, tta=tta)
    with download_progress(quiet) as progress:
        classifier = load_model(weights or "imagenet", arch=arch or DEFAULT_ARCH, model=model_path,
                                classes=classes_path, backend=backend, normalization=preprocess_mode,
                                device=device, precision=precision, threads=threads, offline=offline, size=size,
                                verbose=verbose, progress=progress, notice=None if quiet else report_warning)
    if precision == "float16" and classifier.device == "cpu" and runs_here and not quiet:
        report_warning("--precision float16 on a CPU is slow (CPUs emulate most float16 arithmetic); "
                       "bfloat16 or float32 are faster there")
    if runs_here and threads and not quiet:
        from ..backends import applied_threads

        if applied_threads(classifier.backend, classifier.device, threads) != threads:
            report_warning(f"--threads {threads} does not apply to {classifier.backend} on the CPU (XLA's CPU "
                           "runtime takes only --threads 1): the network uses every core; bound the process with "
                           "taskset to use fewer")
    if model_path is not None and classes_path is None and len(classifier.classes) != 1000 and not quiet:
        report_warning(f"no --classes file: {classifier.name}'s {len(classifier.classes)} classes are "
                       "named by their output index")
    preprocessing = classifier.preprocessing(preprocess, crop_fraction=crop_fraction, interpolation=interpolation,
                                             tta=tta, mode=preprocess_mode, exact_decode=exact_decode)
    return classifier, preprocessing


def download_progress(quiet):
    """The bar the library's download progress is drawn as: on stderr, only on a terminal, never with --quiet."""
    return DownloadProgress(sys.stderr, enabled=sys.stderr.isatty() and not quiet)


def chosen_engine(engine, ray_address, options):
    """The engine to run on; for Ray, checked to be installed before anything slow starts."""
    from ..engines import open_engine

    if ray_address and engine != "ray":
        raise click.UsageError("--ray-address goes with --engine ray")
    return open_engine(engine, address=ray_address, device=options["device"], threads=options["threads"],
                       verbose=options["verbose"])


def open_model_for(engine, options):
    """open_model, for an engine: one that runs the network elsewhere gets a CPU copy here for names and checks."""
    if engine.name != "local":
        options = {**options, "device": "cpu", "runs_here": False}
    return open_model(**options)


def open_decoding(engine, images, options):
    """The decoder for a run of `images` images, from --decoding/--workers/--device: open it before the
    model, so that worker processes start while the model loads. None where the engine decodes elsewhere."""
    import math

    from ..config import resolve_preprocessing
    from ..decoding import open_decoder, plan_decoding

    if engine.name != "local":
        return contextlib.nullcontext()
    # The crop the slots hold, as far as it is known before the model (--size, --tta; a model's own
    # input size only once it is loaded, when the decoder checks again).
    shape = resolve_preprocessing(options["preprocess"], size=options["size"], crop_fraction=options["crop_fraction"],
                                  interpolation=options["interpolation"], tta=options["tta"],
                                  mode=options["preprocess_mode"], exact_decode=options["exact_decode"]).array_shape
    notice = None if options["quiet"] else report_warning
    return open_decoder(plan_decoding(images, workers=options["workers"], mode=options["decoding"],
                                      device=options["device"], slot_bytes=math.prod(shape), notice=notice), notice)


def network_threads(options, classifier=None):
    """The network's CPU threads: --threads where the classifier's runtime applies it, else every core (what the
    backends use unless told), so that the run line and the report never claim a setting that did not apply."""
    from ..backends import applied_threads
    from ..machine import available_cores

    if classifier is None:
        return options["threads"] or available_cores()
    return applied_threads(classifier.backend, classifier.device, options["threads"]) or available_cores()
