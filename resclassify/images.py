"""Image files to network-ready uint8 arrays: open, orient, convert to 8-bit RGB, resize, crop (views)."""

import contextlib
import errno
import io
import math
import os
import stat
import threading
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from .config import INTERPOLATION_CHOICES
from .errors import ImageError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)

# Pillow refuses images over twice its MAX_IMAGE_PIXELS (about 179 megapixels) with a
# DecompressionBombError. We keep that default limit but apply it ourselves, before decoding,
# so that the message is ours and --max-pixels can move it either way. Pillow's own check stays
# on for the rest of the process: only our own opens lift it, and only for an image over it
# (see _open_image).
DEFAULT_MAX_PIXELS = 2 * (Image.MAX_IMAGE_PIXELS or 89_478_485)
_PILLOW_LIMIT_LOCK = threading.Lock()

# Up to this aspect ratio the resize makes the whole resized image, then cuts the crops from it
# (an intermediate of at most 256 x 4096 pixels, 4 MB); beyond it, only the parts of the image
# that become crops are resized, so a 100000x1 strip costs no more than a photo.
MAX_WHOLE_RESIZE_RATIO = 16

# A JPEG much larger than needed is decoded at a reduced DCT scale, keeping at least this many
# source pixels per pixel of the resized short side so the bicubic resize still has real detail.
DRAFT_OVERSAMPLE = 2

# Pillow's filter for each of config's interpolation names (the names are Pillow's own).
_RESAMPLE = {name: Image.Resampling[name.upper()] for name in INTERPOLATION_CHOICES}


@dataclass(frozen=True)
class ImageBytes:
    """An image's bytes already read from where they live (an object in a bucket, a tar member), and its name."""

    path: str
    data: bytes


def load_image(path, preprocessing, max_pixels=DEFAULT_MAX_PIXELS, data=None):
    """Read one file into a uint8 array of shape preprocessing.array_shape; raise ImageError if it cannot be.

    That is (size, size, 3) for one view, or (views, size, size, 3) with test-time augmentation.
    Only regular files are read: a FIFO, a device or a socket is refused from its stat, never
    opened (a FIFO without a writer would block for ever). data, if given, is the image's bytes
    already fetched (an object in a bucket, a tar member): path then only names it.
    """
    try:
        source = io.BytesIO(data) if data is not None else _open_regular_file(path)
        with source as file, _open_image(file) as img:
            width, height = img.size
            if max_pixels and width * height > max_pixels:
                raise ImageError(
                    path,
                    f"image is {width}x{height} = {width * height:,} pixels, over the limit of "
                    f"{max_pixels:,} (raise it with --max-pixels)",
                )
            if img.format == "JPEG" and preprocessing.name == "center-crop" and not preprocessing.exact_decode:
                _draft(img, preprocessing.resize_short * DRAFT_OVERSAMPLE)
            img.load()
            rgb = to_rgb(img)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(path, "cannot identify image file") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        # Pillow reports truncated and corrupt data as OSError (and, for a few formats,
        # SyntaxError or ValueError); its text names the problem well enough.
        raise ImageError(path, f"cannot decode image: {exc}") from None
    return cut_views(rgb, preprocessing)


def file_error_reason(exc, path):
    """The few words an error line gives for an OSError met while finding or opening path."""
    if exc.errno == errno.ENOENT:
        return "broken symbolic link (its target does not exist)" if os.path.islink(path) else \
            "no such file or directory"
    reasons = {
        errno.ELOOP: "symbolic link loop",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.ENOTDIR: "no such file or directory (part of the path is not a folder)",
        errno.ENAMETOOLONG: "file name too long",
        errno.EISDIR: "is a directory",
    }
    return reasons.get(exc.errno) or f"cannot open: {exc.strerror or exc}"


def not_regular_reason(mode):
    """Why a stat's mode is not an image file: a folder, or which kind of special file."""
    if stat.S_ISDIR(mode):
        return "is a directory"
    kinds = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    kind = next((name for test, name in kinds if test(mode)), "a special file")
    return f"not a regular file: {kind}"


def _open_regular_file(path):
    # stat first: a FIFO or a device is never opened. The open that follows cannot block either
    # (O_NONBLOCK), should a FIFO have taken the file's place since; fstat checks what was opened.
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise ImageError(path, not_regular_reason(mode))
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ImageError(path, file_error_reason(exc, path)) from None
    file = os.fdopen(fd, "rb")
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        file.close()
        raise ImageError(path, not_regular_reason(mode))
    return file


def _open_image(file):
    """Image.open with Pillow's bomb check as it is; an image over it is opened again with the check
    lifted for that one open, so that load_image can apply --max-pixels (either way) itself."""
    try:
        return Image.open(file)
    except Image.DecompressionBombError:
        file.seek(0)
        with _pillow_limit_lifted():
            return Image.open(file)


@contextlib.contextmanager
def _pillow_limit_lifted():
    # Only reading the header happens in here (microseconds); the lock keeps two of our loader
    # threads from restoring each other's value.
    with _PILLOW_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved



def _draft(img, min_short_side):
    width, height = img.size
    scale = min_short_side / min(width, height)
    if scale < 0.5:
        img.draft(None, (math.ceil(width * scale), math.ceil(height * scale)))


def to_rgb(img):
    """Any Pillow image as 8-bit RGB: EXIF orientation applied, first frame, alpha over white."""
    if img.getexif().get(ExifTags.Base.Orientation, 1) != 1:
        # Only then: exif_transpose copies even an image that needs no turning.
        img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        mode = "RGBA" if "transparency" in img.info else "RGB"
        img = img.convert(mode)
    if mode in ("LA", "PA", "La", "RGBa", "RGBA"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        return _high_depth_to_rgb(img)
    return img.convert("RGB")


def _high_depth_to_rgb(img):
    # Pillow's own convert() clips 16-bit values at 255; scale the full range down instead.
    values = np.asarray(img).astype(np.float64)
    if img.mode != "F":
        values = values * (255.0 / 65535.0)
    grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def resized_size(width, height, preprocessing):
    """(width, height) of the image after the resize, before any crop."""
    size = preprocessing.size
    if preprocessing.name == "squash":
        return size, size
    short = preprocessing.resize_short
    # torchvision's Resize(int): the short side becomes `short`, the long side is truncated.
    if width <= height:
        return short, int(short * height / width)
    return int(short * width / height), short


def crop_boxes(width, height, preprocessing):
    """The (left, top, right, bottom) boxes cut from the resized image (width x height), one per distinct crop.

    The centre crop alone, or for ten-crop torchvision's FiveCrop order: top-left, top-right,
    bottom-left, bottom-right, centre. Mirror images are made from these afterwards.
    """
    size = preprocessing.size
    left = int(round((width - size) / 2.0))
    top = int(round((height - size) / 2.0))
    centre = (left, top, left + size, top + size)
    if preprocessing.tta != "ten-crop":
        return [centre]
    right, bottom = width - size, height - size
    return [(0, 0, size, size), (right, 0, width, size), (0, bottom, size, height), (right, bottom, width, height),
            centre]


def resize(img, preprocessing):
    """Resize an RGB image for preprocessing: short side to resize_short (center-crop) or size x size (squash)."""
    new_size = resized_size(*img.size, preprocessing)
    return img if new_size == img.size else img.resize(new_size, _RESAMPLE[preprocessing.interpolation])


def cut_views(img, preprocessing):
    """An RGB image as the network's uint8 input: its crop(s) and their mirror images, shaped array_shape."""
    width, height = resized_size(*img.size, preprocessing)
    boxes = crop_boxes(width, height, preprocessing)
    if max(width, height) > MAX_WHOLE_RESIZE_RATIO * min(width, height):
        crops = [_resize_box(img, (width, height), box, preprocessing) for box in boxes]
    else:
        pixels = np.asarray(resize(img, preprocessing), dtype=np.uint8)
        crops = [pixels[top:bottom, left:right] for left, top, right, bottom in boxes]
    if preprocessing.tta == "none":
        return np.ascontiguousarray(crops[0])
    views = np.empty(preprocessing.array_shape, dtype=np.uint8)
    views[:len(crops)] = crops
    # The mirror image of each crop, in the same order: left and right swapped.
    views[len(crops):] = views[:len(crops), :, ::-1]
    return views


def _resize_box(img, resized, box, preprocessing):
    """One crop of the resized image, made by resizing only the source box that maps onto it.

    The same sampling positions as resizing the whole image (without making it: 25,600,000x256
    for a 100000x1 strip). Pillow chooses its own order of the two passes for a box, so pixels
    may differ from a whole resize by the rounding between passes; up to MAX_WHOLE_RESIZE_RATIO
    the whole resize is used, and pixels are exactly what they always were.
    """
    x_scale, y_scale = img.width / resized[0], img.height / resized[1]
    left, top, right, bottom = box
    source = (left * x_scale, top * y_scale, right * x_scale, bottom * y_scale)
    return np.asarray(img.resize((right - left, bottom - top), _RESAMPLE[preprocessing.interpolation], box=source),
                      dtype=np.uint8)


def thumbnail_jpeg(path, max_side, max_pixels=DEFAULT_MAX_PIXELS, quality=80, data=None):
    """A small JPEG of an image file (for the HTML report): (bytes, width, height), long side at most max_side.
    data, if given, is the image's bytes (read from a bucket): path then only names it.

    Turned as its EXIF orientation says and made 8-bit RGB, as the network's input is.
    Raises ImageError when the file cannot be read, e.g. when it has gone since it was classified.
    """
    import io

    try:
        # A FIFO or device that took the place of an image would block or never end.
        source = io.BytesIO(data) if data is not None else _open_regular_file(path)
        with source as file, _open_image(file) as img:
            width, height = img.size
            if max_pixels and width * height > max_pixels:
                raise ImageError(path, f"image is {width}x{height} pixels, over the limit of {max_pixels:,}")
            if img.format == "JPEG":
                # Decode at the smallest DCT scale that still gives twice the pixels needed.
                img.draft("RGB", (2 * max_side, 2 * max_side))
            img.load()
            small = to_rgb(img)
            small.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
            buffer = io.BytesIO()
            small.save(buffer, format="JPEG", quality=quality, optimize=True)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(path, "no such file or directory") from None
    except UnidentifiedImageError:
        raise ImageError(path, "cannot identify image file") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageError(path, f"cannot decode image: {exc}") from None
    return buffer.getvalue(), small.width, small.height
