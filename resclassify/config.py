"""The preprocessing recipe, as one frozen object resolved once and passed whole to the loader."""

import math
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from .archs import ARCH_CHOICES, DEFAULT_ARCH  # noqa: F401 (the built-in networks are listed in archs.py)
from .errors import ChoiceError, PreprocessingError

# Each list of choices lives here and only here; the CLI and the library read these.
PREPROCESS_CHOICES = ("center-crop", "squash")
NORMALIZE_MODES = ("caffe", "tf", "torch", "none")
DEVICE_CHOICES = ("auto", "cpu", "gpu")
PRECISION_CHOICES = ("float32", "bfloat16", "float16")
# The Keras backends resclassify runs on (backends/ has a module for each).
BACKEND_CHOICES = ("tensorflow", "jax")
# What --backend takes: a Keras backend, or ONNX Runtime running the network exported from Keras.
ONNXRUNTIME = "onnxruntime"
ALL_BACKEND_CHOICES = BACKEND_CHOICES + (ONNXRUNTIME,)
# Where a run executes (resclassify.engines): this machine, or a Ray cluster.
ENGINE_CHOICES = ("local", "ray")
# Where images are decoded: auto picks from the cores, the device and the run's length (decoding.py).
DECODING_CHOICES = ("auto", "threads", "processes")

# A user's own model that does not say otherwise is most likely a fine-tuned ResNet50 (caffe).
DEFAULT_CUSTOM_NORMALIZATION = "caffe"

DEFAULT_SIZE = 224
# timm's and torchvision's single-crop evaluation: short side to size / 0.875 (256 for 224).
DEFAULT_CROP_FRACTION = 0.875
# Below this the crop is a speck of the image and the resize (size / fraction) grows absurd.
MIN_CROP_FRACTION = 0.05

# Pillow's resampling filters, by the names --interpolation takes.
INTERPOLATION_CHOICES = ("nearest", "bilinear", "bicubic", "lanczos", "box")
# How each recipe resamples unless told: center-crop is the standard evaluation, squash is exactly
# what keras.utils.load_img(path, target_size=(224, 224)) does (nearest neighbour, no crop).
DEFAULT_INTERPOLATION = {"center-crop": "bicubic", "squash": "nearest"}

# Test-time augmentation: how many views of each image go through the network (their softmax
# probabilities are averaged). flip: the crop and its mirror image. ten-crop (the ResNet paper's
# protocol): the four corner crops and the centre crop of the resized image, and the mirror image
# of each, in torchvision's TenCrop order.
TTA_VIEWS = {"none": 1, "flip": 2, "ten-crop": 10}
TTA_CHOICES = tuple(TTA_VIEWS)

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
TORCH_STD_RGB = (0.229, 0.224, 0.225)


def _choice(value: object, choices: tuple[str, ...], what: str, option: str) -> None:
    if value not in choices:
        raise PreprocessingError(f"unknown {what} {value!r}; choose from {', '.join(choices)}", option)


@dataclass(frozen=True)
class Preprocessing:
    """Everything that turns an image file into the network's input: one view, or several (tta).

    Built only through checks (__post_init__): a Preprocessing that exists can be run.
    """

    name: str = "center-crop"
    size: int = DEFAULT_SIZE
    crop_fraction: float = DEFAULT_CROP_FRACTION
    interpolation: str = "bicubic"
    mode: str = "caffe"
    exact_decode: bool = False
    tta: str = "none"

    def __post_init__(self) -> None:
        _choice(self.name, PREPROCESS_CHOICES, "preprocessing", "--preprocess")
        _choice(self.interpolation, INTERPOLATION_CHOICES, "interpolation", "--interpolation")
        _choice(self.mode, NORMALIZE_MODES, "normalization", "--preprocess-mode")
        _choice(self.tta, TTA_CHOICES, "test-time augmentation", "--tta")
        if isinstance(self.size, bool) or not isinstance(self.size, numbers.Integral) or self.size < 1:
            raise PreprocessingError(f"the network input size must be a positive whole number of pixels, "
                                     f"not {self.size!r}", "--size")
        fraction = self.crop_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not math.isfinite(fraction) \
                or fraction <= 0:
            raise PreprocessingError(f"the crop fraction must be a number from {MIN_CROP_FRACTION:g} to 1, "
                                     f"not {fraction!r}", "--crop-fraction")
        if fraction < MIN_CROP_FRACTION:
            raise PreprocessingError(
                f"crop fraction {fraction:g} would resize the short side to about {self.size / fraction:.0f} "
                f"pixels to crop {self.size} of them; use at least {MIN_CROP_FRACTION:g}", "--crop-fraction")
        if self.resize_short < self.size:
            raise PreprocessingError(
                f"crop fraction {fraction:g} makes the {self.size}x{self.size} crop larger than the image: "
                f"the short side is resized to {self.size} / {fraction:g} = {self.resize_short} pixels "
                f"(the crop fraction is at most 1)", "--crop-fraction")
        if self.tta == "ten-crop" and self.name != "center-crop":
            raise PreprocessingError(
                f"ten-crop cuts corner crops from the resized image; it goes with --preprocess center-crop, "
                f"not {self.name} (which keeps the whole image: use --tta flip)", "--tta")

    @property
    def resize_short(self) -> int:
        """Short side before the crop (256 for a 224 crop)."""
        return int(math.floor(self.size / self.crop_fraction))

    @property
    def views(self) -> int:
        """How many views of each image the network sees (their probabilities are averaged)."""
        return TTA_VIEWS[self.tta]

    @property
    def array_shape(self) -> tuple[int, ...]:
        """The shape of one decoded image: (size, size, 3), or (views, size, size, 3) with tta."""
        view = (self.size, self.size, 3)
        return view if self.views == 1 else (self.views,) + view

    def describe(self) -> str:
        """One line naming the recipe, printed beside every figure it produced."""
        if self.name == "squash":
            shape = f"resized to {self.size}x{self.size}, no crop"
        elif self.tta == "ten-crop":
            shape = f"short side {self.resize_short}, four corner and centre {self.size}x{self.size} crops"
        else:
            shape = f"short side {self.resize_short}, centre {self.size}x{self.size}"
        text = f"{self.name} ({shape}, {self.interpolation})"
        if self.tta == "flip":
            text += ", tta flip (and its mirror image: 2 views, probabilities averaged)"
        elif self.tta == "ten-crop":
            text += ", tta ten-crop (and the mirror image of each: 10 views, probabilities averaged)"
        return f"{text}, {self.mode} normalization"

    @classmethod
    def from_dict(cls, fields: Mapping[str, Any]) -> "Preprocessing":
        """The Preprocessing an as_dict() describes (a record's, a report's with its description); TypeError for
        unknown fields."""
        return cls(**{key: value for key, value in fields.items() if key != "description"})

    def as_dict(self) -> dict[str, Any]:
        """The fields that define the recipe (records and reports carry them; tta included), nothing derived."""
        fields = asdict(self)
        if self.name != "center-crop":
            del fields["crop_fraction"]
        return fields


def resolve_preprocessing(name: str = "center-crop", *, size: int | None = None, crop_fraction: float | None = None,
                          interpolation: str | None = None, tta: str | None = None, mode: str | None = None,
                          exact_decode: bool = False) -> Preprocessing:
    """Command-line choices over model defaults over constants; PreprocessingError if they cannot work.

    A model's own defaults (its input size and normalization) come from model.preprocessing(),
    which calls this with them; every entry point given no preprocessing asks the model. Called
    without them, the constants are Preprocessing's own field defaults (ResNet50's 224, caffe).
    """
    _choice(name, PREPROCESS_CHOICES, "preprocessing", "--preprocess")
    if name == "squash" and crop_fraction is not None:
        raise PreprocessingError("a crop fraction is for --preprocess center-crop; squash resizes the whole image "
                                 "and crops nothing", "--crop-fraction")
    return Preprocessing(
        name=name,
        size=Preprocessing.size if size is None else size,
        crop_fraction=Preprocessing.crop_fraction if crop_fraction is None else crop_fraction,
        interpolation=interpolation or DEFAULT_INTERPOLATION[name],
        mode=mode or Preprocessing.mode,
        exact_decode=exact_decode,
        tta=tta or Preprocessing.tta,
    )


def check_choice(what: str, value: str, choices: tuple[str, ...]) -> str:
    """value if it is one of choices; else the one error every unknown choice raises (ChoiceError)."""
    if value not in choices:
        raise ChoiceError(f"unknown {what} {value!r}; choose from {', '.join(choices)}")
    return value
