"""Judge metrics: pairwise accuracy, three-way accuracy, F1 and AUROC (rank formula), all from scratch.

Every function returns ``None`` when the metric is undefined for its input (no non-tie pairs, no
positive or no negative labels), never NaN, so reports stay valid JSON.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pairwise_accuracy(score_a: Sequence[float], score_b: Sequence[float], winners: Sequence[str]) -> float | None:
    """Fraction of non-tie pairs whose winner has the strictly higher score (equal scores count wrong)."""
    hits = total = 0
    for a, b, winner in zip(score_a, score_b, winners, strict=True):
        if winner == "tie":
            continue
        total += 1
        hits += int(a > b) if winner == "a" else int(b > a)
    return hits / total if total else None


def three_way_accuracy(predicted: Sequence[str], winners: Sequence[str]) -> float | None:
    """Fraction of pairs whose predicted outcome (a, b or tie) equals the label."""
    if len(predicted) != len(winners):
        raise ValueError(f"{len(predicted)} predictions for {len(winners)} labels")
    return sum(p == w for p, w in zip(predicted, winners, strict=True)) / len(winners) if winners else None


def f1(predicted: Sequence[bool], actual: Sequence[bool]) -> float | None:
    """F1 of the positive class; 1.0 when there are no positives and none are predicted; ``None`` for no
    items."""
    if len(predicted) != len(actual):
        raise ValueError(f"{len(predicted)} predictions for {len(actual)} labels")
    if not actual:
        return None
    tp = sum(p and a for p, a in zip(predicted, actual, strict=True))
    fp = sum(p and not a for p, a in zip(predicted, actual, strict=True))
    fn = sum(a and not p for p, a in zip(predicted, actual, strict=True))
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks of ``values`` in ascending order, tied values sharing their average rank."""
    array = np.asarray(values, dtype=np.float64)
    order = np.argsort(array, kind="mergesort")
    ranks = np.empty(len(array), dtype=np.float64)
    sorted_values = array[order]
    start = 0
    while start < len(array):
        end = start
        while end + 1 < len(array) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def auroc(scores: Sequence[float], labels: Sequence[float]) -> float | None:
    """Area under the ROC curve by the rank (Mann-Whitney) formula:
    ``(sum of positive ranks - n_pos (n_pos + 1) / 2) / (n_pos n_neg)``; labels >= 0.5 are positive and
    tied scores count one half. ``None`` without both classes."""
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores for {len(labels)} labels")
    positive = np.asarray(labels, dtype=np.float64) >= 0.5
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = average_ranks(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
