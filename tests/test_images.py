import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import save_image
from resclassify.config import resolve_preprocessing
from resclassify.errors import ImageError
from resclassify.images import load_image

CENTER = resolve_preprocessing("center-crop")
SQUASH = resolve_preprocessing("squash")


def test_center_crop_is_short_side_256_then_centre_224(tmp_path):
    path = save_image(tmp_path / "land.png", size=(500, 375))
    source = Image.open(path).convert("RGB")
    # 375 -> 256 makes 500 -> int(256 * 500 / 375) = 341; centre 224 starts at round(117 / 2) = 58, round(32 / 2) = 16.
    expected = np.asarray(source.resize((341, 256), Image.Resampling.BICUBIC))[16:240, 58:282]
    np.testing.assert_array_equal(load_image(path, CENTER), expected)


def test_center_crop_of_a_portrait_image(tmp_path):
    path = save_image(tmp_path / "portrait.png", size=(300, 451))
    source = Image.open(path).convert("RGB")
    # 300 -> 256, 451 -> int(256 * 451 / 300) = 384; crop top round(160 / 2) = 80, left 16.
    expected = np.asarray(source.resize((256, 384), Image.Resampling.BICUBIC))[80:304, 16:240]
    np.testing.assert_array_equal(load_image(path, CENTER), expected)


@pytest.mark.slow  # imports Keras
def test_squash_equals_keras_load_img(tmp_path):
    import keras

    path = save_image(tmp_path / "photo.jpg", size=(451, 300), quality=90)
    expected = np.asarray(keras.utils.load_img(str(path), target_size=(224, 224)), dtype=np.uint8)
    np.testing.assert_array_equal(load_image(path, SQUASH), expected)


def test_exif_orientation_is_applied(tmp_path):
    # Stored 400x200 with the left half red; orientation 6 means "rotate 90 degrees clockwise
    # to display", so the photo is 200x400 with the red half on top.
    pixels = np.zeros((200, 400, 3), dtype=np.uint8)
    pixels[:, :200] = (255, 0, 0)
    pixels[:, 200:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    result = load_image(path, SQUASH)
    assert result[20, 112, 0] > 200 and result[20, 112, 2] < 50  # top: red
    assert result[200, 112, 2] > 200 and result[200, 112, 0] < 50  # bottom: blue


@pytest.mark.parametrize("mode", ["L", "1", "CMYK", "P"])
def test_modes_without_alpha_become_rgb(tmp_path, mode):
    suffix = ".jpg" if mode == "CMYK" else ".png"
    path = save_image(tmp_path / f"image{suffix}", mode=mode)
    assert Image.open(path).mode == mode
    result = load_image(path, CENTER)
    assert result.shape == (224, 224, 3) and result.dtype == np.uint8
    expected = np.asarray(Image.open(path).convert("RGB").resize((341, 256), Image.Resampling.BICUBIC))[16:240, 58:282]
    np.testing.assert_array_equal(result, expected)


def _half_transparent(mode):
    rgba = np.zeros((100, 100, 4), dtype=np.uint8)
    rgba[:, :50] = (0, 0, 0, 255)  # left: opaque black
    rgba[:, 50:] = (0, 0, 0, 0)  # right: transparent
    image = Image.fromarray(rgba, "RGBA")
    return image if mode == "RGBA" else image.convert(mode)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_on_white(tmp_path, mode):
    path = tmp_path / "alpha.png"
    _half_transparent(mode).save(path)
    assert Image.open(path).mode == mode
    result = load_image(path, SQUASH)
    assert result[112, 10].tolist() == [0, 0, 0]
    assert result[112, 200].tolist() == [255, 255, 255]


def test_palette_with_transparency_is_composited_on_white(tmp_path):
    image = Image.new("P", (100, 100), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(1, (0, 0, 50, 100))  # left half: palette entry 1, red
    path = tmp_path / "palette.png"
    image.save(path, transparency=0)  # entry 0 (the right half) is transparent
    result = load_image(path, SQUASH)
    assert result[112, 10].tolist() == [255, 0, 0]
    assert result[112, 200].tolist() == [255, 255, 255]


def test_16_bit_greyscale_keeps_its_full_range(tmp_path):
    values = np.zeros((100, 100), dtype=np.uint16)
    values[:, :50] = 65535
    values[:, 50:] = 32896  # 128 * 257
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    result = load_image(path, SQUASH)
    assert result[112, 10].tolist() == [255, 255, 255]
    assert result[112, 200].tolist() == [128, 128, 128]


def test_animated_image_uses_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (64, 64), colour) for colour in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    path = tmp_path / "animated.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(path).n_frames == 3
    result = load_image(path, SQUASH)
    assert (result == [255, 0, 0]).all(axis=-1).all()


def _png_header_only(path, width, height):
    """A PNG whose header claims width x height; enough for Pillow to open, never to decode."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)))
    return path


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = _png_header_only(tmp_path / "huge.png", 20000, 10000)
    with pytest.raises(ImageError) as caught:
        load_image(path, CENTER)
    assert str(caught.value) == (
        f"{path}: image is 20000x10000 = 200,000,000 pixels, over the limit of 178,956,970 (raise it with --max-pixels)"
    )


def test_max_pixels_moves_the_limit(tmp_path):
    path = save_image(tmp_path / "small.png", size=(100, 100))
    with pytest.raises(ImageError, match="10,000 pixels, over the limit of 9,999"):
        load_image(path, CENTER, max_pixels=9999)
    assert load_image(path, CENTER, max_pixels=10000).shape == (224, 224, 3)


@pytest.mark.parametrize("content, reason", [
    (b"", "cannot identify image file"),
    (b"this is not an image\n", "cannot identify image file"),
])
def test_files_that_are_not_images(tmp_path, content, reason):
    path = tmp_path / "fake.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError) as caught:
        load_image(path, CENTER)
    assert str(caught.value) == f"{path}: {reason}"


def test_truncated_jpeg(tmp_path):
    path = save_image(tmp_path / "whole.jpg", quality=90)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(path.read_bytes()[:4000])
    with pytest.raises(ImageError) as caught:
        load_image(truncated, CENTER)
    assert str(caught.value).startswith(f"{truncated}: cannot decode image: image file is truncated")


def test_missing_file(tmp_path):
    with pytest.raises(ImageError) as caught:
        load_image(tmp_path / "absent.jpg", CENTER)
    assert str(caught.value) == f"{tmp_path / 'absent.jpg'}: no such file or directory"


# Views for test-time augmentation, cut here with Pillow from numbers worked out by hand.
# A 300x220 image: the short side 220 -> 256 makes the long side int(256 * 300 / 220) = 349.
LANDSCAPE = (300, 220)
RESIZED = (349, 256)
# Corner crops of 224 in a 349x256 image start at x = 349 - 224 = 125 and y = 256 - 224 = 32; the
# centre crop at x = round(125 / 2) = 62 (Python rounds half to even, as torchvision does) and y = 16.
TEN_CROP_BOXES = [(0, 0, 224, 224), (125, 0, 349, 224), (0, 32, 224, 256), (125, 32, 349, 256), (62, 16, 286, 240)]
MIRROR = Image.Transpose.FLIP_LEFT_RIGHT


def pillow_crops(path, boxes, size=RESIZED, resample=Image.Resampling.BICUBIC):
    resized = Image.open(path).convert("RGB").resize(size, resample)
    return [resized.crop(box) for box in boxes]


def test_ten_crop_is_four_corners_and_centre_then_the_mirror_image_of_each(tmp_path):
    path = save_image(tmp_path / "land.png", size=LANDSCAPE)
    preprocessing = resolve_preprocessing("center-crop", tta="ten-crop")
    crops = pillow_crops(path, TEN_CROP_BOXES)
    expected = np.stack([np.asarray(c) for c in crops] + [np.asarray(c.transpose(MIRROR)) for c in crops])
    views = load_image(path, preprocessing)
    assert views.shape == preprocessing.array_shape == (10, 224, 224, 3)
    assert views.dtype == np.uint8
    np.testing.assert_array_equal(views, expected)
    # The fifth view is the single centre crop that --tta none gives.
    np.testing.assert_array_equal(views[4], load_image(path, CENTER))


def test_ten_crop_of_a_portrait_image(tmp_path):
    # 200x330: 200 -> 256, 330 -> int(256 * 330 / 200) = 422; corners at y = 422 - 224 = 198, x = 32;
    # centre at x = 16, y = round(198 / 2) = 99.
    path = save_image(tmp_path / "portrait.png", size=(200, 330))
    boxes = [(0, 0, 224, 224), (32, 0, 256, 224), (0, 198, 224, 422), (32, 198, 256, 422), (16, 99, 240, 323)]
    crops = pillow_crops(path, boxes, size=(256, 422))
    expected = np.stack([np.asarray(c) for c in crops] + [np.asarray(c.transpose(MIRROR)) for c in crops])
    np.testing.assert_array_equal(load_image(path, resolve_preprocessing(tta="ten-crop")), expected)


def test_flip_is_the_centre_crop_and_its_mirror_image(tmp_path):
    path = save_image(tmp_path / "land.jpg", size=LANDSCAPE, quality=90)
    [centre] = pillow_crops(path, TEN_CROP_BOXES[4:])
    views = load_image(path, resolve_preprocessing(tta="flip"))
    assert views.shape == (2, 224, 224, 3)
    np.testing.assert_array_equal(views[0], np.asarray(centre))
    np.testing.assert_array_equal(views[1], np.asarray(centre)[:, ::-1])


def test_squash_with_flip_is_the_whole_image_and_its_mirror_image(tmp_path):
    path = save_image(tmp_path / "land.png", size=LANDSCAPE)
    squashed = Image.open(path).convert("RGB").resize((224, 224), Image.Resampling.NEAREST)
    views = load_image(path, resolve_preprocessing("squash", tta="flip"))
    np.testing.assert_array_equal(views, np.stack([np.asarray(squashed), np.asarray(squashed.transpose(MIRROR))]))


@pytest.mark.parametrize("name", ["nearest", "bilinear", "bicubic", "lanczos", "box"])
def test_each_interpolation_is_pillows_filter(tmp_path, name):
    path = save_image(tmp_path / "land.png", size=LANDSCAPE)
    # Crop fraction 1: the short side goes to 224 itself, the long side to int(224 * 300 / 220) = 305;
    # the centre crop starts at x = round(81 / 2) = 40 (half to even), y = 0.
    filters = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
               "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS, "box": Image.Resampling.BOX}
    [expected] = pillow_crops(path, [(40, 0, 264, 224)], size=(305, 224), resample=filters[name])
    preprocessing = resolve_preprocessing(crop_fraction=1.0, interpolation=name)
    np.testing.assert_array_equal(load_image(path, preprocessing), np.asarray(expected))


def test_a_larger_network_input_crops_more(tmp_path):
    # --size 288: short side int(288 / 0.875) = 329; 300x220 -> (int(329 * 300 / 220), 329) = (448, 329);
    # centre at x = round(160 / 2) = 80, y = round(41 / 2) = 20 (half to even).
    path = save_image(tmp_path / "land.png", size=LANDSCAPE)
    [expected] = pillow_crops(path, [(80, 20, 368, 308)], size=(448, 329))
    preprocessing = resolve_preprocessing(size=288)
    assert preprocessing.resize_short == 329
    np.testing.assert_array_equal(load_image(path, preprocessing), np.asarray(expected))


# --- Bounded work per image, whatever its shape -------------------------------------------------

def _whole_resize_then_crop(path, short=256, size=224):
    """Today's centre crop the long way: the whole image resized, then cropped."""
    source = Image.open(path).convert("RGB")
    width, height = source.size
    new = (short, int(short * height / width)) if width <= height else (int(short * width / height), short)
    left, top = int(round((new[0] - size) / 2.0)), int(round((new[1] - size) / 2.0))
    return np.asarray(source.resize(new, Image.Resampling.BICUBIC))[top:top + size, left:left + size]


@pytest.mark.parametrize("size", [(64, 1024), (1024, 64), (97, 1400), (1400, 97)])
def test_up_to_16_to_1_the_crop_is_the_whole_resize_pixel_for_pixel(tmp_path, size):
    path = save_image(tmp_path / "long.png", size=size)
    np.testing.assert_array_equal(load_image(path, CENTER), _whole_resize_then_crop(path))


@pytest.mark.parametrize("size", [(64, 1088), (1088, 64), (30, 1000), (1000, 30)])
def test_beyond_16_to_1_only_the_crop_is_resized_with_the_same_sampling(tmp_path, size):
    # Pillow orders the two passes of a box resize itself, so the rounding between them may
    # differ: within 2/255 here, and on average a quarter of a level at most.
    path = save_image(tmp_path / "longer.png", size=size)
    difference = np.abs(load_image(path, CENTER).astype(int) - _whole_resize_then_crop(path))
    assert difference.max() <= 2 and difference.mean() < 0.3


def _strip(path, size, centre_colour, edge_colour=(0, 0, 255)):
    """A one-pixel strip, edge_colour except for the 11 pixels in the middle."""
    long_side = max(size)
    pixels = np.tile(np.uint8(edge_colour), (long_side, 1))
    pixels[long_side // 2 - 5: long_side // 2 + 6] = centre_colour
    array = pixels[None] if size[0] > size[1] else pixels[:, None]
    Image.fromarray(array).save(path)
    return path


EXTREME_STRIPS = """
import re, resource, sys
import numpy as np
from resclassify.config import resolve_preprocessing
from resclassify.images import load_image
# Address space: what the interpreter has now, plus 600 MB. Resizing a 100000x1 strip whole to a
# short side of 256 would need 25,600,000 x 256 pixels (26 GB).
used = int(re.search(r"VmSize:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
resource.setrlimit(resource.RLIMIT_AS, (used + 600 * 2**20, resource.RLIM_INFINITY))
for path in sys.argv[1:]:
    pixels = load_image(path, resolve_preprocessing(size=32 if path.endswith(".jpg") else 224))
    print(path, pixels.shape, np.unique(pixels.reshape(-1, 3), axis=0).tolist())
"""


@pytest.mark.slow  # a child process under a memory limit (1.4 s)
def test_extreme_aspect_ratios_take_bounded_memory_and_give_the_centre(tmp_path):
    import subprocess
    import sys

    wide = _strip(tmp_path / "wide.png", (100000, 1), (255, 0, 0))
    tall = _strip(tmp_path / "tall.png", (1, 100000), (0, 255, 0))
    # The reduced-scale JPEG path too: at a 32x32 crop, a 3000x150 JPEG is decoded at half scale
    # (1500x75), still 20:1.
    jpeg = tmp_path / "wide.jpg"
    banner = np.zeros((150, 3000, 3), dtype=np.uint8)
    banner[:, 1400:1600] = (255, 255, 255)
    Image.fromarray(banner).save(jpeg, quality=95)
    result = subprocess.run([sys.executable, "-c", EXTREME_STRIPS, str(wide), str(tall), str(jpeg)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # The crop is the strip's centre, stretched: every pixel the centre's colour.
    assert lines[0] == f"{wide} (224, 224, 3) [[255, 0, 0]]"
    assert lines[1] == f"{tall} (224, 224, 3) [[0, 255, 0]]"
    assert lines[2].startswith(f"{jpeg} (32, 32, 3) ")
    colours = np.array(eval(lines[2].split(") ", 1)[1]))
    assert colours.min() >= 245  # the white middle, give or take JPEG's rounding


def test_the_reduced_scale_decode_keeps_an_extreme_jpeg_in_proportion(tmp_path):
    jpeg = tmp_path / "wide.jpg"
    Image.new("RGB", (3000, 150), (200, 30, 30)).save(jpeg, quality=95)
    decoded = []
    original = Image.Image.resize

    def recording_resize(image, size, *args, **kwargs):
        decoded.append((image.size, tuple(size)))
        return original(image, size, *args, **kwargs)

    try:
        Image.Image.resize = recording_resize
        pixels = load_image(jpeg, resolve_preprocessing(size=32))
    finally:
        Image.Image.resize = original
    # Decoded at half scale, then one resize straight to the crop (not to 720x36, then cropped).
    assert decoded == [((1500, 75), (32, 32))]
    assert pixels.shape == (32, 32, 3)


# --- Only regular files; never blocked by what is not one ---------------------------------------

def _load_without_hanging(path):
    """load_image on another thread, given 20 s: a FIFO opened for reading would block for ever."""
    import threading

    outcome = {}

    def run():
        try:
            outcome["pixels"] = load_image(path, CENTER)
        except ImageError as exc:
            outcome["error"] = str(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive(), f"load_image({path}) is still blocked"
    return outcome


def test_a_fifo_is_refused_from_its_stat_without_being_opened(tmp_path, monkeypatch):
    import os

    import resclassify.images as images

    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    opened = []
    real_open = os.open
    monkeypatch.setattr(images.os, "open", lambda path, *args: opened.append(str(path)) or real_open(path, *args))
    assert _load_without_hanging(fifo) == {"error": f"{fifo}: not a regular file: a FIFO (named pipe)"}
    assert opened == []
    # Nobody holds it open for reading: a writer that will not wait is turned away.
    with pytest.raises(OSError) as caught:
        os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    assert caught.value.errno == 6  # ENXIO: no reader


def test_devices_and_sockets_are_not_images(tmp_path):
    import socket

    assert _load_without_hanging("/dev/zero") == {"error": "/dev/zero: not a regular file: a character device"}
    path = tmp_path / "socket.png"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    try:
        assert _load_without_hanging(path) == {"error": f"{path}: not a regular file: a socket"}
    finally:
        server.close()


def test_symbolic_link_loops_and_broken_links_say_so(tmp_path):
    loop = tmp_path / "loop.jpg"
    loop.symlink_to("loop.jpg")
    broken = tmp_path / "broken.jpg"
    broken.symlink_to("gone.jpg")
    assert _load_without_hanging(loop) == {"error": f"{loop}: symbolic link loop"}
    assert _load_without_hanging(broken) == {"error": f"{broken}: broken symbolic link (its target does not exist)"}
    assert _load_without_hanging(tmp_path) == {"error": f"{tmp_path}: is a directory"}


# --- Pillow's decompression-bomb check stays on for everyone else -------------------------------

PILLOW_DEFAULT_LIMIT = int(1024 * 1024 * 1024 // 4 // 3)  # Pillow's MAX_IMAGE_PIXELS


def test_importing_resclassify_leaves_pillows_bomb_check_on():
    import subprocess
    import sys

    code = ("from PIL import Image\n"
            "before = Image.MAX_IMAGE_PIXELS\n"
            "import resclassify, resclassify.images, resclassify.pipeline, resclassify.cli\n"
            "print(before, Image.MAX_IMAGE_PIXELS)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split() == [str(PILLOW_DEFAULT_LIMIT)] * 2, result.stderr


def test_other_code_keeps_pillows_refusal_while_max_pixels_lifts_ours(tmp_path):
    bomb = _png_header_only(tmp_path / "bomb.png", 20000, 10000)  # 200 megapixels, header only
    with pytest.raises(ImageError, match="over the limit of 178,956,970"):
        load_image(bomb, CENTER)
    # Raised past Pillow's limit, --max-pixels lets the header through to decoding (which then
    # finds no pixel data), and Pillow's own limit is back in place afterwards.
    with pytest.raises(ImageError) as caught:
        load_image(bomb, CENTER, max_pixels=300_000_000)
    assert "over the limit" not in str(caught.value) and "cannot decode image" in str(caught.value)
    assert Image.MAX_IMAGE_PIXELS == PILLOW_DEFAULT_LIMIT
    with pytest.raises(Image.DecompressionBombError):
        Image.open(bomb)


def test_an_image_over_pillows_limit_decodes_when_max_pixels_allows_it(tmp_path, monkeypatch):
    # Pillow's limit made small, so that a small image is "over" it (twice 60,000 pixels; still
    # over the 224x224 crop, which Pillow checks too).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 60_000)
    path = save_image(tmp_path / "photo.png", size=(400, 400))
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)
    assert load_image(path, CENTER, max_pixels=10**6).shape == (224, 224, 3)
    with pytest.raises(ImageError, match=r"image is 400x400 = 160,000 pixels, over the limit of 100,000"):
        load_image(path, CENTER, max_pixels=100_000)
    assert Image.MAX_IMAGE_PIXELS == 60_000


def test_ten_crop_of_an_extreme_strip_resizes_each_crop_box_only(tmp_path):
    # 3000x10: resized whole it would be 76800x256; each of the five crops is made from its own box.
    pixels = np.full((10, 3000, 3), 128, dtype=np.uint8)
    pixels[:, :100] = (255, 0, 0)
    pixels[:, 1450:1550] = (0, 255, 0)
    pixels[:, -100:] = (0, 0, 255)
    path = tmp_path / "strip.png"
    Image.fromarray(pixels).save(path)
    views = load_image(path, resolve_preprocessing(tta="ten-crop"))
    assert views.shape == (10, 224, 224, 3)
    colours = [np.unique(view.reshape(-1, 3), axis=0).tolist() for view in views]
    red, green, blue = [[255, 0, 0]], [[0, 255, 0]], [[0, 0, 255]]
    # Top-left, top-right, bottom-left, bottom-right, centre; then their mirror images.
    assert colours == [red, blue, red, blue, green] * 2
