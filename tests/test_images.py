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
