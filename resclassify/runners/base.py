"""What every runner shares: its name, its preprocessing, its class names and the checks on a user's model file."""

from pathlib import Path

from ..config import Preprocessing, resolve_preprocessing
from ..errors import ModelError
from ..labels import ClassIndex, imagenet_classes, read_class_file

MODEL_FILE_SUFFIXES = (".keras", ".h5", ".hdf5")


class RunnerBase:
    """What both runners (runners.keras, runners.onnx) inherit; each keeps arch, weights, input_size, normalization."""

    arch: str
    weights: str
    input_size: int
    normalization: str
    # runners.load()'s arguments, set by it, so that another process (a Ray actor) loads the same
    # network; None for a runner made some other way.
    recipe: dict | None = None

    @property
    def name(self) -> str:
        """What ran, in a word: the architecture, or the file name of a user's own model."""
        return Path(self.weights).name if self.arch == "custom" else self.arch

    def preprocessing(self, name: str = "center-crop", *, crop_fraction: float | None = None,
                      interpolation: str | None = None, tta: str | None = None, mode: str | None = None,
                      exact_decode: bool = False) -> Preprocessing:
        """The preprocessing for this network: its input size, and its normalization unless mode overrides it."""
        return resolve_preprocessing(name, size=self.input_size, crop_fraction=crop_fraction,
                                     interpolation=interpolation, tta=tta, mode=mode or self.normalization,
                                     exact_decode=exact_decode)

    def close(self) -> None:
        """Nothing to release: a loaded network stays cached for this process, so loading it again is instant."""


def checked_model_file(model_path) -> Path:
    """A user's own model file as a Path, or ModelError when it is missing or not a Keras model file."""
    path = Path(model_path).expanduser()
    if not path.is_file():
        raise ModelError(f"model {model_path}: {'is not a file' if path.exists() else 'no such file'}")
    if path.suffix.lower() not in MODEL_FILE_SUFFIXES:
        raise ModelError(f"model {model_path}: expected a .keras file or a full-model .h5 file")
    return path


def read_classes(classes_path):
    """The user's classes file (None without one); read before the network loads, so a wrong path fails fast."""
    return read_class_file(classes_path) if classes_path is not None else None


def classes_for(named, classes_path, outputs, source=None) -> ClassIndex:
    """The class names for a network with `outputs` outputs: the user's file, ImageNet's, or the indices.

    source names the model in messages about classes named by index ("a class of my.keras").
    """
    if named is not None:
        if len(named) != outputs:
            raise ModelError(f"classes file {classes_path} has {len(named)} labels but the model has "
                             f"{outputs} outputs")
        return named
    if outputs == 1000:
        return imagenet_classes()
    # No names given: each class is called by its output index, so results still read.
    return ClassIndex(labels=tuple(str(i) for i in range(outputs)), source=source)
