"""Backends: uint8 batches normalized inside the network function, backend choice, out-of-memory retries."""

import numpy as np
import pytest

from conftest import SAMPLE_IMAGES
from resclassify import backends
from resclassify.config import NORMALIZE_MODES, resolve_preprocessing
from resclassify.images import load_image


@pytest.fixture(scope="module")
def samples():
    preprocessing = resolve_preprocessing()
    return np.stack([load_image(p, preprocessing) for p in sorted(SAMPLE_IMAGES.glob("*.jpg"))])


@pytest.fixture(scope="module")
def reference(weights_file):
    """Keras's own ResNet50 with the same weights, nothing folded: what preprocess_input + model gives."""
    import keras

    network = keras.applications.ResNet50(weights=None)
    network.load_weights(str(weights_file))
    return network


def keras_preprocess(pixels, mode):
    from keras.applications import imagenet_utils

    x = pixels.astype(np.float32)
    return x if mode == "none" else imagenet_utils.preprocess_input(x, mode=mode)


@pytest.mark.parametrize("mode", NORMALIZE_MODES)
def test_uint8_batches_normalized_on_the_device_equal_preprocess_input_then_the_model(model, reference, samples,
                                                                                    mode):
    assert samples.dtype == np.uint8
    expected = reference(keras_preprocess(samples, mode), training=False).numpy()
    got = model.predict(samples, normalization=mode)
    assert got.dtype == np.float32 and got.shape == (len(samples), 1000)
    # Folded batch norms move probabilities by float rounding (most with "none": raw 0..255 inputs).
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert (np.argsort(-got, axis=1)[:, :5] == np.argsort(-expected, axis=1)[:, :5]).all()


@pytest.mark.parametrize("mode", NORMALIZE_MODES)
def test_the_normalization_arithmetic_is_keras_preprocess_input(samples, mode):
    np.testing.assert_allclose(backends.normalize(samples.astype(np.float32), mode), keras_preprocess(samples, mode),
                               rtol=1e-6, atol=1e-5)


def test_a_traced_padded_batch_gives_what_the_eager_one_gives(model, samples):
    eager = model.predict(samples[:2], normalization="tf")
    traced = model.predict(samples, pad_to=8, normalization="tf")
    np.testing.assert_allclose(traced[:2], eager, rtol=1e-4, atol=1e-6)
    assert traced.shape == (len(samples), 1000)
