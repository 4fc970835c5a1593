"""The Davidson tie model and the masked BCE terms."""

from __future__ import annotations

import math

import torch

from arbiter.judge_training.losses import (
    WINNER_INDEX,
    davidson_logits,
    davidson_probabilities,
    masked_bce,
    pairwise_loss,
)


def test_davidson_probabilities_are_a_distribution_with_bradley_terry_inside() -> None:
    a = torch.tensor([2.0, -1.0, 0.3, 0.0])
    b = torch.tensor([0.5, 1.0, 0.3, 4.0])
    log_nu = torch.tensor(math.log(0.7))
    probs = davidson_probabilities(a, b, log_nu)
    assert torch.allclose(probs.sum(-1), torch.ones(4))
    conditional = probs[:, 0] / (probs[:, 0] + probs[:, 1])
    assert torch.allclose(conditional, torch.sigmoid(a - b), atol=1e-6)
    d = 1.5
    z = math.exp(d / 2) + math.exp(-d / 2) + 0.7
    manual = davidson_probabilities(torch.tensor([d]), torch.tensor([0.0]), log_nu)[0]
    assert torch.allclose(manual, torch.tensor([math.exp(d / 2) / z, math.exp(-d / 2) / z, 0.7 / z]))


def test_tie_probability_peaks_at_equal_scores_and_follows_nu() -> None:
    d = torch.linspace(-4, 4, 81)
    tie = davidson_probabilities(d, torch.zeros_like(d), torch.tensor(0.0))[:, 2]
    assert int(tie.argmax()) == 40
    assert torch.all(tie[:40].diff() > 0) and torch.all(tie[40:].diff() < 0)
    small = davidson_probabilities(torch.zeros(1), torch.zeros(1), torch.tensor(math.log(0.1)))[0, 2]
    large = davidson_probabilities(torch.zeros(1), torch.zeros(1), torch.tensor(math.log(10.0)))[0, 2]
    assert small < 1 / 3 < large


def test_pairwise_loss_gradients_push_the_right_way() -> None:
    score_a = torch.tensor([0.0, 0.0, 2.0], requires_grad=True)
    score_b = torch.tensor([0.0, 0.0, 0.0], requires_grad=True)
    log_nu = torch.tensor(0.0, requires_grad=True)
    winner = torch.tensor([WINNER_INDEX["a"], WINNER_INDEX["b"], WINNER_INDEX["tie"]])
    pairwise_loss(score_a, score_b, winner, log_nu).backward()
    assert score_a.grad is not None and score_b.grad is not None
    assert score_a.grad[0] < 0 < score_b.grad[0]  # a won: raise a, lower b
    assert score_a.grad[1] > 0 > score_b.grad[1]  # b won
    assert score_a.grad[2] > 0 > score_b.grad[2]  # tie at d = 2: pull the scores together
    assert log_nu.grad is not None
    assert davidson_logits(score_a, score_b, log_nu).shape == (3, 3)


def test_masked_bce_averages_over_the_mask_only() -> None:
    logits = torch.tensor([[0.0, 3.0], [-2.0, 100.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mask = torch.tensor([[True, True], [True, False]])
    expected = (math.log(2) + (3 + math.log1p(math.exp(-3))) + math.log1p(math.exp(-2))) / 3
    assert math.isclose(float(masked_bce(logits, targets, mask)), expected, rel_tol=1e-6)
    empty = masked_bce(logits.requires_grad_(), targets, torch.zeros_like(mask))
    assert float(empty.detach()) == 0.0
    empty.backward()
    assert logits.grad is not None and torch.all(logits.grad == 0)
