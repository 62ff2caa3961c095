"""Counting hits: top-k indices, top-k correctness, per-class tallies; pure numpy."""

import numpy as np


def top_k(probabilities, k):
    """Indices of the k largest probabilities, largest first (ties broken by lower index)."""
    k = min(k, len(probabilities))
    order = np.lexsort((np.arange(len(probabilities)), -probabilities))
    return order[:k]
