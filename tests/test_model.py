import numpy as np

from conftest import SAMPLE_IMAGES
from resclassify.config import resolve_preprocessing
from resclassify.images import load_image


def _sample_batch():
    preprocessing = resolve_preprocessing()
    return np.stack([load_image(p, preprocessing) for p in sorted(SAMPLE_IMAGES.glob("*.jpg"))])


def test_folded_batch_norms_give_what_keras_gives(weights_file, model):
    import keras
    from keras.applications.resnet50 import preprocess_input

    reference = keras.applications.ResNet50(weights=None)
    reference.load_weights(str(weights_file))
    batch = _sample_batch()
    assert batch.dtype == np.uint8
    expected = reference(preprocess_input(batch.astype(np.float32)), training=False).numpy()
    got = model.predict(batch)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    assert (np.argsort(-got, axis=1)[:, :5] == np.argsort(-expected, axis=1)[:, :5]).all()
    # The folding really happened: no batch norm is left in the network that runs.
    kinds = {type(layer).__name__ for layer in model.keras_model.layers}
    assert "BatchNormalization" not in kinds and "Passthrough" in kinds


def test_eager_small_batch_and_traced_batches_agree(model):
    batch = _sample_batch()
    eager = np.concatenate([model.predict(batch[i:i + 1]) for i in range(len(batch))])
    traced = model.predict(batch, pad_to=8)
    np.testing.assert_allclose(eager, traced, rtol=1e-4, atol=1e-6)
