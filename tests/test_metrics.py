import numpy as np
import pytest

from resclassify.metrics import AccuracyTally, hit_at_k, top_k, wilson_interval


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
