"""Judge metrics: AUROC by the rank formula against a brute-force pair count, F1, accuracies."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arbiter.judge_training.metrics import (
    auroc,
    average_ranks,
    f1,
    pairwise_accuracy,
    three_way_accuracy,
)


def brute_force_auroc(scores: list[float], labels: list[float]) -> float:
    """Fraction of (positive, negative) pairs ordered correctly, ties counting one half."""
    positives = [s for s, y in zip(scores, labels, strict=True) if y >= 0.5]
    negatives = [s for s, y in zip(scores, labels, strict=True) if y < 0.5]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-5, 5), st.booleans()), min_size=2, max_size=40))
def test_auroc_equals_the_brute_force_pair_count(items: list[tuple[int, bool]]) -> None:
    scores = [s / 2 for s, _ in items]  # few distinct values, so ties are common
    labels = [1.0 if y else 0.0 for _, y in items]
    if len(set(labels)) < 2:
        assert auroc(scores, labels) is None
        return
    value = auroc(scores, labels)
    assert value is not None
    assert math.isclose(value, brute_force_auroc(scores, labels), abs_tol=1e-12)


def test_auroc_known_values() -> None:
    assert auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert auroc([0.5, 0.5, 0.5], [0, 1, 1]) == 0.5
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert auroc([], []) is None
    with pytest.raises(ValueError):
        auroc([0.1], [1, 0])


def test_average_ranks_share_ties() -> None:
    assert average_ranks([3.0, 1.0, 3.0, 2.0]).tolist() == [3.5, 1.0, 3.5, 2.0]


def test_f1() -> None:
    assert f1([True, True, False, False], [True, False, True, False]) == 0.5
    assert f1([True, True], [True, True]) == 1.0
    assert f1([False, False], [False, False]) == 1.0
    assert f1([True, False], [False, False]) == 0.0
    assert f1([], []) is None
    with pytest.raises(ValueError):
        f1([True], [])


def test_pairwise_accuracy_skips_ties_and_counts_equal_scores_wrong() -> None:
    assert pairwise_accuracy([2.0, 0.0, 1.0, 5.0], [1.0, 1.0, 1.0, 0.0], ["a", "b", "a", "tie"]) == 2 / 3
    assert pairwise_accuracy([1.0], [0.0], ["tie"]) is None
    assert three_way_accuracy(["a", "tie", "b"], ["a", "tie", "a"]) == 2 / 3
    assert three_way_accuracy([], []) is None
