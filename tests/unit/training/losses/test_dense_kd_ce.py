"""The closed-form dense forward-KL + CE loss equals the composed reference (forward_kl + cross_entropy), values
and gradients, for any temperature, smoothing, weights, masks and normalizer."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from training.losses import cross_entropy, forward_kl
from training.losses.dense_kd_ce import dense_kd_ce_loss


def _case(seed: int, n: int, vocab: int, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(n, vocab, generator=g) * scale
    teacher = torch.randn(n, vocab, generator=g) * scale
    labels = torch.randint(0, vocab, (n,), generator=g)
    labels[torch.rand(n, generator=g) < 0.25] = -100
    return student, teacher, labels


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| relative to the scale max |b| of the reference."""
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 9),
    vocab=st.integers(2, 40),
    scale=st.sampled_from([0.1, 1.0, 6.0]),
    kd_w=st.sampled_from([0.0, 0.5, 1.0]),
    ce_w=st.sampled_from([0.0, 0.3, 1.0]),
    temp=st.sampled_from([0.5, 1.0, 2.0]),
    eps=st.sampled_from([0.0, 0.1]),
    norm=st.sampled_from([None, 7.0]),
    three_d=st.booleans(),
)
def test_value_and_gradient_equal_composed_reference(seed: int, n: int, vocab: int, scale: float, kd_w: float,
                                                     ce_w: float, temp: float, eps: float, norm: float | None,
                                                     three_d: bool) -> None:
    logits, teacher, labels = _case(seed, n, vocab, scale)
    if three_d:
        logits, teacher, labels = logits.unsqueeze(0), teacher.unsqueeze(0), labels.unsqueeze(0)
    # the fused fp32 loss must be as close to the exact (float64) value and gradient as the composed fp32 path
    # is, up to a factor 2 and a small slack
    refs = []
    for leaf in (logits.double().requires_grad_(), logits.clone().requires_grad_()):
        ref = leaf.sum() * 0.0
        if kd_w:
            ref = ref + kd_w * forward_kl(leaf, teacher, mask=labels != -100, temperature=temp, normalizer=norm)
        if ce_w:
            ref = ref + ce_w * cross_entropy(leaf, labels, eps, norm)
        (2.0 * ref).backward()
        refs.append((leaf, ref))
    (a64, ref64), (a32, ref32) = refs
    b = logits.clone().requires_grad_()
    got, kd, _ = dense_kd_ce_loss(b, teacher, labels, kd_weight=kd_w, ce_weight=ce_w, temperature=temp,
                                  label_smoothing=eps, normalizer=norm)
    (2.0 * got).backward()
    exact = float(ref64.detach())
    assert abs(float(got.detach()) - exact) <= 2 * abs(float(ref32.detach()) - exact) + 1e-6 * max(1.0, abs(exact))
    assert a64.grad is not None and a32.grad is not None and b.grad is not None and b.grad.shape == a64.grad.shape
    scale = (kd_w * temp + ce_w) / max(1.0, norm if norm is not None else float((labels != -100).sum()))
    err = float((b.grad.double() - a64.grad).abs().max())
    err32 = float((a32.grad.double() - a64.grad).abs().max())
    assert err <= 2 * err32 + 1e-6 * float(a64.grad.abs().max()) + 16 * torch.finfo(torch.float32).eps * scale
    if kd_w:
        want = forward_kl(logits, teacher, mask=labels != -100, temperature=temp, normalizer=norm)
        assert abs(float(kd) - float(want)) <= 1e-5 * max(1.0, abs(float(want)))


def test_check_can_fail_when_the_teacher_differs() -> None:
    logits, teacher, labels = _case(1, 8, 25, 1.0)
    want = forward_kl(logits, teacher, mask=labels != -100)
    got, _, _ = dense_kd_ce_loss(logits, teacher * 1.3, labels)
    assert abs(float(got) - float(want)) > 1e-3


def test_bad_inputs_are_refused() -> None:
    logits, teacher, labels = _case(0, 4, 10, 1.0)
    with pytest.raises(ValueError, match="temperature"):
        dense_kd_ce_loss(logits, teacher, labels, temperature=0.0)
    with pytest.raises(ValueError, match="teacher logits"):
        dense_kd_ce_loss(logits, teacher[:, :5], labels)
    with pytest.raises(ValueError, match="teacher logits"):
        dense_kd_ce_loss(logits, None, labels, kd_weight=1.0)
    with pytest.raises(ValueError, match="labels"):
        dense_kd_ce_loss(logits, teacher, labels[:3])
