"""Image files to network-ready uint8 arrays: open, orient, convert to 8-bit RGB, resize, crop."""

import math
import os

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)

# Pillow refuses images over twice its MAX_IMAGE_PIXELS (about 179 megapixels) with a
# DecompressionBombError. We keep that default limit but apply it ourselves, before decoding,
# so that the message is ours and --max-pixels can move it either way.
DEFAULT_MAX_PIXELS = 2 * (Image.MAX_IMAGE_PIXELS or 89_478_485)
Image.MAX_IMAGE_PIXELS = None

# A JPEG much larger than needed is decoded at a reduced DCT scale, keeping at least this many
# source pixels per pixel of the resized short side so the bicubic resize still has real detail.
DRAFT_OVERSAMPLE = 2

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "nearest": Image.Resampling.NEAREST,
             "bilinear": Image.Resampling.BILINEAR}


def load_image(path, preprocessing, max_pixels=DEFAULT_MAX_PIXELS):
    """Read one file into a uint8 array of shape (size, size, 3); raise ImageError if it cannot be."""
    try:
        with Image.open(path) as img:
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
    except FileNotFoundError:
        raise ImageError(path, "no such file or directory") from None
    except IsADirectoryError:
        raise ImageError(path, "is a directory") from None
    except PermissionError:
        raise ImageError(path, "permission denied") from None
    except UnidentifiedImageError:
        raise ImageError(path, "cannot identify image file") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        # Pillow reports truncated and corrupt data as OSError (and, for a few formats,
        # SyntaxError or ValueError); its text names the problem well enough.
        raise ImageError(path, f"cannot decode image: {exc}") from None
    return np.asarray(resize(rgb, preprocessing), dtype=np.uint8)


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


def resize(img, preprocessing):
    """Resize (and for center-crop, crop) an RGB image to size x size."""
    size = preprocessing.size
    resample = _RESAMPLE[preprocessing.interpolation]
    if preprocessing.name == "squash":
        return img if img.size == (size, size) else img.resize((size, size), resample)
    width, height = img.size
    short = preprocessing.resize_short
    # torchvision's Resize(int): the short side becomes `short`, the long side is truncated.
    if width <= height:
        new_size = (short, int(short * height / width))
    else:
        new_size = (int(short * width / height), short)
    if new_size != img.size:
        img = img.resize(new_size, resample)
    left = int(round((new_size[0] - size) / 2.0))
    top = int(round((new_size[1] - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def thumbnail_jpeg(path, max_side, max_pixels=DEFAULT_MAX_PIXELS, quality=80):
    """A small JPEG of an image file (for the HTML report): (bytes, width, height), long side at most max_side.

    Turned as its EXIF orientation says and made 8-bit RGB, as the network's input is.
    Raises ImageError when the file cannot be read, e.g. when it has gone since it was classified.
    """
    import io
    import stat

    try:
        # A FIFO or device that took the place of an image would block or never end.
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ImageError(path, "not a regular file")
        with Image.open(path) as img:
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
