"""What the closed-form KD + CE losses share: settings checks, per-row weights, and the autograd Function.

:mod:`training.losses.dense_kd_ce` and :mod:`training.losses.sparse_kd_ce` each compute the loss terms and
``dL/dlogits`` directly (no autograd graph over ``(N, V)`` intermediates). This module wraps such a
computation as a differentiable loss: the gradient is made in ``forward`` and ``backward`` only rescales it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from training.losses.kd import IGNORE_INDEX, Normalizer, resolve_normalizer

__all__ = ["LogitGrad", "RowWeights", "apply_closed_form", "check_settings", "row_weights",
           "subtract_ce_targets"]

# (fp32 logits (N, V), owned) -> (kd_term, ce_term, dlogits (N, V)); owned: the logits may be overwritten
LogitGrad = Callable[[Tensor, bool], tuple[Tensor, Tensor, Tensor]]


@dataclass(frozen=True)
class RowWeights:
    """Flattened labels and the per-row weights and normalizers of the two terms.

    Attributes:
        labels: int64 ``(N,)``.
        kd_rows: float32 ``(N,)`` KD token weights.
        kd_norm: 0-d KD normalizer (tokens); ce_norm: 0-d CE normalizer (tokens).
    """

    labels: Tensor
    kd_rows: Tensor
    kd_norm: Tensor
    ce_norm: Tensor


def check_settings(temperature: float, label_smoothing: float, kd_weight: float, ce_weight: float) -> None:
    """Refuse a temperature that is not finite and > 0, smoothing outside [0, 1] or a negative weight."""
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    if kd_weight < 0 or ce_weight < 0:
        raise ValueError(f"weights must be >= 0, got kd_weight={kd_weight}, ce_weight={ce_weight}")


def row_weights(student_logits: Tensor, labels: Tensor, kd_mask: Tensor | None,
                normalizer: Normalizer) -> RowWeights:
    """Labels ``(B, T)`` / ``(N,)`` checked against the logits and flattened; KD rows from ``kd_mask`` (default
    ``labels != -100``); each term's normalizer (the step's target-token count, or its own mask sum)."""
    if tuple(labels.shape) != tuple(student_logits.shape[:-1]):
        raise ValueError(f"labels shape {tuple(labels.shape)} does not match logits {tuple(student_logits.shape)}")
    flat = labels.reshape(-1).long()
    kd_rows = ((flat != IGNORE_INDEX) if kd_mask is None else kd_mask.reshape(-1)).to(torch.float32)
    ce_rows = (flat != IGNORE_INDEX).to(torch.float32)
    return RowWeights(flat, kd_rows, resolve_normalizer(kd_rows, normalizer).to(torch.float32),
                      resolve_normalizer(ce_rows, normalizer).to(torch.float32))


def subtract_ce_targets(grad: Tensor, safe_labels: Tensor, ce_rows: Tensor, eps: float, vocab: int) -> None:
    """In place: ``grad -= ce_rows * ((1 - eps) onehot(y) + eps / V)`` per row; ``grad`` is ``(N, V)``,
    ``safe_labels`` int64 ``(N, 1)``, ``ce_rows`` ``(N,)``."""
    if eps != 0.0:
        grad.sub_((ce_rows * (eps / vocab)).unsqueeze(-1))
    grad.scatter_add_(-1, safe_labels, -(1.0 - eps) * ce_rows.unsqueeze(-1))


class _ClosedForm(torch.autograd.Function):
    """``kd_weight * KD + ce_weight * CE`` with the gradient made in forward by ``logit_grad``."""

    @staticmethod
    def forward(ctx: Any, logits: Tensor, logit_grad: LogitGrad, kd_weight: float,  # type: ignore[override]
                ce_weight: float) -> tuple[Tensor, Tensor, Tensor]:
        s = logits.detach()
        owned = s.dtype != torch.float32  # a dtype conversion is already a private copy
        kd_term, ce_term, grad = logit_grad(s.float(), owned)
        ctx.save_for_backward(grad)
        ctx.input_dtype = logits.dtype
        ctx.mark_non_differentiable(kd_term, ce_term)
        return kd_weight * kd_term + ce_weight * ce_term, kd_term, ce_term

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_total: Tensor, *_: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        # the saved buffer is used once (once_differentiable): rescale it in place instead of copying (N, V)
        return grad.mul_(grad_total).to(ctx.input_dtype), None, None, None


def apply_closed_form(logits: Tensor, logit_grad: LogitGrad, kd_weight: float,
                      ce_weight: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(total, kd, ce)`` for ``(N, V)`` logits: total is differentiable w.r.t. the logits (gradient from
    ``logit_grad``), the terms are detached. Double backward is not supported."""
    return _ClosedForm.apply(logits, logit_grad, float(kd_weight), float(ce_weight))
