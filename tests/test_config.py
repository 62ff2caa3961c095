import pytest

from resclassify.config import Preprocessing, resolve_preprocessing
from resclassify.errors import PreprocessingError


def test_defaults_are_the_standard_single_crop():
    preprocessing = resolve_preprocessing()
    assert preprocessing == Preprocessing("center-crop", 224, 0.875, "bicubic", "caffe", False, "none")
    assert preprocessing.resize_short == 256
    assert preprocessing.views == 1 and preprocessing.array_shape == (224, 224, 3)
    assert preprocessing.describe() == "center-crop (short side 256, centre 224x224, bicubic), caffe normalization"
    assert resolve_preprocessing("squash").interpolation == "nearest"


def test_every_choice_is_named_in_the_description_and_the_dict():
    ten = resolve_preprocessing(size=288, crop_fraction=0.95, interpolation="bilinear", tta="ten-crop", mode="tf")
    assert ten.resize_short == 303  # int(288 / 0.95) = int(303.16)
    assert ten.views == 10 and ten.array_shape == (10, 288, 288, 3)
    assert ten.describe() == (
        "center-crop (short side 303, four corner and centre 288x288 crops, bilinear), "
        "tta ten-crop (and the mirror image of each: 10 views, probabilities averaged), tf normalization")
    assert ten.as_dict() == {"name": "center-crop", "size": 288, "crop_fraction": 0.95, "interpolation": "bilinear",
                             "mode": "tf", "exact_decode": False, "tta": "ten-crop"}
    flip = resolve_preprocessing("squash", tta="flip", interpolation="lanczos")
    assert flip.array_shape == (2, 224, 224, 3)
    assert flip.describe() == ("squash (resized to 224x224, no crop, lanczos), tta flip (and its mirror image: "
                               "2 views, probabilities averaged), caffe normalization")
    assert flip.as_dict() == {"name": "squash", "size": 224, "interpolation": "lanczos", "mode": "caffe",
                              "exact_decode": False, "tta": "flip"}


@pytest.mark.parametrize("options, option, message", [
    ({"size": 0}, "--size", "the network input size must be a positive whole number of pixels, not 0"),
    ({"size": -224}, "--size", "the network input size must be a positive whole number of pixels, not -224"),
    ({"size": 22.5}, "--size", "the network input size must be a positive whole number of pixels, not 22.5"),
    ({"crop_fraction": 1.2}, "--crop-fraction",
     "crop fraction 1.2 makes the 224x224 crop larger than the image: the short side is resized to "
     "224 / 1.2 = 186 pixels (the crop fraction is at most 1)"),
    ({"crop_fraction": 1.001}, "--crop-fraction",
     "crop fraction 1.001 makes the 224x224 crop larger than the image: the short side is resized to "
     "224 / 1.001 = 223 pixels (the crop fraction is at most 1)"),
    ({"crop_fraction": 0.0}, "--crop-fraction", "the crop fraction must be a number from 0.05 to 1, not 0.0"),
    ({"crop_fraction": -0.5}, "--crop-fraction", "the crop fraction must be a number from 0.05 to 1, not -0.5"),
    ({"crop_fraction": float("nan")}, "--crop-fraction", "the crop fraction must be a number from 0.05 to 1, not nan"),
    ({"crop_fraction": 0.01}, "--crop-fraction",
     "crop fraction 0.01 would resize the short side to about 22400 pixels to crop 224 of them; use at least 0.05"),
    ({"name": "squash", "tta": "ten-crop"}, "--tta",
     "ten-crop cuts corner crops from the resized image; it goes with --preprocess center-crop, not squash "
     "(which keeps the whole image: use --tta flip)"),
    ({"name": "squash", "crop_fraction": 0.9}, "--crop-fraction",
     "a crop fraction is for --preprocess center-crop; squash resizes the whole image and crops nothing"),
    ({"interpolation": "cubic"}, "--interpolation",
     "unknown interpolation 'cubic'; choose from nearest, bilinear, bicubic, lanczos, box"),
    ({"tta": "five-crop"}, "--tta", "unknown test-time augmentation 'five-crop'; choose from none, flip, ten-crop"),
    ({"name": "stretch"}, "--preprocess", "unknown preprocessing 'stretch'; choose from center-crop, squash"),
])
def test_options_that_cannot_work_are_refused_with_the_reason(options, option, message):
    with pytest.raises(PreprocessingError) as caught:
        resolve_preprocessing(**options)
    assert str(caught.value) == message
    assert caught.value.option == option


def test_a_crop_fraction_of_1_crops_the_whole_short_side():
    assert resolve_preprocessing(size=256, crop_fraction=1).resize_short == 256


def test_a_recipe_reads_back_from_its_dict():
    for preprocessing in (resolve_preprocessing(size=256, tta="ten-crop", interpolation="box"),
                          resolve_preprocessing("squash", tta="flip")):
        fields = {**preprocessing.as_dict(), "description": preprocessing.describe()}
        assert Preprocessing.from_dict(fields) == preprocessing


def test_the_object_itself_refuses_what_cannot_work():
    with pytest.raises(PreprocessingError):
        Preprocessing(size=224, crop_fraction=2.0)
