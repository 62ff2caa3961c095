"""Counting hits: top-k indices, top-k correctness, per-class tallies, confusions, confidence intervals; pure numpy."""

import collections
import math

import numpy as np

# z for a two-sided 95% interval: the 0.975 quantile of the standard normal.
Z_95 = 1.959963984540054


def top_k(probabilities, k):
    """Indices of the k largest probabilities, largest first (ties broken by lower index)."""
    k = min(k, len(probabilities))
    order = np.lexsort((np.arange(len(probabilities)), -probabilities))
    return order[:k]


def hit_at_k(ranked, accepted, k):
    """Whether any of the first k ranked class indices is an accepted (true) class."""
    return any(int(index) in accepted for index in ranked[:k])


def wilson_interval(successes, trials, z=Z_95):
    """Wilson score interval for a proportion, as (low, high) fractions; None when trials is 0.

    Unlike the normal approximation p ± z·sqrt(p(1-p)/n), it stays inside [0, 1] and does not
    collapse to a single point at 0% or 100%, which small evaluation folders often give.
    """
    if trials == 0:
        return None
    p = successes / trials
    z2 = z * z
    denominator = 1 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denominator
    half_width = z / denominator * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials))
    return max(0.0, centre - half_width), min(1.0, centre + half_width)


class AccuracyTally:
    """Running top-k hit counts, overall and per true class, and the top-1 confusions."""

    def __init__(self, ks=(1, 5)):
        self.ks = tuple(sorted(set(ks)))
        self.images = 0
        self.correct = dict.fromkeys(self.ks, 0)
        self.class_images = collections.Counter()
        self.class_correct = {k: collections.Counter() for k in self.ks}
        self.confusions = collections.Counter()

    def add(self, true_index, ranked, accepted=None):
        """Count one image: its true class, the class indices ranked best first, and the classes
        that count as a hit (the true class alone unless given, as ReaL gives a set)."""
        accepted = {true_index} if accepted is None else accepted
        hits = {k: hit_at_k(ranked, accepted, k) for k in self.ks}
        self.add_hits(true_index, hits, int(ranked[0]))
        return hits

    def add_hits(self, true_index, hits, predicted):
        """Count one image whose hits are already known ({k: bool}, as a saved record holds them);
        predicted is its top-1 class, for the confusions."""
        self.images += 1
        self.class_images[true_index] += 1
        for k, hit in hits.items():
            if hit:
                self.correct[k] += 1
                self.class_correct[k][true_index] += 1
        if not hits[self.ks[0]]:
            self.confusions[(true_index, predicted)] += 1

    def per_class(self):
        """(class index, images, {k: correct}) for every class seen, by class index."""
        return [(index, self.class_images[index], {k: self.class_correct[k][index] for k in self.ks})
                for index in sorted(self.class_images)]

    def worst_classes(self, count):
        """The classes with the lowest top-1 accuracy; more images first among equals."""
        first_k = self.ks[0]
        rows = self.per_class()
        rows.sort(key=lambda row: (row[2][first_k] / row[1], -row[1], row[0]))
        return rows[:count]

    def most_frequent_confusions(self, count):
        """((true, predicted), times) for the commonest top-1 mistakes, then by class index."""
        return sorted(self.confusions.items(), key=lambda item: (-item[1], item[0]))[:count]
