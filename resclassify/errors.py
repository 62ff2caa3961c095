"""The exceptions resclassify raises; the command line turns each into one line on stderr."""


class ResclassifyError(Exception):
    """Base of every error resclassify reports to the user."""


class InputError(ResclassifyError):
    """One input (a file, a folder, a stdin line) could not be used; the others go on."""

    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class ImageError(InputError):
    """An image could not be opened, decoded or converted."""


class DatasetError(ResclassifyError):
    """The ground truth of an evaluation folder could not be worked out."""


class WeightsError(ResclassifyError):
    """Weights could not be found, downloaded, verified or loaded."""


class ModelError(ResclassifyError):
    """A user's own model or its classes file could not be loaded, or they do not fit each other."""


class DeviceError(ResclassifyError):
    """The requested device is not available."""


class BackendError(ResclassifyError):
    """The requested Keras backend is not installed, or this process already runs another one."""


class ChoiceError(ResclassifyError, ValueError):
    """A value outside its list of choices (architecture, precision, device, backend, normalization)."""


class RecordFileError(ResclassifyError):
    """A prediction record file cannot be read back, or does not belong with the run or files beside it."""


class StorageError(ResclassifyError):
    """A remote store cannot be used at all (its extra not installed, a bucket missing, credentials refused):
    found before any work, one line, exit 1. One object that cannot be read is an InputError instead."""


class DecodingError(ResclassifyError):
    """The decode workers could not start or run (not a bad image: that is an ImageError)."""


class PreprocessingError(ChoiceError):
    """Preprocessing options that cannot work: an unknown choice, a crop larger than the resized image, a size below 1...

    option names the command-line option at fault, so the command line can say which one (exit 2).
    """

    def __init__(self, message, option=None):
        super().__init__(message)
        self.option = option


class OutputError(ResclassifyError):
    """Results could not be written to a file or stream (a full disk, a closed pipe's cousins)."""


class ExportError(ModelError):
    """A network loaded in Keras could not be exported to ONNX (or the export does not agree with it)."""


def first_line(exc):
    """The first line of an exception's message (its type's name when it has none): the one line a user sees."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
