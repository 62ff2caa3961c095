"""The command line: reads options, calls the library, prints; errors become one line and an exit code."""

import contextlib
import dataclasses
import functools
import itertools
import os
import sys
import warnings

import click

from . import __version__
from .config import (ALL_BACKEND_CHOICES, ARCH_CHOICES, DECODING_CHOICES, DEFAULT_ARCH, DEFAULT_CROP_FRACTION,
                     DEVICE_CHOICES, ENGINE_CHOICES, INTERPOLATION_CHOICES, NORMALIZE_MODES, PRECISION_CHOICES,
                     PREPROCESS_CHOICES, TTA_CHOICES)
from .errors import PreprocessingError, ResclassifyError
from .images import DEFAULT_MAX_PIXELS
from .output import (GuardedStream, degrade_for_terminal, display_path, exact_stream, file_extensions, file_format,
                     formats, json_format, json_help)

DEBUG_VARIABLE = "RESCLASSIFY_DEBUG"
# The shell's status for a command ended by Ctrl-C (128 + SIGINT).
INTERRUPTED_STATUS = 130
# predict and eval finished, but more inputs could not be read than --max-failures allows: apart
# from 1 (an error that stopped the run, or --fail-under) and 2 (a usage error), so that a job
# controller can tell bad data, which a retry does not mend, from a crash.
UNREADABLE_STATUS = 3
# Signals that stop a run as Ctrl-C does: SIGTERM is what Slurm, Kubernetes and `kill` send, SIGHUP
# comes when the terminal or ssh session goes. The process ends with 128 + the signal's number.
STOP_SIGNAL_NAMES = ("SIGINT", "SIGTERM", "SIGHUP")


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM, SIGHUP) reached a command; main() ends the process with 128 + the signal."""


class _Stopping:
    """main()'s signal state: the stop signal that came first, and whether a record is being written."""

    signal = None
    command_running = False
    writing = 0  # records being written now (nested sections)
    pending = False  # a stop signal came while one was: raise once it is whole


def _on_stop_signal(number, frame):
    """The handler main() installs for STOP_SIGNAL_NAMES: the first signal stops the run as Ctrl-C
    does (a KeyboardInterrupt, so that every clean-up on the way out runs, the export child's and
    the decode workers' included); a second one, or one outside a command, ends the process now."""
    if _Stopping.signal is not None or not _Stopping.command_running:
        _flush_standard_streams()
        os._exit(128 + number)
    _Stopping.signal = number
    if _Stopping.writing:
        _Stopping.pending = True  # the record being written is finished first
        return
    raise KeyboardInterrupt


@contextlib.contextmanager
def whole_record():
    """Hold a stop signal until the block ends, so that a record is written whole (a JSON array
    element and its separator, a CSV row, a line) before the run stops."""
    _Stopping.writing += 1
    try:
        yield
    finally:
        _Stopping.writing -= 1
    if _Stopping.pending and not _Stopping.writing:
        _Stopping.pending = False
        raise KeyboardInterrupt


def _install_stop_handlers():
    import signal

    for name in STOP_SIGNAL_NAMES:
        number = getattr(signal, name, None)
        if number is not None and signal.getsignal(number) is not signal.SIG_IGN:  # nohup's SIGHUP stays ignored
            signal.signal(number, _on_stop_signal)


def debug_requested():
    return os.environ.get(DEBUG_VARIABLE, "").strip() not in ("", "0")


class CommandError(click.ClickException):
    """A ResclassifyError as Click shows it: one line on stderr, exit status 1."""

    def show(self, file=None):
        report_error(self.format_message())


def report_error(message):
    click.echo(f"resclassify: error: {message}", err=True)


def report_warning(message):
    click.echo(f"resclassify: warning: {message}", err=True)


def reports_errors(command):
    """Turn the library's errors into CommandError, unless RESCLASSIFY_DEBUG asks for the traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except PreprocessingError as exc:
            if debug_requested():
                raise
            raise preprocessing_usage_error(exc) from None
        except ResclassifyError as exc:
            if debug_requested():
                raise
            raise CommandError(str(exc)) from None
        except KeyboardInterrupt:
            # Not Click's "Aborted!" and status 1: main() ends the process with 130 at once.
            raise Interrupted() from None

    return wrapper


def preprocessing_usage_error(exc):
    """Preprocessing options that cannot work are a usage error (exit 2) naming the option at fault."""
    return click.BadParameter(str(exc), ctx=click.get_current_context(silent=True), param_hint=exc.option)


def model_options(command):
    """Options every command that runs the network shares; open_model turns them into a network."""
    options = [
        click.option("--arch", type=click.Choice(ARCH_CHOICES), default=None,
                     help=f"Which of Keras's ImageNet ResNets to run [default: {DEFAULT_ARCH}]. "
                          "v1 models use caffe normalization, v2 models scale RGB to [-1, 1]."),
        click.option("--weights", default=None, metavar="imagenet|URL|PATH",
                     help="ImageNet weights from Keras's cache (downloaded once) [default: imagenet], a URL "
                          "(optionally #sha256=... or #md5=...), or a weights file in Keras's HDF5 layout."),
        click.option("--model", "model_path", type=click.Path(dir_okay=False), default=None,
                     help="Your own Keras model instead (.keras, or a full-model .h5); its input size "
                          "is read from it."),
        click.option("--classes", "classes_path", type=click.Path(dir_okay=False), default=None,
                     help="Class names for the model's outputs: one label per line, or a TSV/CSV with "
                          "a label column (and optional index, wnid columns)."),
        # RESCLASSIFY_OFFLINE is read where downloads happen (weights.py), so errors can say which one it was.
        click.option("--offline", is_flag=True,
                     help="Never touch the network; missing weights are an error. Also RESCLASSIFY_OFFLINE=1."),
        click.option("--preprocess", type=click.Choice(PREPROCESS_CHOICES), default="center-crop",
                     show_default=True,
                     help="center-crop: short side 256, centre 224x224, bicubic (standard evaluation). "
                          "squash: straight to 224x224, nearest neighbour, as keras.utils.load_img does. "
                          "(224 is the model's input size, 256 is 224 / the crop fraction.)"),
        click.option("--size", type=int, default=None, metavar="S",
                     help="Network input size in pixels [default: the model's own, 224 for the ResNets]. The "
                          "ResNets are built for it with the same weights (256 or 288 often gains accuracy); "
                          "a model file with a fixed input size refuses another."),
        click.option("--crop-fraction", type=float, default=None, metavar="F",
                     help=f"center-crop: the crop covers this fraction of the resized short side, which is "
                          f"S / F [default: {DEFAULT_CROP_FRACTION}, short side 256 for 224; 1 crops the whole "
                          f"short side]."),
        click.option("--interpolation", type=click.Choice(INTERPOLATION_CHOICES), default=None,
                     help="Resampling filter for the resize [default: bicubic for center-crop, nearest for "
                          "squash]."),
        click.option("--tta", type=click.Choice(TTA_CHOICES), default="none", show_default=True,
                     help="Test-time augmentation, softmax probabilities averaged over the views. flip: the crop "
                          "and its mirror image (2 views). ten-crop: the four corner crops and the centre crop "
                          "of the resized image, and the mirror image of each (10 views, the ResNet paper's "
                          "protocol)."),
        click.option("--preprocess-mode", type=click.Choice(NORMALIZE_MODES), default=None,
                     help="Pixel normalization [default: the model's own: caffe for resnet50/101/152, tf for "
                          "the v2 models; for --model, none if it starts with a Rescaling or Normalization "
                          "layer, else caffe]."),
        click.option("--exact-decode", is_flag=True,
                     help="Decode large JPEGs at full size instead of at a reduced DCT scale."),
        click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
                     help="Network inputs per call; with --tta each image brings 2 or 10 of them (its views, "
                          "never split across calls)."),
        click.option("--backend", type=click.Choice(ALL_BACKEND_CHOICES), default=None,
                     help="What runs the network: onnxruntime (the network exported to ONNX once, on the CPU, "
                          "without TensorFlow), or Keras on tensorflow or jax [default: Keras on $KERAS_BACKEND "
                          "if set, else onnxruntime on a CPU when installed (the onnx extra), else tensorflow]."),
        click.option("--device", type=click.Choice(DEVICE_CHOICES), default="auto", show_default=True,
                     help="auto: the GPU when the backend sees one."),
        click.option("--precision", type=click.Choice(PRECISION_CHOICES), default="float32", show_default=True,
                     help="Compute precision: bfloat16 is faster on CPUs that have it, float16 on GPUs."),
        click.option("--threads", type=click.IntRange(min=1), default=None,
                     help="CPU threads for the network [default: all cores]."),
        click.option("--workers", type=click.IntRange(min=1), default=None,
                     help="Images decoded at once [default: all cores]."),
        click.option("--decoding", type=click.Choice(DECODING_CHOICES), default="auto", show_default=True,
                     help="Decode in worker processes or in threads of this one. auto: processes for a run "
                          "of 256 images or more with a GPU or 8+ cores, else threads."),
        click.option("--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS, show_default=True,
                     help="Refuse images with more pixels than this, before decoding them."),
        click.option("-v", "--verbose", is_flag=True, help="Show the backend's own log messages on stderr."),
        click.option("-q", "--quiet", is_flag=True, help="No progress bars or warnings on stderr."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def check_preprocessing_options(*, model_path, preprocess, preprocess_mode, exact_decode, size, crop_fraction,
                                interpolation, tta, **_unused):
    """Refuse preprocessing options that cannot work (exit 2) before anything else runs; open_model checks again."""
    from .config import resolve_preprocessing
    from .runners.keras import check_arch_size

    resolve_preprocessing(preprocess, size=size, crop_fraction=crop_fraction, interpolation=interpolation, tta=tta,
                          mode=preprocess_mode, exact_decode=exact_decode)
    if model_path is None:
        check_arch_size(size)


def open_model(*, arch, weights, model_path, classes_path, offline, preprocess, preprocess_mode, exact_decode,
               size, crop_fraction, interpolation, tta, backend, device, precision, threads, verbose, quiet,
               runs_here=True, **_unused):
    """The network and the preprocessing it needs, from model_options' values (pass them all: **options).

    runs_here=False: a copy for names and checks, while the network runs elsewhere (--engine ray).
    """
    from . import load_model

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
        from .backends import applied_threads

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
    from .output import DownloadProgress

    return DownloadProgress(sys.stderr, enabled=sys.stderr.isatty() and not quiet)


def scale_options(command):
    """Options for runs bigger than one machine: a shard of the inputs, and where the network runs."""
    options = [
        click.option("--shard", "shard_text", default=None, metavar="K/N|auto",
                     help="Run only shard K of N: the K-th contiguous part of the sorted inputs, so N runs cover "
                          "each input once. auto: from a whole Slurm array (SLURM_ARRAY_TASK_ID, _MIN, _MAX, "
                          "_COUNT) or a Kubernetes Indexed Job (JOB_COMPLETION_INDEX, with --shards)."),
        click.option("--shards", type=click.IntRange(min=1), default=None, metavar="N",
                     help="With --shard auto: how many shards there are (a Kubernetes Indexed Job's completions; "
                          "a Slurm array's tasks, needed when some tasks are resubmitted alone: the task ID is then "
                          "the shard counted from 0)."),
        click.option("--engine", type=click.Choice(ENGINE_CHOICES), default="local", show_default=True,
                     help="local: this machine. ray: a Ray cluster (pip install 'resclassify[ray]'): decoding in "
                          "CPU tasks, the network in one actor per GPU (CPU actors where there is none)."),
        click.option("--ray-address", envvar="RAY_ADDRESS", default=None, metavar="ADDRESS",
                     help="The Ray cluster for --engine ray (also RAY_ADDRESS) [default: start a Ray on this "
                          "machine, on 127.0.0.1 only, for this run]."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def chosen_shard(shard_text, shards):
    """The Shard --shard/--shards name, or None; a usage error (exit 2) when they name none."""
    from .datasets import ShardError, parse_shard

    if shard_text is None:
        if shards is not None:
            raise click.UsageError("--shards goes with --shard auto")
        return None
    try:
        return parse_shard(shard_text, shards=shards)
    except ShardError as exc:
        raise click.BadParameter(str(exc), param_hint="'--shard'") from None


def chosen_engine(engine, ray_address, options):
    """The engine to run on; for Ray, checked to be installed before anything slow starts."""
    from .engines import open_engine

    if ray_address and engine != "ray":
        raise click.UsageError("--ray-address goes with --engine ray")
    return open_engine(engine, address=ray_address, device=options["device"], threads=options["threads"],
                       verbose=options["verbose"])


def open_model_for(engine, options):
    """open_model, for an engine: one that runs the network elsewhere gets a CPU copy here for names and checks."""
    if engine.name != "local":
        options = {**options, "device": "cpu", "runs_here": False}
    return open_model(**options)


class FailureAllowance(click.ParamType):
    """--max-failures: N inputs, or N% of the run's inputs, that may be unreadable with exit status 0."""

    name = "N|N%"

    def convert(self, value, param, ctx):
        if isinstance(value, Allowance):
            return value
        text = str(value).strip()
        percent = text.endswith("%")
        try:
            number = float(text[:-1]) if percent else int(text)
        except ValueError:
            self.fail(f"{value!r} is not a count (5) or a percentage (0.5%)", param, ctx)
        if not (0 <= number <= 100 if percent else number >= 0):  # NaN is neither
            self.fail(f"{value!r}: a count is 0 or more, a percentage 0% to 100%", param, ctx)
        return Allowance(text, number, percent)


@dataclasses.dataclass(frozen=True)
class Allowance:
    """How many unreadable inputs a run may have: number of them, or number percent of the run's inputs."""

    text: str  # as given, to name it in messages
    number: float
    percent: bool

    def allows(self, failed, total):
        return failed * 100 <= self.number * total if self.percent else failed <= self.number


def max_failures_option(command):
    return click.option("--max-failures", type=FailureAllowance(), default=None,
                        help="Accept up to N unreadable inputs (or N% of the run's inputs, earlier records of a "
                             "--resume included) with exit status 0; beyond that, or with any unreadable input "
                             f"when not given, the run still finishes, with exit status {UNREADABLE_STATUS}.")(command)


def failure_status(failed, total, max_failures, quiet, counted):
    """The exit status for `failed` of `total` inputs unreadable: 0, or UNREADABLE_STATUS beyond --max-failures;
    one line on stderr saying how many (unless quiet). counted: "inputs could not be classified", say."""
    if not failed:
        return 0
    within = max_failures is not None and max_failures.allows(failed, total)
    if not quiet:
        if max_failures is None:
            verdict = ""
        elif within:
            verdict = f" (within --max-failures {max_failures.text})"
        else:
            verdict = f", more than --max-failures {max_failures.text} allows"
        report_warning(f"{failed} of {total} {counted}{verdict}")
    return 0 if within else UNREADABLE_STATUS


def check_resume_options(output, output_option, resume, force):
    if resume and output is None:
        raise click.UsageError(f"--resume continues the file {output_option} names: give {output_option} FILE")
    if resume and force:
        raise click.UsageError("--resume continues the file, --force starts it over: give one of them")


def earlier_records(path, paths, identity):
    """--resume: the records the file already holds, checked against this run; the half-written tail cut off."""
    from .records import check_earlier_records, cut_to_whole_records, read_record_file

    existing = read_record_file(path)
    counts = check_earlier_records(existing.records, paths, identity, path)
    cut_to_whole_records(existing)
    return existing, counts


def open_for_appending(path):
    """The record file, opened to add records (--resume) and locked against other runs, as a GuardedStream."""
    return open_record_output(path, "append")


def open_record_output(path, how):
    """A record file (predict --output, eval --predictions-out) opened as records.open_record_file does ("new",
    "replace" or "append"), locked while this run writes it, as a GuardedStream: a full disk names it."""
    from .records import open_record_file

    try:
        return GuardedStream(open_record_file(path, how), path)
    except FileExistsError:
        raise CommandError(f"{path}: already exists; pass --force to overwrite it") from None
    except OSError as exc:
        raise CommandError(f"{path}: cannot write: {exc.strerror or exc}") from None


def lock_early(path, resume):
    """--resume of a file that exists: open and lock it now, before anything slow starts, so that a second run
    on the same file stops at once. Entered, the locked stream, or None where the file is opened and locked later,
    where it is first read or written."""
    if resume and os.path.exists(path):
        return open_for_appending(path)
    return contextlib.nullcontext()


def open_decoding(engine, images, options):
    """The decoder for a run of `images` images, from --decoding/--workers/--device: open it before the
    model, so that worker processes start while the model loads. None where the engine decodes elsewhere."""
    import math

    from .config import resolve_preprocessing
    from .decoding import open_decoder, plan_decoding

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
    from .backends import applied_threads
    from .machine import available_cores

    if classifier is None:
        return options["threads"] or available_cores()
    return applied_threads(classifier.backend, classifier.device, options["threads"]) or available_cores()


def describe_run(classifier, preprocessing, plan=None, threads=None, engine_name="local"):
    """One line saying which network, preprocessing, decoding and threads produced a run's results."""
    if classifier.arch == "custom":
        network = f"{classifier.name} ({len(classifier.classes)} classes)"
    else:
        network = f"{classifier.arch}, weights {os.path.basename(classifier.weights)}"
    # On Ray the actors choose their runtime for their own device: this process's copy says nothing of it.
    runtime = f"{classifier.backend} on {classifier.device}" if engine_name == "local" else f"{engine_name} actors"
    line = f"{network} · {runtime} · {preprocessing.describe()}"
    if plan is not None:
        line += f" · decoding on {plan.describe()}, network on {threads} CPU thread{'' if threads == 1 else 's'}"
    return line


def format_options(kind):
    """The output options every command shares, for one kind of output in output.py's table of formats:
    --format (the formats that kind comes in) and --json (machine-readable JSON on stdout)."""

    def decorate(command):
        command = click.option("--json", "as_json", is_flag=True, help=json_help(kind))(command)
        return click.option("--format", "format_name", type=click.Choice(formats(kind)), default="table",
                            show_default=True, help="Output format on stdout.")(command)

    return decorate


def chosen_format(kind, format_name, as_json):
    """The format asked for; --json with another --format given is a usage error, not a silent pick."""
    if not as_json:
        return format_name
    context = click.get_current_context(silent=True)
    source = context.get_parameter_source("format_name") if context is not None else None
    given = source not in (None, click.core.ParameterSource.DEFAULT)
    if given and format_name != json_format(kind):
        raise click.UsageError(f"--json is short for --format {json_format(kind)}; it does not go with "
                               f"--format {format_name}")
    return json_format(kind)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="resclassify")
def cli():
    """Classify images with Keras's ImageNet ResNets, or your own Keras model, and measure top-1/top-5 error."""
    from PIL import Image

    # Pillow warns about images over 89 megapixels; --max-pixels is our limit, refused with our message.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def suffixed_file_option(name, suffix, help_text):
    """An output file option whose name must end in suffix (checked before anything runs)."""

    def check_suffix(ctx, param, value):
        if value is not None and not str(value).lower().endswith(suffix):
            raise click.BadParameter(f"{value}: the file name must end in {suffix}")
        return value

    return click.option(name, type=click.Path(dir_okay=False), metavar=f"FILE{suffix}", callback=check_suffix,
                        help=help_text)


def probabilities_out_option(command):
    return suffixed_file_option(
        "--probabilities-out", ".npy",
        "Write every input's full probabilities as an N x classes float32 array (row k: input k in output "
        "order; NaN for an input that could not be read), filled in as the run goes, and FILE.npy.paths.txt "
        "naming the rows.")(command)


def probability_files(path):
    from .output import paths_file

    return [] if path is None else [path, paths_file(path)]


@contextlib.contextmanager
def opened_probabilities(path, rows, classes, force):
    """--probabilities-out's writer (None without the option), closed however the run ends."""
    from .output import open_probabilities_writer

    if path is None:
        yield None
        return
    try:
        writer = open_probabilities_writer(path, rows, classes, force)
    except FileExistsError as exc:
        raise CommandError(f"{exc.filename}: already exists; pass --force to overwrite it") from None
    except OSError as exc:
        raise CommandError(f"{exc.filename or path}: cannot write: {exc.strerror or exc}") from None
    try:
        yield writer
    finally:
        writer.close()


@cli.command()
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("-k", "--top-k", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="How many classes to show per image.")
@probabilities_out_option
@format_options("predictions")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, metavar="FILE.jsonl|FILE.csv",
              callback=lambda ctx, param, value: check_record_file_name("predict-records", value),
              help="Write the records to FILE as they come (JSON Lines or CSV, by extension); stdout then shows "
                   "the table only on a terminal, or what --format asks for.")
@click.option("--resume", is_flag=True,
              help="Continue the --output file of an interrupted run: keep its records, drop a half-written "
                   "last line, classify only the inputs it lacks.")
@click.option("--force", is_flag=True, help="Overwrite an existing --output or --probabilities-out file.")
@max_failures_option
@scale_options
@model_options
@reports_errors
def predict(inputs, top_k, probabilities_out, format_name, as_json, output, resume, force, max_failures, shard_text,
            shards, engine, ray_address, **options):
    """Print the top classes for each image.

    INPUT is an image file, a folder (searched recursively for images), or - to read paths
    from stdin, one a line. Results come in input order (with --shard, in sorted order).

    \b
    Examples:
      resclassify predict sample_images/cat.jpg
      find photos -name '*.jpg' | resclassify predict --json - | jq '.predictions[0].label'
      resclassify predict --arch resnet152v2 photos/
      resclassify predict --model flowers.keras --classes flowers.txt photos/
      resclassify predict photos/ --shard 3/8 --output labels-3.jsonl --resume
      resclassify predict --tta ten-crop --probabilities-out probs.npy photos/
    """
    from . import classify
    from .datasets import expand_inputs, input_path
    from .output import open_file_writer, open_writer
    from .pipeline import count_images

    output_format = chosen_format("predictions", format_name, as_json)  # a clash is a usage error, at once
    quiet = options["quiet"]

    def on_skip(skipped):
        if not quiet:
            report_warning(f"{display_path(skipped.path)}: {skipped.reason}")

    check_resume_options(output, "--output", resume, force)
    check_preprocessing_options(**options)
    if probabilities_out is not None and resume:
        raise click.UsageError("--probabilities-out does not go with --resume: the inputs the earlier run did are "
                               "not run again, so their probabilities are not known")
    for path in probability_files(probabilities_out):
        check_can_write(path, force)
    shard = chosen_shard(shard_text, shards)
    if output is not None and not resume:
        check_can_write(output, force)
    elif output is not None:
        check_can_write(output, True)
    engine = chosen_engine(engine, ray_address, options)
    # Paths on stdin are bytes, as file names are: a name that is not UTF-8 still reaches its file.
    stdin = getattr(sys.stdin, "buffer", sys.stdin) if "-" in inputs else None
    items = expand_inputs(inputs, stdin, on_skip=on_skip)
    if shard is not None:
        items = shard.take(items, key=input_path)
    with contextlib.ExitStack() as stack:
        record_stream = stack.enter_context(lock_early(output, resume))
        # Decode workers start before the model loads, so that the two overlap.
        decoder = stack.enter_context(open_decoding(engine, count_images(items), options))
        model, preprocessing = open_model_for(engine, options)
        earlier_failed, header = 0, True
        if resume:
            from .records import identity_of_run

            if record_stream is None:  # no file when the run started: locked before it is read all the same
                record_stream = stack.enter_context(open_for_appending(output))
            existing, counts = earlier_records(output, [input_path(item) for item in items],
                                               identity_of_run(model, preprocessing, top_k))
            earlier_failed = sum(1 for record in existing.records if "error" in record)
            header = existing.header is None
            remaining = []
            for item in items:
                if counts[input_path(item)]:
                    counts[input_path(item)] -= 1
                else:
                    remaining.append(item)
            total, items = len(items), remaining
        else:
            total = len(items)

        format_given = (click.get_current_context().get_parameter_source("format_name")
                        is not click.core.ParameterSource.DEFAULT) or as_json
        writers = []
        if output is None or format_given or sys.stdout.isatty():
            about = describe_run(model, preprocessing, getattr(decoder, "plan", None),
                                 network_threads(options, model), engine.name)
            stdout = GuardedStream(sys.stdout, "stdout")
            writers.append(open_writer("predictions", output_format,
                                       exact_stream(stdout) if output_format == "csv" else stdout, about=about))
        if output is not None:
            if record_stream is None:
                record_stream = stack.enter_context(open_record_output(output, "replace" if force else "new"))
            writers.append(open_file_writer("predict-records", output, record_stream, header=header))
        probabilities = stack.enter_context(
            opened_probabilities(probabilities_out, len(items), len(model.classes), force))
        stack.enter_context(engine)
        failed = earlier_failed
        records = classify(items, model, top_k=top_k, batch_size=options["batch_size"], preprocessing=preprocessing,
                           workers=options["workers"], decoding=decoder or options["decoding"],
                           max_pixels=options["max_pixels"], engine=engine,
                           on_probabilities=probabilities.write if probabilities else None)
        # closing: a Ctrl-C here stops the decode workers now, not when the traceback is collected.
        with contextlib.closing(records):
            try:
                for record in records:
                    with whole_record():
                        if "error" in record:
                            failed += 1
                            report_error(f"{display_path(record['path'])}: {record['error']}")
                        for writer in writers:
                            writer.write(record)
            except KeyboardInterrupt:
                for writer in writers:
                    writer.close()  # what was written stays valid (a JSON array gets its closing bracket)
                raise
        for writer in writers:
            writer.close()
    status = failure_status(failed, total, max_failures, options["quiet"], "inputs could not be classified")
    if status:
        sys.exit(status)


def report_images_option(command):
    """--report-images, which eval --report and the report command share."""
    from .report_html import DEFAULT_REPORT_IMAGES

    return click.option("--report-images", type=click.IntRange(min=0), default=DEFAULT_REPORT_IMAGES,
                        show_default=True, metavar="N",
                        help="At most N thumbnails in the HTML report: the most confident mistakes "
                             "first.")(command)


def report_options(command):
    """eval's --report and --report-images."""
    command = report_images_option(command)
    return click.option("--report", "report_path", type=click.Path(dir_okay=False), metavar="FILE.html",
                        help="Also write a self-contained HTML page to look at: per-class accuracy, "
                             "confusions and misclassified images with thumbnails.")(command)


def check_record_file_name(kind, value):
    if value is not None:
        try:
            file_format(kind, value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


def record_file_option(name, kind, help_text):
    return click.option(name, type=click.Path(dir_okay=False),
                        metavar="|".join(f"FILE{ext}" for ext in file_extensions(kind)),
                        callback=lambda ctx, param, value: check_record_file_name(kind, value), help=help_text)


def write_confusion_rows(writer, rows):
    """The library's (true, predicted, images) confusion rows, through --confusion-out's writer."""
    for true, predicted, count in rows:
        writer.write({"true": true, "predicted": predicted, "count": count})
    writer.close()


def check_can_write(path, force, replaced=False):
    """Refuse an existing file without --force, and a missing folder or one that cannot be written, before anything
    runs. replaced: the file is written beside and renamed into place (the HTML report), so its folder must take
    a new file even where the file itself exists."""
    if os.path.exists(path) and not force:
        raise CommandError(f"{path}: already exists; pass --force to overwrite it")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CommandError(f"{path}: cannot write: no such folder {folder}")
    try:
        if os.path.exists(path) and not replaced:
            if os.path.isfile(path):  # not a FIFO, which would wait for a reader
                open(path, "ab").close()  # written in place: changes nothing, but fails where it cannot be written
        else:
            # A real file made and removed, not os.access: root passes that where writing fails (/proc, a
            # read-only mount; a folder of another user over NFS).
            import tempfile

            with tempfile.TemporaryFile(dir=folder, prefix=".resclassify-check-"):
                pass
    except OSError as exc:
        raise CommandError(f"{path}: cannot write in {folder}: {exc.strerror or exc}") from None


def open_whole_run_output(path, force, resume):
    """A file that holds what the whole run found (--misclassified-out, --confusion-out): after --resume, made again
    from every record and put in place of the earlier run's at the end; else written as the run goes."""
    from .output import ReplacingFile

    if not resume:
        return open_for_writing(path, force)
    try:
        return ReplacingFile(path)
    except OSError as exc:
        raise CommandError(f"{path}: cannot write: {exc.strerror or exc}") from None


def open_for_writing(path, force):
    """The file, opened for writing as a GuardedStream: a full disk is an error that names it."""
    try:
        # "x" rather than "w" without --force: a file that appeared since the check is kept.
        return GuardedStream(open(path, "w" if force else "x", encoding="utf-8", newline=""), path)
    except FileExistsError:
        raise CommandError(f"{path}: already exists; pass --force to overwrite it") from None
    except OSError as exc:
        raise CommandError(f"{path}: cannot write: {exc.strerror or exc}") from None


@cli.command(name="eval")
@click.argument("sources", nargs=-1, metavar="FOLDER | --from-predictions FILE...")
@click.option("--from-predictions", is_flag=True,
              help="Build the report from prediction files (eval --predictions-out .jsonl/.csv, e.g. the shards of "
                   "an array job) instead of running a model over FOLDER; no model, no network.")
@click.option("--labels", "labels_file", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="Labels for a flat folder: CSV/TSV with a header (filename,label), Kaggle's "
                   "LOC_val_solution.csv, or the devkit's ILSVRC2012_validation_ground_truth.txt.")
@click.option("--real-labels", "real_labels_file", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="ReaL's real.json: a top-k prediction hits when it is any of the image's ReaL labels; "
                   "images with none are skipped.")
@click.option("-k", "--top-k", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="Also report top-k accuracy (top-1 and top-5 are always reported); predictions kept per image.")
@click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N",
              help="Evaluate only the first N labelled images in sorted path order.")
@format_options("report")
@record_file_option("--predictions-out", "eval-records", "Write one record per image (true label, top-k, hit@1, "
                                                         "hit@5) as it is scored.")
@record_file_option("--misclassified-out", "misclassified", "Write the images whose top-1 missed, with true and "
                                                            "predicted labels.")
@report_options
@click.option("--resume", is_flag=True,
              help="Continue the --predictions-out file of an interrupted run: count its records, run only the "
                   "images it lacks; the report covers all of them.")
@probabilities_out_option
@record_file_option("--confusion-out", "confusion", "Write the top-1 confusion matrix as true,predicted,count "
                                                    "rows (class indices), one per pair that occurred.")
@click.option("--force", is_flag=True, help="Overwrite existing output files (--predictions-out, "
                                            "--misclassified-out, --report, --probabilities-out, --confusion-out).")
@click.option("--fail-under", type=click.FloatRange(0, 100), default=None, metavar="PCT",
              help="Exit with status 1 when top-1 accuracy (in %) is below PCT.")
@max_failures_option
@scale_options
@model_options
@reports_errors
def eval_command(sources, from_predictions, labels_file, real_labels_file, top_k, limit, format_name, as_json,
                 predictions_out, misclassified_out, report_path, report_images, resume, probabilities_out,
                 confusion_out, force, fail_under, max_failures, shard_text, shards, engine, ray_address, **options):
    """Measure top-1/top-5 accuracy over a folder of labelled images.

    FOLDER holds class folders named by WordNet id (n02123045), Keras label (tabby) or
    class index (0..999, as ImageNetV2); or it is a flat folder and --labels says which
    class each image is. With --from-predictions, the arguments are prediction files
    instead, whose report is that of one run over all their images.

    \b
    Examples:
      resclassify eval imagenet/val
      resclassify eval val_flat --labels ILSVRC2012_validation_ground_truth.txt
      resclassify eval imagenetv2-matched-frequency --json --predictions-out run.jsonl
      resclassify eval imagenet/val --report report.html
      resclassify eval imagenet/val --shard 2/8 --predictions-out shard-2.jsonl --resume
      resclassify eval --from-predictions shard-*.jsonl
      resclassify eval val/ --tta ten-crop --interpolation bilinear --json
    """
    from .datasets import find_ground_truth
    from .evaluation import misclassified_record, reported_ks, run_evaluation
    from .labels import read_class_file
    from .output import EvalProgress, open_file_writer

    check_preprocessing_options(**options)
    named = {"--predictions-out": predictions_out, "--misclassified-out": misclassified_out, "--report": report_path,
             "--probabilities-out": probabilities_out, "--confusion-out": confusion_out}
    if probabilities_out is not None:
        named["--probabilities-out's row names"] = probability_files(probabilities_out)[1]
    outputs = [path for path in named.values() if path is not None]
    for first, second in itertools.combinations([(n, p) for n, p in named.items() if p is not None], 2):
        if os.path.abspath(first[1]) == os.path.abspath(second[1]):
            raise click.UsageError(f"{first[0]} and {second[0]} name the same file")
    if from_predictions:
        report_format = chosen_format("report", format_name, as_json)
        return report_from_files(sources, report_format, misclassified_out, report_path, report_images, force,
                                 fail_under, max_failures)
    if len(sources) != 1:
        raise click.UsageError("eval takes one FOLDER (or --from-predictions FILE...)" if sources else
                               "Missing argument 'FOLDER'.")
    folder = sources[0]
    if not os.path.isdir(folder):
        raise click.BadParameter(f"Directory {folder!r} does not exist." if not os.path.exists(folder) else
                                 f"{folder!r} is not a folder.", param_hint="'FOLDER'")
    check_resume_options(predictions_out, "--predictions-out", resume, force)
    if probabilities_out is not None and resume:
        raise click.UsageError("--probabilities-out does not go with --resume: the images the earlier run did are "
                               "not run again, so their probabilities are not known")
    shard = chosen_shard(shard_text, shards)
    for path in outputs:
        # --resume makes every whole-run output again from all the records, over the earlier run's files.
        check_can_write(path, force or resume, replaced=path == report_path or (resume and path != predictions_out))
    quiet = options["quiet"]
    engine = chosen_engine(engine, ray_address, options)
    # Ground truth before the model where the class names are known without it, so that a
    # wrong folder fails in a second, not after TensorFlow has started.
    if options["classes_path"] is not None:
        truth = find_ground_truth(folder, labels_file, real_labels_file, read_class_file(options["classes_path"]))
    elif options["model_path"] is None:
        truth = find_ground_truth(folder, labels_file, real_labels_file)
    else:
        truth = None
    with contextlib.ExitStack() as stack:
        record_stream = stack.enter_context(lock_early(predictions_out, resume))
        # Decode workers start before the model loads (so that the two overlap) where the images are known.
        decoder = None if truth is None else stack.enter_context(
            open_decoding(engine, evaluation_count(truth, limit, shard), options))
        model, preprocessing = open_model_for(engine, options)
        if truth is None:
            truth = find_ground_truth(folder, labels_file, real_labels_file, model.classes)
            decoder = stack.enter_context(open_decoding(engine, evaluation_count(truth, limit, shard), options))
        if not quiet:
            warn_about_unmatched(truth)
        run_count = evaluation_count(truth, limit, shard)
        real = real_labels_file is not None

        previous, earlier, header = [], [], True
        if resume:
            from .evaluation import check_earlier_records
            from .records import cut_to_whole_records, identity_of_run, read_record_file

            if record_stream is None:  # no file when the run started: locked before it is read all the same
                record_stream = stack.enter_context(open_for_appending(predictions_out))
            previous = read_record_file(predictions_out)
            earlier = previous.records
            # The same checks run_evaluation makes, before the file is cut: a file that is refused stays whole.
            images = truth.images if limit is None else truth.images[:limit]
            if shard is not None:
                images = shard.take(images, key=lambda image: image.path)
            check_earlier_records(earlier, images, identity_of_run(model, preprocessing, top_k), predictions_out)
            cut_to_whole_records(previous)
            header = previous.header is None

        writers = []
        if predictions_out:
            if record_stream is None:
                record_stream = stack.enter_context(open_record_output(predictions_out, "replace" if force else "new"))
            writers.append((open_file_writer("eval-records", predictions_out, record_stream, ks=reported_ks(top_k),
                                             real_labels=real, header=header), None))
        if misclassified_out:
            stream = stack.enter_context(open_whole_run_output(misclassified_out, force, resume))
            writers.append((open_file_writer("misclassified", misclassified_out, stream, real_labels=real),
                            misclassified_record))
        probabilities = stack.enter_context(
            opened_probabilities(probabilities_out, run_count, len(model.classes), force))
        confusion = None
        if confusion_out:
            confusion = open_file_writer("confusion", confusion_out,
                                         stack.enter_context(open_whole_run_output(confusion_out, force, resume)))
        collector = None
        if report_path:
            from .report_html import ReportCollector

            collector = ReportCollector(report_images)
        # Resumed: the earlier records first, so the misclassified file and the page cover the whole run.
        for record in earlier:
            if collector is not None:
                collector.add(record)
            for writer, convert in writers[1 if predictions_out else 0:]:
                row = convert(record) if convert else record
                if row is not None:
                    writer.write(row)
        stack.enter_context(engine)
        progress = stack.enter_context(
            EvalProgress(run_count - len(earlier), sys.stderr, enabled=sys.stderr.isatty() and not quiet))

        def on_record(record):
            with whole_record():
                if collector is not None:
                    collector.add(record)
                if "error" in record:
                    progress.line(f"resclassify: error: {display_path(record['path'])}: {record['error']}")
                for writer, convert in writers:
                    row = convert(record) if convert else record
                    if row is not None:
                        writer.write(row)
                progress.advance()

        report = run_evaluation(truth, model, top_k=top_k, limit=limit, shard=shard, batch_size=options["batch_size"],
                                preprocessing=preprocessing, workers=options["workers"],
                                decoding=decoder or options["decoding"],
                                network_threads=network_threads(options, model),
                                max_pixels=options["max_pixels"], on_record=on_record, previous=previous,
                                engine=engine, on_probabilities=probabilities.write if probabilities else None,
                                on_confusion_matrix=(lambda rows: write_confusion_rows(confusion, rows)) if confusion
                                else None)
    finish_evaluation(report, chosen_format("report", format_name, as_json), fail_under, quiet, run_count, report_path,
                      collector, force or resume, max_failures)


def evaluation_count(truth, limit, shard):
    """How many images an evaluation runs: the labelled ones, cut by --limit, then --shard."""
    count = len(truth.images) if limit is None else min(limit, len(truth.images))
    if shard is not None:
        start, stop = shard.bounds(count)
        count = stop - start
    return count


def report_from_files(files, report_format, misclassified_out, report_path, report_images, force, fail_under,
                      max_failures):
    """eval --from-predictions: the report of the files' records, no model; only output options apply."""
    from .evaluation import misclassified_record, report_from_prediction_files
    from .output import open_file_writer

    ctx = click.get_current_context()
    allowed = {"sources", "from_predictions", "format_name", "as_json", "misclassified_out", "report_path",
               "report_images", "force", "fail_under", "max_failures", "quiet"}
    given = [param for param in ctx.command.params if param.name not in allowed
             and ctx.get_parameter_source(param.name) is not click.core.ParameterSource.DEFAULT]
    if given:
        raise click.UsageError(f"{given[0].opts[-1]} does not go with --from-predictions: the files already hold "
                               "the model's results")
    if not files:
        raise click.UsageError("--from-predictions needs the prediction files: FILE...")
    for path in (misclassified_out, report_path):
        if path is not None:
            check_can_write(path, force, replaced=path == report_path)
    report, records = report_from_prediction_files(files)
    collector = None
    if report_path:
        from .report_html import ReportCollector

        collector = ReportCollector(report_images)
        for record in records:
            collector.add(record)
    if misclassified_out:
        real = any("real_labels" in record for record in records)
        with open_for_writing(misclassified_out, force) as stream:
            writer = open_file_writer("misclassified", misclassified_out, stream, real_labels=real)
            for record in records:
                row = misclassified_record(record)
                if row is not None:
                    writer.write(row)
            writer.close()
    for failure in report["failed"]:
        report_error(f"{display_path(failure['path'])}: {failure['error']}")
    run_count = report["images"]["evaluated"] + report["images"]["failed"]
    finish_evaluation(report, report_format, fail_under, ctx.params["quiet"], run_count, report_path, collector, force,
                      max_failures)


def finish_evaluation(report, report_format, fail_under, quiet, run_count, report_path=None, collector=None,
                      force=False, max_failures=None):
    """Print the report (and write the HTML page); exit 1 when top-1 is under --fail-under, else UNREADABLE_STATUS
    when more images failed than --max-failures allows."""
    from .output import open_writer

    writer = open_writer("report", report_format, GuardedStream(sys.stdout, "stdout"))
    writer.write(report)
    writer.close()
    if report_path:
        write_report_page(report_path, report, collector, force)
    status = failure_status(report["images"]["failed"], run_count, max_failures, quiet,
                            "images could not be read; they are left out of the figures")
    top1 = report["accuracy"]["top1"]["accuracy_percent"]
    if fail_under is not None and (top1 is None or top1 < fail_under):
        shown = "n/a (no image evaluated)" if top1 is None else f"{top1:.2f}%"
        report_error(f"top-1 accuracy {shown} is below --fail-under {fail_under:g}%")
        status = 1
    sys.exit(status)


def write_report_page(path, report, collector, force):
    """The HTML report, or one error line saying why it could not be written."""
    from .output import write_html_report

    try:
        write_html_report(path, report, collector, force=force)
    except FileExistsError:
        raise CommandError(f"{path}: already exists; pass --force to overwrite it") from None
    except OSError as exc:
        raise CommandError(f"{path}: cannot write: {exc.strerror or exc}") from None


@cli.command("report")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False),
                metavar="FILE.jsonl...")
@click.option("-o", "--output", "output_path", required=True, type=click.Path(dir_okay=False), metavar="FILE.html",
              help="Where to write the HTML page.")
@report_images_option
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@reports_errors
def report_command(files, output_path, report_images, force):
    """Build eval's HTML report from prediction files, without running the network.

    FILE is what eval --predictions-out wrote: one run, or the files of the shards of one
    run (--shard), which are merged. The page is the one eval --report writes; thumbnails
    are made from the image paths in the records, so run it where the images are.

    \b
    Examples:
      resclassify report run.jsonl -o report.html
      resclassify report shard-*.jsonl -o report.html --report-images 500
    """
    from .evaluation import report_from_prediction_files
    from .report_html import ReportCollector

    if any(os.path.abspath(path) == os.path.abspath(output_path) for path in files):
        raise click.UsageError(f"{output_path} is one of the prediction files")
    check_can_write(output_path, force, replaced=True)
    report, records = report_from_prediction_files(files)
    collector = ReportCollector(report_images)
    for record in records:
        collector.add(record)
    write_report_page(output_path, report, collector, force)


def warn_about_unmatched(truth):
    """Images without a label and labels without an image, on stderr: counted, first few named."""
    from .datasets import FIRST_FEW

    by_reason = {}
    for skipped in truth.skipped:
        by_reason.setdefault(skipped.reason, []).append(display_path(skipped.path))
    for reason, paths in by_reason.items():
        report_warning(f"{len(paths)} image{'s' if len(paths) != 1 else ''} skipped, {reason}: "
                       f"{first_few(paths, FIRST_FEW)}")
    for skipped in truth.not_followed:
        report_warning(f"{display_path(skipped.path)}: {skipped.reason}")
    for merged in truth.merged_class_folders:
        folders = [display_path(name) for name in merged["folders"]]
        report_warning(f"class folders {', '.join(folders[:-1])} and {folders[-1]} all name class {merged['index']} "
                       f"({merged['label']}, {merged['wnid']}); their images are counted together")
    for source, names in truth.labels_without_image.items():
        report_warning(f"{source}: {len(names)} label{'s' if len(names) != 1 else ''} with no image: "
                       f"{first_few(names, FIRST_FEW)}")


def first_few(names, count):
    more = len(names) - count
    return ", ".join(names[:count]) + (f", and {more} more" if more > 0 else "")


@cli.command()
@click.option("--devices", is_flag=True,
              help="Also list the devices each installed backend sees (starts each backend in a child process: "
                   "seconds).")
@format_options("info")
@reports_errors
def info(devices, format_name, as_json):
    """Versions (resclassify, Keras, each backend, ONNX Runtime), the backend a run gets, the weights cache.

    \b
    Examples:
      resclassify info
      resclassify info --devices
      resclassify info --json | jq .backends.jax.version
    """
    from . import about
    from .output import open_writer

    writer = open_writer("info", chosen_format("info", format_name, as_json), sys.stdout)
    writer.write(about(devices=devices))
    writer.close()


@cli.group("weights")
def weights_group():
    """List, fetch, locate and check Keras's ImageNet weight files.

    They live in Keras's own cache, $KERAS_HOME/models (default ~/.keras/models);
    RESCLASSIFY_WEIGHTS_MIRROR=<base URL> fetches the same file names from a mirror.
    """


def _weights_arguments(models):
    """MODEL arguments (architectures, or all) as KnownWeights, in the order given."""
    from .weights import KNOWN_WEIGHTS

    chosen = ARCH_CHOICES if "all" in models else models
    return [KNOWN_WEIGHTS[name] for name in dict.fromkeys(chosen)]


MODEL_ARGUMENT = click.Choice(ARCH_CHOICES + ("all",))


@weights_group.command("list")
@format_options("weights")
@reports_errors
def weights_list(format_name, as_json):
    """Each known model's weights: file, size, md5, whether it is cached, and its path."""
    from .output import open_writer
    from .weights import KNOWN_WEIGHTS, cache_dir, listing

    chosen = chosen_format("weights", format_name, as_json)
    writer = open_writer("weights", chosen, exact_stream(sys.stdout) if chosen == "csv" else sys.stdout,
                         cache_folder=str(cache_dir()),
                         approx_mib={known.arch: known.approx_mib for known in KNOWN_WEIGHTS.values()})
    for row in listing():
        writer.write(row)
    writer.close()


@weights_group.command("download")
@click.argument("models", nargs=-1, type=MODEL_ARGUMENT, metavar="[MODEL...]")
@click.option("--onnx", "with_onnx", is_flag=True,
              help="Also export each to ONNX for --backend onnxruntime (needs the onnx extra), so a machine "
                   "without network gets both.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or messages on stderr.")
@reports_errors
def weights_download(models, with_onnx, quiet):
    """Fetch weights into the cache (to copy to a machine without network); print each file's path.

    MODEL is an architecture (resnet50, resnet152v2, ...) or all [default: resnet50]. A file
    already cached with the right md5 is not fetched again. With --onnx, the ONNX file made from
    each is printed after it (made once, then reused).
    """
    from .weights import cached_state, official_file, offline_reason

    notice = None if quiet else report_warning
    for known in _weights_arguments(models or (DEFAULT_ARCH,)):
        was_cached = cached_state(known)[0] == "cached"
        with download_progress(quiet) as progress:
            path = official_file(known, offline=offline_reason(), progress=progress, notice=notice)
        if not quiet:
            what = "already in the cache" if was_cached else "downloaded"
            click.echo(f"{known.arch}: {what}, md5 {known.md5} checked", err=True)
        click.echo(str(path))
        if with_onnx:
            from .runners import onnx

            exported = onnx.prepare(known.arch, notice=notice)
            if not quiet:
                click.echo(f"{known.arch}: ONNX file {'exported' if exported.made else 'already in the cache'}",
                           err=True)
            click.echo(str(exported.path))


@weights_group.command("path")
@click.argument("model", type=click.Choice(ARCH_CHOICES))
@reports_errors
def weights_path(model):
    """Print where MODEL's weights file is, or goes, in the cache (whether or not it is there yet)."""
    from .weights import KNOWN_WEIGHTS

    click.echo(str(KNOWN_WEIGHTS[model].cache_path))


@weights_group.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--arch", type=click.Choice(ARCH_CHOICES), default=None,
              help="The architecture to load it into [default: from the file name, else resnet50].")
@click.option("-v", "--verbose", is_flag=True, help="Show TensorFlow's own log messages on stderr.")
@reports_errors
def weights_verify(file, arch, verbose):
    """Check a weights file: its md5 against Keras's (when the name is one of Keras's) and that it loads.

    Exit status 0 when every check passes, 1 otherwise.
    """
    from .errors import WeightsError
    from .runners.keras import load_classifier
    from .weights import file_hash, known_by_file_name

    known = known_by_file_name(os.path.basename(file))
    arch = arch or (known.arch if known else DEFAULT_ARCH)
    md5 = file_hash(file, "md5")
    click.echo(f"file    {file} ({os.path.getsize(file) / 2**20:.1f} MiB)")
    click.echo(f"sha256  {file_hash(file, 'sha256')}")
    if known is None:
        click.echo(f"md5     {md5} (no known checksum for this file name)")
    elif md5 == known.md5:
        click.echo(f"md5     {md5} matches Keras's {known.arch} file")
    else:
        raise WeightsError(f"{file}: md5 is {md5}, expected {known.md5} for Keras's {known.file_name}")
    classifier = load_classifier(file, arch, "cpu", verbose=verbose)
    click.echo(f"loads   into {arch} ({classifier.parameters:,} parameters)")


def main():
    """Console-script entry point: no traceback reaches the user unless RESCLASSIFY_DEBUG=1."""
    # Every write to stdout, click.echo's included, names the stream when it fails (a full disk).
    # A terminal that is not UTF-8 gets what it can show: no UnicodeEncodeError, ever.
    degrade_for_terminal(sys.stdout, sys.stderr)
    original_stdout = sys.stdout
    stdout = sys.stdout = GuardedStream(original_stdout, "stdout")
    _install_stop_handlers()
    try:
        status = _run_command()
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort as exc:
        if not isinstance(exc.__cause__, KeyboardInterrupt):
            raise
        _end_interrupted()
    except (Interrupted, KeyboardInterrupt):
        _end_interrupted()
    except BrokenPipeError:
        # The reader (head, jq) went away: stop quietly, as other Unix tools do.
        stdout.failed = True
        sys.exit(1)
    except ResclassifyError as exc:  # from a command without reports_errors (an OutputError)
        if debug_requested():
            raise
        report_error(str(exc))
        sys.exit(1)
    except Exception as exc:
        if debug_requested():
            raise
        report_error(f"internal error: {type(exc).__name__}: {exc} (set {DEBUG_VARIABLE}=1 for the traceback)")
        sys.exit(1)
    finally:
        sys.stdout = original_stdout
        if stdout.failed:
            # Whatever stdout still holds cannot be written: drop it, so that Python's own flush
            # at exit does not add an "Exception ignored" trace to the error already shown.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, original_stdout.fileno())
    sys.exit(status if isinstance(status, int) else 0)


def _run_command():
    """The command line's command; a stop signal outside it (while an error is shown, say) ends the process at once."""
    _Stopping.command_running = True
    try:
        # Not standalone: Click would turn Ctrl-C into "Aborted!" and status 1.
        return cli.main(prog_name="resclassify", standalone_mode=False)
    finally:
        _Stopping.command_running = False


def _end_interrupted():
    """Ctrl-C (SIGTERM, SIGHUP): end now with status 128 + the signal (130 for Ctrl-C), without
    waiting for a network batch or a decode still running on another thread. What was written is
    already whole: each record is written and flushed in one piece, record files were closed and
    the decode workers stopped on the way out."""
    _flush_standard_streams()
    os._exit(INTERRUPTED_STATUS if _Stopping.signal is None else 128 + _Stopping.signal)


def _flush_standard_streams():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
