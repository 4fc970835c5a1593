"""Judge losses: the Davidson tie model for pairs, and masked binary cross-entropy for clauses and steps.

Ties use Davidson's (1970) extension of Bradley-Terry. With strengths ``exp(s)`` and ``d = s_a - s_b``::

    P(a) = e^{d/2} / Z,   P(b) = e^{-d/2} / Z,   P(tie) = nu / Z,   Z = e^{d/2} + e^{-d/2} + nu

i.e. a softmax over the logits ``(d/2, -d/2, log nu)``. A tie is a real outcome with its own likelihood
(not a 0.5 soft target), is most likely when the two scores are equal, and ``nu`` is learned, so it follows
the data's tie rate; ``P(a | not a tie) = sigmoid(d)`` is plain Bradley-Terry, so scores keep their usual
meaning and ``nu -> 0`` recovers it. The same three probabilities are what :meth:`arbiter.judge.Judge.compare`
reports.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

WINNER_INDEX: dict[str, int] = {"a": 0, "b": 1, "tie": 2}


def davidson_logits(score_a: Tensor, score_b: Tensor, tie_log_nu: Tensor) -> Tensor:
    """(P,) scores and a scalar log nu -> (P, 3) logits of the outcomes (a wins, b wins, tie)."""
    half = (score_a - score_b) / 2
    return torch.stack((half, -half, tie_log_nu.expand_as(half)), dim=-1)


def davidson_probabilities(score_a: Tensor, score_b: Tensor, tie_log_nu: Tensor) -> Tensor:
    """(P, 3) probabilities of (a wins, b wins, tie); each row sums to 1."""
    return davidson_logits(score_a, score_b, tie_log_nu).softmax(dim=-1)


def pairwise_loss(score_a: Tensor, score_b: Tensor, winner: Tensor, tie_log_nu: Tensor) -> Tensor:
    """Mean negative log-likelihood of the outcomes ``winner`` (P,) in {0: a, 1: b, 2: tie}."""
    return F.cross_entropy(davidson_logits(score_a, score_b, tie_log_nu), winner)


def masked_bce(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """Binary cross-entropy with logits, averaged over the positions where ``mask`` is true (any equal
    shapes, e.g. clauses (N, C) or steps (N, T)); 0 (still attached to the graph) when none are."""
    weights = mask.to(logits.dtype)
    losses = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
    return (losses * weights).sum() / weights.sum().clamp_min(1.0)
