"""resclassify: label images and measure top-1/top-5 error with Keras's ImageNet ResNet50."""

from .config import Preprocessing, resolve_preprocessing
from .errors import DatasetError, DeviceError, ImageError, InputError, ResclassifyError, WeightsError
from .images import DEFAULT_MAX_PIXELS

__version__ = "0.1.0"

__all__ = [
    "classify", "load_model", "Preprocessing", "resolve_preprocessing", "ResclassifyError",
    "InputError", "ImageError", "DatasetError", "WeightsError", "DeviceError", "__version__",
]


def load_model(weights="imagenet", *, arch="resnet50", device="auto", precision="float32", threads=None,
               offline=False, verbose=False, progress=False):
    """The network with its weights: "imagenet" (Keras's cache, downloaded once), a URL, or a file."""
    from .model import load_classifier
    from .weights import resolve_weights

    path = resolve_weights(weights, arch, offline=offline, progress=progress)
    return load_classifier(path, arch, device, precision=precision, threads=threads, verbose=verbose)


def classify(paths, model, *, top_k=5, batch_size=32, preprocessing=None, workers=None,
             max_pixels=DEFAULT_MAX_PIXELS):
    """Yield one record per input, in order: {"path", "predictions": [...]} or {"path", "error"}.

    paths may hold image files and InputError objects (see datasets.expand_inputs).
    """
    from .pipeline import prediction_record, score

    preprocessing = preprocessing or resolve_preprocessing()
    for scored in score(paths, model, preprocessing, batch_size=batch_size, workers=workers,
                        max_pixels=max_pixels):
        yield prediction_record(scored, model.classes, top_k)
