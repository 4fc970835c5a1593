"""Process-supervision losses: per-token weighted KD and cross-entropy, unlikelihood on wrong steps, span losses.

Conventions are those of :mod:`training.losses`: logits ``(B, T, V)``, already-shifted ``labels`` ``(B, T)``
(``logits[b, t]`` is scored against ``labels[b, t]``; -100 = no target), per-token float weights ``(B, T)``
and the reduction ``sum_t(w_t * loss_t) / normalizer``, where ``normalizer`` is the number of target tokens
of the whole optimizer step (default: the weights' own sum), clamped to ``>= 1``. With a fixed normalizer
the loss of a batch is the sum of the losses of its micro-batches, so the update does not depend on the
split. Losses are in nats per target token.

Weighting scheme (:func:`process_token_weights`). Every completion target ``t`` has a span kind and a
correctness score ``s_t`` in ``[0, 1]`` (from :func:`training.reasoning.step_data.collate_steps`: the step label, or a
judge's score, of the step whose token ``labels[t]`` is; for the answer the smallest step score; 1.0 for
everything else). With ``c = correct_weight``, ``w = wrong_weight``, ``a = answer_weight``,
``n = toolcall_name_weight`` and ``g = toolcall_structure_weight``::

    kind            CE weight       KD weight                 unlikelihood weight
    step            c * s           c * s + w * (1 - s)       (1 - s)   [scope, see below]
    answer          a * s           a * s + w * (1 - s)       0
    tool name       n               n                         0
    tool structure  g               g                         0
    other target    1               1                         0          (markup tags, eos, values)
    no target       0               0                         0

* Hard labels of wrong steps are never trained towards: a step labelled 0 has CE weight exactly 0 (a soft
  judge score ``s`` scales the CE weight down to ``c * s``). All weights are ``>= 0``.
* The teacher stays a target on wrong steps with weight ``w`` (its distribution at those positions puts
  mass on the correct continuation); ``w = 0`` drops KD there too.
* Unlikelihood ``-log(1 - q(y_t))`` pushes the student away from the tokens of a wrong step. With
  ``unlikelihood_scope='first_wrong'`` only the first step of a row with ``s < 1`` (where the error
  originates) is penalised; later steps of a corrupted solution follow correctly from the wrong value and
  are only left out of the CE. ``'all_wrong'`` penalises every step with ``s < 1``. The penalty covers all
  tokens of the step, including a correct-looking prefix (``18+5=`` of ``18+5=13``): keep its weight small.

The total (:func:`process_loss`) is ``kd * KD(w_kd) + ce * CE(w_ce) + unlikelihood_weight * UL(w_ul)``, with
``kd``, ``ce``, the divergence, temperature and label smoothing from a :class:`~training.losses.KDLossWeights`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from training.config_base import FrozenStrictModel
from training.losses import (
    IGNORE_INDEX,
    KDLossWeights,
    Normalizer,
    as_compute,
    check_labels,
    connected_zero,
    cross_entropy_per_token,
    kd_divergence,
    reduce_weighted,
    sparse_topk_kl,
    token_weights,
)
from training.reasoning.step_data import KIND_ANSWER, KIND_STEP, KIND_TOOL_NAME, KIND_TOOL_STRUCTURE

__all__ = [
    "ProcessTokenWeights",
    "ProcessWeights",
    "SpanLike",
    "process_loss",
    "process_token_weights",
    "span_cross_entropy",
    "span_token_weights",
    "unlikelihood",
    "weighted_cross_entropy",
    "weighted_kd",
]

SpanLike = Any
"""Anything with integer ``start`` and ``end`` attributes (a :class:`training.reasoning.step_data.TokenSpan`) or a
``(start, end)`` pair: tokens ``[start, end)`` of ``input_ids``."""


class ProcessWeights(FrozenStrictModel):
    """Weights of the process-supervision scheme (see the module docstring); all finite and ``>= 0``."""

    correct_weight: float = Field(1.0, ge=0.0, allow_inf_nan=False,
                                  description="c: CE and KD weight of step tokens, scaled by the step score s")
    wrong_weight: float = Field(1.0, ge=0.0, allow_inf_nan=False,
                                description="w: KD weight of wrong steps (score 0; scaled by 1 - s), whose CE "
                                            "weight is 0")
    answer_weight: float = Field(1.0, ge=0.0, allow_inf_nan=False,
                                 description="a: CE and KD weight of answer tokens, scaled by s")
    unlikelihood_weight: float = Field(0.0, ge=0.0, allow_inf_nan=False,
                                       description="coefficient of the unlikelihood term on wrong steps")
    unlikelihood_scope: Literal["first_wrong", "all_wrong"] = Field(
        "first_wrong", description="first_wrong: penalise only the first step with score < 1 in a row; all_wrong: "
                                   "every such step")
    toolcall_name_weight: float = Field(2.0, ge=0.0, allow_inf_nan=False,
                                        description="n: CE and KD weight of tool-name tokens")
    toolcall_structure_weight: float = Field(1.5, ge=0.0, allow_inf_nan=False,
                                             description="g: CE and KD weight of the JSON punctuation, quote and "
                                                         "key tokens of a call")


@dataclass(frozen=True)
class ProcessTokenWeights:
    """Per-token weights ``(B, T)`` (float) of the three loss terms."""

    ce: Tensor
    kd: Tensor
    unlikelihood: Tensor


def _check_bt(name: str, x: Tensor, shape: torch.Size) -> None:
    if x.dim() != 2 or x.shape != shape:
        raise ValueError(f"{name} must be (B, T) = {tuple(shape)}, got {tuple(x.shape)}")


def process_token_weights(labels: Tensor, step_weight: Tensor, span_kind: Tensor, step_index: Tensor,
                          weights: ProcessWeights) -> ProcessTokenWeights:
    """Per-token CE, KD and unlikelihood weights of the process scheme (table in the module docstring).

    Args:
        labels: int64 ``(B, T)``, -100 where there is no target.
        step_weight: float ``(B, T)`` correctness scores in ``[0, 1]`` (see :func:`~training.reasoning.step_data.collate_steps`).
        span_kind: int64 ``(B, T)`` ``KIND_*`` constants of :mod:`training.step_data`.
        step_index: int64 ``(B, T)``, the step of each step position, -1 elsewhere.
        weights: the scheme's weights.

    Returns:
        :class:`ProcessTokenWeights` of float32 ``(B, T)`` tensors (zero where ``labels == -100``).
    """
    shape = labels.shape
    for name, x in (("step_weight", step_weight), ("span_kind", span_kind), ("step_index", step_index)):
        _check_bt(name, x, shape)
    score = step_weight.detach().float()
    if bool(((score < 0) | (score > 1) | ~torch.isfinite(score)).any()):
        raise ValueError("step_weight scores must lie in [0, 1]")
    target = labels != IGNORE_INDEX
    step = span_kind == KIND_STEP
    answer = span_kind == KIND_ANSWER
    name = span_kind == KIND_TOOL_NAME
    structure = span_kind == KIND_TOOL_STRUCTURE
    base = target.float()
    c, w, a = weights.correct_weight, weights.wrong_weight, weights.answer_weight
    n, g = weights.toolcall_name_weight, weights.toolcall_structure_weight
    ce = torch.where(step, c * score, base)
    ce = torch.where(answer, a * score, ce)
    kd = torch.where(step, c * score + w * (1.0 - score), base)
    kd = torch.where(answer, a * score + w * (1.0 - score), kd)
    for mask, value in ((name, n), (structure, g)):
        ce = torch.where(mask, torch.full_like(ce, value), ce)
        kd = torch.where(mask, torch.full_like(kd, value), kd)
    wrong = step & target & (score < 1.0)
    if weights.unlikelihood_scope == "first_wrong":
        sentinel = torch.iinfo(torch.long).max
        first = torch.where(wrong, step_index, torch.full_like(step_index, sentinel)).amin(dim=-1, keepdim=True)
        wrong = wrong & (step_index == first)
    ul = torch.where(wrong, 1.0 - score, torch.zeros_like(score))
    zero = torch.zeros_like(base)
    return ProcessTokenWeights(ce=torch.where(target, ce, zero), kd=torch.where(target, kd, zero),
                               unlikelihood=torch.where(target, ul, zero))


def weighted_cross_entropy(logits: Tensor, labels: Tensor, weights: Tensor | None = None,
                           label_smoothing: float = 0.0, normalizer: Normalizer = None) -> Tensor:
    """Token cross-entropy with per-token weights: ``sum_t w_t * CE_t / normalizer``.

    ``CE_t = (1 - eps) * (-log q(y_t)) + eps * mean_v(-log q_v)`` (``eps = label_smoothing``); tokens whose
    label is -100 contribute nothing whatever their weight.

    Args:
        logits: ``(B, T, V)`` or ``(N, V)``.
        labels: int64 ``(B, T)`` / ``(N,)``.
        weights: float ``(B, T)`` / ``(N,)`` token weights (``None``: 1 on every target).
        label_smoothing: ``eps`` in ``[0, 1]``.
        normalizer: target tokens of the optimizer step (default: the sum of the effective weights).

    Returns:
        0-d tensor (nats per target token).
    """
    check_labels(logits, labels, min_logits_dim=2)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    per_token, valid = cross_entropy_per_token(logits, labels, label_smoothing)
    w = token_weights(weights, labels.shape, per_token.dtype, per_token.device) * valid.to(per_token.dtype)
    return reduce_weighted(per_token, w, normalizer)


def unlikelihood(logits: Tensor, labels: Tensor, weights: Tensor | None = None,
                 normalizer: Normalizer = None) -> Tensor:
    """Unlikelihood loss ``sum_t w_t * -log(1 - q(y_t)) / normalizer`` (Welleck et al., 2020).

    ``log(1 - q(y))`` is computed as ``logsumexp_{v != y}(z) - logsumexp_v(z)``, exact and finite even when
    ``q(y)`` rounds to 1.

    Args:
        logits: ``(B, T, V)`` or ``(N, V)``, ``V >= 2``.
        labels: int64 ``(B, T)`` / ``(N,)``: the tokens to push down (-100: none).
        weights: float ``(B, T)`` / ``(N,)`` token weights (``None``: 1 on every target).
        normalizer: target tokens of the optimizer step (default: the sum of the effective weights).

    Returns:
        0-d tensor (nats per target token).
    """
    check_labels(logits, labels, min_logits_dim=2)
    if logits.shape[-1] < 2:
        raise ValueError("unlikelihood needs a vocabulary of at least 2 tokens")
    z = as_compute(logits)
    valid = labels != IGNORE_INDEX
    safe = torch.where(valid, labels, torch.zeros_like(labels)).long()
    is_label = F.one_hot(safe, z.shape[-1]).bool()
    others = torch.where(is_label, torch.full_like(z, float("-inf")), z)
    per_token = -(torch.logsumexp(others, dim=-1) - torch.logsumexp(z, dim=-1))
    w = token_weights(weights, labels.shape, z.dtype, z.device) * valid.to(z.dtype)
    return reduce_weighted(per_token, w, normalizer)


def weighted_kd(student_logits: Tensor, weights: Tensor | None, *, teacher_logits: Tensor | None = None,
                teacher_topk_ids: Tensor | None = None, teacher_topk_logprobs: Tensor | None = None,
                divergence: str = "forward_kl", temperature: float = 1.0, normalizer: Normalizer = None,
                **divergence_kwargs: float) -> Tensor:
    """KD divergence with per-token weights: ``sum_t w_t * T**2 * D_t(teacher || student) / normalizer``.

    Dense teachers use any divergence of :func:`training.losses.kd_divergence`; a sparse top-k teacher
    (``teacher_topk_ids`` + ``teacher_topk_logprobs``) uses :func:`training.losses.sparse_topk_kl`
    (forward KL only).

    Args:
        student_logits: ``(B, T, V)``.
        weights: float ``(B, T)`` token weights (``None``: every token).
        teacher_logits: ``(B, T, V)`` (detached), or None with a sparse teacher.
        teacher_topk_ids: int64 ``(B, T, K)``.
        teacher_topk_logprobs: ``(B, T, K)``.
        divergence: divergence name.
        temperature: ``T > 0``.
        normalizer: target tokens of the optimizer step (default: the weights' sum).
        **divergence_kwargs: ``beta`` (jsd) or ``alpha`` (skew divergences).

    Returns:
        0-d tensor (nats per target token).
    """
    if teacher_logits is not None:
        return kd_divergence(divergence, student_logits, teacher_logits, mask=weights, temperature=temperature,
                             normalizer=normalizer, **divergence_kwargs)
    if teacher_topk_ids is None or teacher_topk_logprobs is None:
        raise ValueError("weighted_kd needs teacher_logits or teacher_topk_ids + teacher_topk_logprobs")
    if divergence != "forward_kl":
        raise ValueError(f"the sparse top-k teacher supports forward_kl only, not {divergence!r}")
    return sparse_topk_kl(student_logits, teacher_topk_ids, teacher_topk_logprobs, mask=weights,
                          temperature=temperature, normalizer=normalizer)


def _bounds(span: SpanLike) -> tuple[int, int]:
    if isinstance(span, tuple):
        return int(span[0]), int(span[1])
    return int(span.start), int(span.end)


def span_token_weights(spans: Sequence[Sequence[SpanLike]], shape: tuple[int, int],
                       span_weights: Sequence[Sequence[float]] | None = None) -> Tensor:
    """Weights ``(B, T)`` at the label positions of token spans (the next-token shift applied).

    Span ``[s, e)`` of row ``b`` with weight ``w`` adds ``w`` at positions ``s - 1 .. e - 2`` that lie in
    ``[0, T - 1)`` (the last position predicts a token outside ``input_ids``); overlapping spans add up.

    Args:
        spans: per row, its token spans.
        shape: ``(B, T)`` of ``input_ids``.
        span_weights: per row, one weight per span (``None``: 1.0 each).

    Returns:
        float32 ``(B, T)``.
    """
    batch, length = shape
    if len(spans) != batch:
        raise ValueError(f"spans has {len(spans)} rows, input_ids has {batch}")
    out = torch.zeros(shape, dtype=torch.float32)
    for b, row in enumerate(spans):
        row_weights = [1.0] * len(row) if span_weights is None else list(span_weights[b])
        if len(row_weights) != len(row):
            raise ValueError(f"row {b}: {len(row)} spans but {len(row_weights)} weights")
        for span, weight in zip(row, row_weights, strict=True):
            start, end = _bounds(span)
            if not 1 <= start <= end:
                raise ValueError(f"row {b}: a span needs 1 <= start <= end, got [{start}, {end})")
            lo, hi = start - 1, min(end - 1, length - 1)
            if hi > lo:
                out[b, lo:hi] += float(weight)
    return out


def span_cross_entropy(logits: Tensor, input_ids: Tensor, spans: Sequence[Sequence[SpanLike]],
                       span_weights: Sequence[Sequence[float]] | None = None,
                       normalizer: Normalizer = None) -> Tensor:
    """Cross-entropy of the tokens of token spans, scored at their real positions (next-token shift).

    The tokens ``input_ids[b, s:e]`` of a span are predicted by ``logits[b, s - 1 : e - 1]``; the loss is
    ``sum_spans w * sum_t -log q(input_ids[b, t + 1] | logits[b, t]) / normalizer``.

    Args:
        logits: ``(B, T, V)``.
        input_ids: int64 ``(B, T)``.
        spans: per row, its token spans (see :func:`span_token_weights`).
        span_weights: per row, one weight per span (``None``: 1.0).
        normalizer: target tokens of the optimizer step (default: the span weights' sum).

    Returns:
        0-d tensor (nats per target token).
    """
    if logits.dim() != 3 or tuple(input_ids.shape) != tuple(logits.shape[:2]):
        raise ValueError(f"input_ids {tuple(input_ids.shape)} does not match logits {tuple(logits.shape)}")
    targets = torch.full_like(input_ids, IGNORE_INDEX)
    targets[:, :-1] = input_ids[:, 1:]
    weights = span_token_weights(spans, (input_ids.shape[0], input_ids.shape[1]), span_weights)
    return weighted_cross_entropy(logits, targets, weights.to(logits.device), normalizer=normalizer)


def process_loss(student_logits: Tensor, labels: Tensor, weights: ProcessTokenWeights,
                 loss: KDLossWeights, unlikelihood_weight: float = 0.0, *, teacher_logits: Tensor | None = None,
                 teacher_topk_ids: Tensor | None = None, teacher_topk_logprobs: Tensor | None = None,
                 normalizer: Normalizer = None) -> tuple[Tensor, dict[str, float]]:
    """``loss.kd * KD(w_kd) + loss.ce * CE(w_ce) + unlikelihood_weight * UL(w_ul)``.

    Terms with a zero coefficient are not computed (reported as 0.0); the KD term needs a teacher when
    ``loss.kd > 0``.

    Args:
        student_logits: ``(B, T, V)``.
        labels: int64 ``(B, T)``.
        weights: the per-token weights of the three terms (:func:`process_token_weights`).
        loss: KD / CE coefficients, divergence, temperature and label smoothing (``hidden`` must be 0).
        unlikelihood_weight: coefficient of the unlikelihood term (``>= 0``).
        teacher_logits: ``(B, T, V)``, or a sparse teacher through the two top-k tensors.
        teacher_topk_ids: int64 ``(B, T, K)``.
        teacher_topk_logprobs: ``(B, T, K)``.
        normalizer: target tokens of the optimizer step, passed to every term.

    Returns:
        ``(total, terms)``: a 0-d tensor and ``{'kd', 'ce', 'unlikelihood', 'total'}`` as floats.
    """
    if loss.hidden > 0:
        raise ValueError("process_loss has no hidden-state term; use hidden=0")
    if not unlikelihood_weight >= 0:
        raise ValueError(f"unlikelihood_weight must be >= 0, got {unlikelihood_weight}")
    total = connected_zero(as_compute(student_logits))
    terms = {"kd": 0.0, "ce": 0.0, "unlikelihood": 0.0}
    if loss.kd > 0:
        kd = weighted_kd(student_logits, weights.kd, teacher_logits=teacher_logits,
                         teacher_topk_ids=teacher_topk_ids, teacher_topk_logprobs=teacher_topk_logprobs,
                         divergence=loss.divergence, temperature=loss.temperature, normalizer=normalizer,
                         **loss.divergence_kwargs())
        total = total + loss.kd * kd
        terms["kd"] = float(kd.detach())
    if loss.ce > 0:
        ce = weighted_cross_entropy(student_logits, labels, weights.ce, loss.label_smoothing, normalizer)
        total = total + loss.ce * ce
        terms["ce"] = float(ce.detach())
    if unlikelihood_weight > 0:
        ul = unlikelihood(student_logits, labels, weights.unlikelihood, normalizer)
        total = total + unlikelihood_weight * ul
        terms["unlikelihood"] = float(ul.detach())
    terms["total"] = float(total.detach())
    return total, terms
