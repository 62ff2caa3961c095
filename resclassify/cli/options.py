"""The options commands share, as decorators (the model, runs bigger than one machine, output formats, record
files, --max-failures, the HTML report), and the checks that turn their values into what the library takes."""

import dataclasses

import click

from ..config import (ALL_BACKEND_CHOICES, ARCH_CHOICES, DECODING_CHOICES, DEFAULT_ARCH, DEFAULT_CROP_FRACTION,
                      DEVICE_CHOICES, ENGINE_CHOICES, INTERPOLATION_CHOICES, NORMALIZE_MODES, PRECISION_CHOICES,
                      PREPROCESS_CHOICES, TTA_CHOICES)
from ..images import DEFAULT_MAX_PIXELS
# The table of output formats.
from ..record_formats import file_extensions, file_format
from ..render.outputs import formats, json_format, json_help
from .exits import UNREADABLE_STATUS


class ExistingFileOrUrl(click.Path):
    """A file that must exist (click.Path's checks), or a URL (s3://, gs://, https://...), read through fsspec and
    checked when it is read."""

    def __init__(self):
        super().__init__(exists=True, dir_okay=False)

    def convert(self, value, param, ctx):
        from ..sources.remote import is_url

        return value if is_url(value) else super().convert(value, param, ctx)


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
    from ..config import resolve_preprocessing
    from ..runners.keras import check_arch_size

    resolve_preprocessing(preprocess, size=size, crop_fraction=crop_fraction, interpolation=interpolation, tta=tta,
                          mode=preprocess_mode, exact_decode=exact_decode)
    if model_path is None:
        check_arch_size(size)


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
    from ..sources.shards import ShardError, parse_shard

    if shard_text is None:
        if shards is not None:
            raise click.UsageError("--shards goes with --shard auto")
        return None
    try:
        return parse_shard(shard_text, shards=shards)
    except ShardError as exc:
        raise click.BadParameter(str(exc), param_hint="'--shard'") from None


def format_options(kind):
    """The output options every command shares, for one kind of output in render/outputs.py's table of formats:
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


def check_resume_options(output, output_option, resume, force):
    if resume and output is None:
        raise click.UsageError(f"--resume continues the file {output_option} names: give {output_option} FILE")
    if resume and force:
        raise click.UsageError("--resume continues the file, --force starts it over: give one of them")


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


def report_images_option(command):
    """--report-images, which eval --report and the report command share."""
    from ..render.html import DEFAULT_REPORT_IMAGES

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
