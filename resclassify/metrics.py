"""Counting hits: top-k indices, top-k correctness, per-class tallies, confusions, precision/recall/F1,
confidence intervals; pure numpy."""

import collections
import dataclasses
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
        self.top1_pairs = collections.Counter()  # (true class, top-1 class) for every image: the confusion matrix

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
        self.top1_pairs[(true_index, predicted)] += 1
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

    def confusion_matrix(self):
        """(true, predicted top-1, images) for every pair that occurred, by true class then predicted class."""
        return [(true, predicted, count) for (true, predicted), count in sorted(self.top1_pairs.items())]


@dataclasses.dataclass(frozen=True)
class ClassScore:
    """One class's top-1 precision, recall and F1 (fractions), with the counts they come from.

    precision is None for a class never predicted, recall None for a class with no image (0/0);
    f1 is 2·tp / (2·tp + fp + fn), the harmonic mean of the two where both exist, and 0 when tp is 0.
    """

    index: int
    images: int
    predicted: int
    true_positives: int
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None


def class_scores(pairs):
    """ClassScore for every class that is some image's true class or some image's prediction, by index.

    pairs maps (true class, predicted class) to a number of images: a confusion matrix.
    """
    if not pairs:
        return []
    true = np.fromiter((t for t, _ in pairs), dtype=np.int64, count=len(pairs))
    predicted = np.fromiter((p for _, p in pairs), dtype=np.int64, count=len(pairs))
    counts = np.fromiter(pairs.values(), dtype=np.int64, count=len(pairs))
    length = int(max(true.max(), predicted.max())) + 1
    images = np.bincount(true, weights=counts, minlength=length).astype(np.int64)
    predictions = np.bincount(predicted, weights=counts, minlength=length).astype(np.int64)
    hits = np.bincount(true[true == predicted], weights=counts[true == predicted], minlength=length).astype(np.int64)
    scores = []
    for index in np.flatnonzero((images > 0) | (predictions > 0)):
        tp, n_images, n_predicted = int(hits[index]), int(images[index]), int(predictions[index])
        scores.append(ClassScore(
            index=int(index), images=n_images, predicted=n_predicted, true_positives=tp,
            precision=tp / n_predicted if n_predicted else None,
            recall=tp / n_images if n_images else None,
            f1=2 * tp / (n_images + n_predicted)))
    return scores


def averaged_scores(scores):
    """Macro (each class alike) and image-weighted averages of precision, recall and F1, as fractions.

    Over the classes with at least one image, as scikit-learn averages with zero_division=0: a
    class never predicted counts precision 0. A class predicted but without any image is left
    out (its false positives already lower the recall of the true classes of those images).
    None when no class has an image.
    """
    scored = [s for s in scores if s.images > 0]
    if not scored:
        return None
    weights = np.array([s.images for s in scored], dtype=np.float64)
    figures = {
        "precision": np.array([s.precision or 0.0 for s in scored]),
        "recall": np.array([s.recall for s in scored]),
        "f1": np.array([s.f1 for s in scored]),
    }
    return {
        "classes": len(scored),
        "macro": {name: float(values.mean()) for name, values in figures.items()},
        "weighted": {name: float(np.average(values, weights=weights)) for name, values in figures.items()},
    }


def worst_by_f1(scores, count):
    """The classes with images that have the lowest F1; more images first among equals, then by index."""
    scored = [s for s in scores if s.images > 0]
    scored.sort(key=lambda s: (s.f1, -s.images, s.index))
    return scored[:count]
