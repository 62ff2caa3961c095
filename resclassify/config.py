"""The preprocessing recipe, as one frozen object resolved once and passed whole to the loader."""

import math
from dataclasses import asdict, dataclass

from .archs import ARCH_CHOICES, DEFAULT_ARCH  # noqa: F401 (the built-in networks are listed in archs.py)
from .errors import ChoiceError

# Each list of choices lives here and only here; the CLI and the library read these.
PREPROCESS_CHOICES = ("center-crop", "squash")
NORMALIZE_MODES = ("caffe", "tf", "torch", "none")
DEVICE_CHOICES = ("auto", "cpu", "gpu")
PRECISION_CHOICES = ("float32", "bfloat16", "float16")
# The Keras backends resclassify runs on (backends/ has a module for each).
BACKEND_CHOICES = ("tensorflow", "jax")
# Where a run executes (resclassify.engines): this machine, or a Ray cluster.
ENGINE_CHOICES = ("local", "ray")
# Where images are decoded: auto picks from the cores, the device and the run's length (decoding.py).
DECODING_CHOICES = ("auto", "threads", "processes")

# A user's own model that does not say otherwise is most likely a fine-tuned ResNet50 (caffe).
DEFAULT_CUSTOM_NORMALIZATION = "caffe"

DEFAULT_SIZE = 224
# timm's and torchvision's single-crop evaluation: short side to size / 0.875 (256 for 224).
DEFAULT_CROP_FRACTION = 0.875

# How each recipe resamples: center-crop is the standard evaluation, squash is exactly what
# keras.utils.load_img(path, target_size=(224, 224)) does (nearest neighbour, no crop).
_INTERPOLATION = {"center-crop": "bicubic", "squash": "nearest"}

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
TORCH_STD_RGB = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """Everything that turns an image file into the network's input."""

    name: str = "center-crop"
    size: int = DEFAULT_SIZE
    crop_fraction: float = DEFAULT_CROP_FRACTION
    interpolation: str = "bicubic"
    mode: str = "caffe"
    exact_decode: bool = False

    @property
    def array_shape(self):
        """Shape of one decoded image as images.load_image returns it (uint8)."""
        return (self.size, self.size, 3)

    @property
    def resize_short(self):
        """Short side before the centre crop (256 for a 224 crop)."""
        return int(math.floor(self.size / self.crop_fraction))

    def describe(self):
        """One line naming the recipe, printed beside every figure it produced."""
        if self.name == "center-crop":
            shape = f"short side {self.resize_short}, centre {self.size}x{self.size}"
        else:
            shape = f"resized to {self.size}x{self.size}, no crop"
        return f"{self.name} ({shape}, {self.interpolation}), {self.mode} normalization"

    def as_dict(self):
        fields = asdict(self)
        if self.name != "center-crop":
            del fields["crop_fraction"]
        return fields


def resolve_preprocessing(name="center-crop", *, size=None, mode=None, exact_decode=False):
    """Command-line choices over model defaults over constants.

    A model's own defaults (its input size and normalization) come from model.preprocessing(),
    which calls this with them; every entry point given no preprocessing asks the model. Called
    without them, the constants are Preprocessing's own field defaults (ResNet50's 224, caffe).
    """
    check_choice("preprocessing", name, PREPROCESS_CHOICES)
    mode = mode or Preprocessing.mode
    check_choice("normalization", mode, NORMALIZE_MODES)
    return Preprocessing(
        name=name,
        size=size or Preprocessing.size,
        interpolation=_INTERPOLATION[name],
        mode=mode,
        exact_decode=exact_decode,
    )


def check_choice(what, value, choices):
    """value if it is one of choices; else the one error every unknown choice raises (ChoiceError)."""
    if value not in choices:
        raise ChoiceError(f"unknown {what} {value!r}; choose from {', '.join(choices)}")
    return value
