import numpy as np
import pytest

from resclassify.metrics import AccuracyTally, ClassScore, averaged_scores, class_scores, hit_at_k, top_k, \
    wilson_interval, worst_by_f1


def test_top_k_is_largest_first_with_ties_to_the_lower_index():
    probabilities = np.array([0.1, 0.3, 0.3, 0.05, 0.25], dtype=np.float32)
    assert top_k(probabilities, 3).tolist() == [1, 2, 4]
    assert top_k(probabilities, 10).tolist() == [1, 2, 4, 0, 3]


def test_hit_at_k():
    ranked = [7, 3, 9, 1, 0, 5]
    assert hit_at_k(ranked, {7}, 1)
    assert not hit_at_k(ranked, {3}, 1)
    assert hit_at_k(ranked, {3}, 2)
    assert hit_at_k(ranked, {0}, 5) and not hit_at_k(ranked, {5}, 5)
    # ReaL: any accepted class in the top k is a hit.
    assert hit_at_k(ranked, {42, 9}, 3) and not hit_at_k(ranked, {42, 9}, 2)


@pytest.mark.parametrize("successes, trials, low, high", [
    (0, 10, 0.0, 0.27753),
    (10, 10, 0.72247, 1.0),
    (5, 10, 0.23659, 0.76341),
])
def test_wilson_interval(successes, trials, low, high):
    got = wilson_interval(successes, trials)
    assert got == pytest.approx((low, high), abs=5e-5)


@pytest.mark.parametrize("successes, trials", [(81, 263), (3, 7), (999, 1000)])
def test_wilson_endpoints_are_where_the_score_test_is_exactly_at_z(successes, trials):
    # The Wilson interval is every p with |p_hat - p| <= z * sqrt(p (1 - p) / n).
    z = 1.959963984540054
    p_hat = successes / trials
    for p in wilson_interval(successes, trials):
        assert (p_hat - p) ** 2 == pytest.approx(z * z * p * (1 - p) / trials, rel=1e-9)


def test_wilson_interval_of_nothing_is_none():
    assert wilson_interval(0, 0) is None


def test_tally_counts_hits_per_class_and_confusions():
    tally = AccuracyTally(ks=(5, 1))
    assert tally.ks == (1, 5)
    assert tally.add(3, [3, 1, 2, 0, 4]) == {1: True, 5: True}
    assert tally.add(3, [1, 3, 2, 0, 4]) == {1: False, 5: True}
    assert tally.add(3, [1, 2, 0, 4, 5, 3]) == {1: False, 5: False}
    assert tally.add(7, [2, 7]) == {1: False, 5: True}
    assert tally.add(8, [8]) == {1: True, 5: True}
    assert tally.add(9, [6, 0], accepted={0, 2}) == {1: False, 5: True}
    assert tally.images == 6
    assert tally.correct == {1: 2, 5: 5}
    assert tally.per_class() == [(3, 3, {1: 1, 5: 2}), (7, 1, {1: 0, 5: 1}), (8, 1, {1: 1, 5: 1}),
                                 (9, 1, {1: 0, 5: 1})]
    # Worst first: 0% (more images first among equals), then 33%, then 100%.
    assert [row[0] for row in tally.worst_classes(3)] == [7, 9, 3]
    assert tally.most_frequent_confusions(2) == [((3, 1), 2), ((7, 2), 1)]
    assert tally.most_frequent_confusions(10)[-1] == ((9, 6), 1)


def test_tally_with_top_k_beyond_5():
    tally = AccuracyTally(ks=(1, 5, 10))
    assert tally.add(9, list(range(10))) == {1: False, 5: False, 10: True}
    assert tally.correct == {1: 0, 5: 0, 10: 1}


# Top-1 predictions of eight images, counted by hand (true class -> predicted class: images):
#   class 0: 3 images, predicted 0, 0, 1      class 1: 2 images, predicted 1, 1
#   class 3: 1 image, predicted 5             class 4: 1 image, predicted 2
#   class 2: 1 image, predicted 0
# Class 3 and 4 are never predicted; class 5 is predicted but has no image.
PAIRS = {(0, 0): 2, (0, 1): 1, (1, 1): 2, (3, 5): 1, (4, 2): 1, (2, 0): 1}


def test_per_class_precision_recall_f1_counted_by_hand():
    assert class_scores(PAIRS) == [
        # class 0: predicted 3 times (twice for itself, once for class 2), 2 right, of 3 images.
        ClassScore(0, images=3, predicted=3, true_positives=2, precision=2 / 3, recall=2 / 3, f1=2 / 3),
        # class 1: predicted 3 times (twice right, once for a class-0 image), both its images found.
        ClassScore(1, images=2, predicted=3, true_positives=2, precision=2 / 3, recall=1.0, f1=4 / 5),
        ClassScore(2, images=1, predicted=1, true_positives=0, precision=0.0, recall=0.0, f1=0.0),
        # Never predicted: precision is 0/0, so None; recall 0; F1 0.
        ClassScore(3, images=1, predicted=0, true_positives=0, precision=None, recall=0.0, f1=0.0),
        ClassScore(4, images=1, predicted=0, true_positives=0, precision=None, recall=0.0, f1=0.0),
        # No image: recall is 0/0, so None; it was predicted once, wrongly.
        ClassScore(5, images=0, predicted=1, true_positives=0, precision=0.0, recall=None, f1=0.0),
    ]


def test_macro_and_image_weighted_averages_over_the_classes_with_images():
    averages = averaged_scores(class_scores(PAIRS))
    assert averages["classes"] == 5  # classes 0..4; class 5 has no image
    # Macro: each class alike, a never-predicted class counting precision 0.
    assert averages["macro"] == pytest.approx({"precision": (2 / 3 + 2 / 3) / 5, "recall": (2 / 3 + 1) / 5,
                                               "f1": (2 / 3 + 4 / 5) / 5}, rel=1e-12)
    # Weighted by images (3, 2, 1, 1, 1 of 8): weighted recall is top-1 accuracy, 4 of 8.
    assert averages["weighted"] == pytest.approx({"precision": (3 * 2 / 3 + 2 * 2 / 3) / 8, "recall": 4 / 8,
                                                  "f1": (3 * 2 / 3 + 2 * 4 / 5) / 8}, rel=1e-12)


def test_worst_classes_by_f1_have_images_and_break_ties_by_images_then_index():
    scores = class_scores({**PAIRS, (4, 2): 2})
    assert [s.index for s in worst_by_f1(scores, 4)] == [4, 2, 3, 0]


def test_nothing_counted_has_no_scores():
    assert class_scores({}) == []
    assert averaged_scores([]) is None


def test_tally_keeps_the_whole_top1_confusion_matrix():
    tally = AccuracyTally()
    for true, predicted in [(0, 0), (2, 0), (0, 1), (0, 0), (1, 1), (4, 2), (3, 5), (1, 1)]:
        tally.add(true, [predicted, 9, 8, 7, 6])
    assert tally.top1_pairs == PAIRS
    assert tally.confusion_matrix() == [(0, 0, 2), (0, 1, 1), (1, 1, 2), (2, 0, 1), (3, 5, 1), (4, 2, 1)]
