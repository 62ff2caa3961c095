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
