import numpy as np
import pytest

from conftest import save_image
from resclassify.config import resolve_preprocessing
from resclassify.errors import InputError
from resclassify.pipeline import score


class RecordingClassifier:
    """Stands in for the network: each image's 'probabilities' are its mean pixel, per class."""

    def __init__(self):
        self.calls = []
        self.normalizations = []

    def predict(self, batch, pad_to=None, normalization=None):
        assert batch.dtype == np.uint8  # the network normalizes on its device
        self.calls.append((batch.shape, pad_to))
        self.normalizations.append(normalization)
        return np.repeat(batch.mean(axis=(1, 2, 3))[:, None], 3, axis=1)


@pytest.mark.parametrize("decoding", ["threads", "processes"])
def test_results_come_in_input_order_with_errors_in_place_and_fixed_batch_shapes(tmp_path, decoding):
    paths = [str(save_image(tmp_path / f"{i}.png", size=(40 + i, 30), seed=i)) for i in range(7)]
    items = paths[:2] + [InputError("gone.jpg", "no such file or directory")] + paths[2:5] + \
        [str(tmp_path / "missing.png")] + paths[5:]
    classifier = RecordingClassifier()
    results = list(score(items, classifier, resolve_preprocessing(), batch_size=3, workers=2, decoding=decoding))
    assert [r.path for r in results] == [str(item.path if isinstance(item, InputError) else item) for item in items]
    assert [r.error is not None for r in results] == [False, False, True, False, False, False, True, False, False]
    assert results[6].error.reason == "no such file or directory"
    # 7 good images in batches of 3: the last batch of 1 is padded, so every call has one shape.
    assert [pad for _, pad in classifier.calls] == [3, 3, 3]
    assert [shape[0] for shape, _ in classifier.calls] == [3, 3, 1]


def test_a_run_smaller_than_a_batch_is_not_padded(tmp_path):
    paths = [str(save_image(tmp_path / f"{i}.png", seed=i)) for i in range(2)]
    classifier = RecordingClassifier()
    list(score(paths, classifier, resolve_preprocessing(mode="torch"), batch_size=32))
    assert classifier.calls == [((2, 224, 224, 3), 2)]
    assert classifier.normalizations == ["torch"]


class KeepingClassifier(RecordingClassifier):
    """Also keeps a copy of every batch it is handed."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def predict(self, batch, pad_to=None, normalization=None):
        self.batches.append(batch.copy())
        return super().predict(batch, pad_to, normalization)


@pytest.fixture(scope="module")
def two_worker_processes():
    from resclassify.decoding import DecodePlan, open_decoder

    with open_decoder(DecodePlan("processes", 2)) as decoder:
        yield decoder


@pytest.mark.parametrize("mode", ["caffe", "tf", "torch", "none"])
@pytest.mark.parametrize("decoding", ["threads", "processes"])
def test_the_network_gets_uint8_crops_as_decoded_and_the_normalization_to_apply(tmp_path, mode, decoding,
                                                                                 two_worker_processes):
    from resclassify.images import load_image

    # Five batches: the batch arrays are used over again, and must not mix images up.
    paths = [str(save_image(tmp_path / f"{i}.jpg", size=(60 + 9 * i, 50), seed=i, quality=90)) for i in range(9)]
    preprocessing = resolve_preprocessing(size=32, mode=mode)
    classifier = KeepingClassifier()
    results = list(score(paths, classifier, preprocessing, batch_size=2,
                         decoding=two_worker_processes if decoding == "processes" else "threads"))
    assert [r.path for r in results] == paths
    assert classifier.normalizations == [mode] * 5
    handed = np.concatenate(classifier.batches)
    assert handed.dtype == np.uint8
    assert np.array_equal(handed, np.stack([load_image(p, preprocessing) for p in paths]))


def test_views_share_the_batch_stream_and_are_averaged_back_per_image(tmp_path):
    paths = [str(save_image(tmp_path / f"{i}.png", size=(60 + 7 * i, 45), seed=i)) for i in range(5)]
    items = paths[:2] + [str(tmp_path / "missing.png")] + paths[2:]
    classifier = RecordingClassifier()
    preprocessing = resolve_preprocessing(tta="ten-crop")
    # 25 network inputs per call hold two images' ten views each (views never split across calls):
    # five good images in calls of 2, 2 and 1 images, the last padded to the same 20 rows.
    results = list(score(items, classifier, preprocessing, batch_size=25, workers=2))
    assert [shape for shape, _ in classifier.calls] == [(20, 224, 224, 3), (20, 224, 224, 3), (10, 224, 224, 3)]
    assert [pad for _, pad in classifier.calls] == [20, 20, 20]
    assert [r.path for r in results] == items
    assert results[2].error is not None and results[2].probabilities is None
    from resclassify.images import load_image

    for r in results[:2] + results[3:]:
        # Each image's row is the mean over its own ten views of what the network gave each view.
        views = load_image(r.path, preprocessing)
        expected = views.mean(axis=(1, 2, 3)).mean()
        assert r.probabilities.shape == (3,)
        np.testing.assert_allclose(r.probabilities, expected, rtol=1e-5)


def test_a_batch_smaller_than_one_images_views_still_holds_them_all(tmp_path):
    paths = [str(save_image(tmp_path / f"{i}.png", seed=i)) for i in range(3)]
    classifier = RecordingClassifier()
    list(score(paths, classifier, resolve_preprocessing(tta="flip"), batch_size=1))
    assert classifier.calls == [((2, 224, 224, 3), 2)] * 3


@pytest.mark.parametrize("decoding", ["threads", "processes"])
def test_views_travel_through_the_decoders_slots_whole(tmp_path, decoding, two_worker_processes):
    from resclassify.images import load_image

    # The decoders' slots take preprocessing.array_shape: (10, 32, 32, 3) per image here.
    paths = [str(save_image(tmp_path / f"{i}.jpg", size=(70 + 9 * i, 50), seed=i, quality=90)) for i in range(3)]
    preprocessing = resolve_preprocessing(size=32, tta="ten-crop")
    classifier = KeepingClassifier()
    results = list(score(paths, classifier, preprocessing, batch_size=20,
                         decoding=two_worker_processes if decoding == "processes" else "threads"))
    assert [r.path for r in results] == paths
    assert [batch.shape for batch in classifier.batches] == [(20, 32, 32, 3), (10, 32, 32, 3)]
    handed = np.concatenate(classifier.batches)
    assert np.array_equal(handed, np.concatenate([load_image(p, preprocessing) for p in paths]))
