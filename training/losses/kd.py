"""Knowledge-distillation losses as pure functions.

Conventions shared by every token-level loss in this module:

* Logits are ``(B, T, V)`` or ``(N, V)`` (``N`` flattened tokens); the matching token masks are
  ``(B, T)`` or ``(N,)``. A mask is bool (keep / drop) or float (a per-token weight). ``None`` keeps every
  token.
* The reduction is ``sum_tokens(mask * per_token_loss) / normalizer``. ``normalizer`` is the number of
  target tokens of the *whole optimizer step* (an int, float or 0-d tensor); by default it is the mask's
  own sum. It is always clamped to ``>= 1``. Passing the step's token count to every micro-batch makes
  ``sum_mb loss(mb, normalizer=total) == loss(full_batch)``, so gradients do not depend on how a batch is
  split for gradient accumulation. An all-masked batch gives exactly ``0`` with a finite (zero) gradient.
* Divergences are in nats per target token. With a temperature ``T`` both distributions are
  ``softmax(logits / T)`` and the divergence is multiplied by ``T**2`` (Hinton et al., 2015), which keeps
  the gradient magnitude w.r.t. the logits roughly independent of ``T``.
* The teacher is a constant: teacher tensors are detached. Half-precision inputs are upcast to float32;
  float64 stays float64.
* ``0 * log 0 = 0`` is handled with double ``torch.where`` so teacher ``-inf`` logits (top-k / top-p
  filtering) and extreme logits (``±1e4``) give neither NaN values nor NaN gradients.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from training.config_base import FrozenStrictModel

IGNORE_INDEX = -100

DivergenceName = Literal["forward_kl", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl"]
HiddenLossKind = Literal["mse", "cosine"]
Normalizer = int | float | Tensor | None

__all__ = [
    "DIVERGENCES",
    "IGNORE_INDEX",
    "DivergenceName",
    "HiddenLossKind",
    "HiddenProjector",
    "KDLossWeights",
    "combined_kd_loss",
    "cross_entropy",
    "forward_kl",
    "generalized_jsd",
    "hidden_state_loss",
    "kd_divergence",
    "resolve_normalizer",
    "reverse_kl",
    "skew_kl",
    "skew_reverse_kl",
    "sparse_topk_kl",
    "token_weights",
    "uniform_layer_map",
    # helpers shared with the process losses (training.reasoning.process_losses)
    "as_compute",
    "check_labels",
    "check_unit_interval",
    "connected_zero",
    "cross_entropy_per_token",
    "kl_rows",
    "reduce_weighted",
    "teacher_buckets",
]


# ----------------------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------------------


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Return the dtype losses are computed in: float64 stays float64, everything else becomes float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def as_compute(x: Tensor) -> Tensor:
    """Cast a floating tensor to its compute dtype: float64 stays float64, every other float dtype becomes
    float32 (see :func:`_compute_dtype`)."""
    if not x.is_floating_point():
        raise TypeError(f"expected a floating-point tensor, got {x.dtype}")
    return x.to(_compute_dtype(x.dtype))


def _check_temperature(temperature: float) -> None:
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")


def check_unit_interval(name: str, value: float) -> None:
    """Raise ``ValueError`` unless ``value`` is a number in ``[0, 1]``."""
    if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")


def token_weights(
    mask: Tensor | None, token_shape: torch.Size, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """Turn an optional token mask into float per-token weights.

    Args:
        mask: ``None`` (all tokens weigh 1), or a bool / numeric tensor of shape ``token_shape``
            (``(B, T)`` or ``(N,)``).
        token_shape: the logits' shape without the vocabulary axis.
        dtype: float dtype of the returned weights.
        device: device of the returned weights.

    Returns:
        Weights of shape ``token_shape`` (dimensionless).
    """
    if mask is None:
        return torch.ones(token_shape, dtype=dtype, device=device)
    if tuple(mask.shape) != tuple(token_shape):
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match token shape {tuple(token_shape)}")
    return mask.detach().to(device=device, dtype=dtype)


def resolve_normalizer(weights: Tensor, normalizer: Normalizer) -> Tensor:
    """Return the loss denominator as a 0-d tensor, clamped to ``>= 1``.

    Args:
        weights: per-token weights ``(B, T)`` or ``(N,)``; their sum is the default normalizer.
        normalizer: ``None``, or the number of target tokens in the whole optimizer step (int, float or 0-d
            tensor, must be finite and ``>= 0``).

    Returns:
        0-d tensor (tokens) with the dtype and device of ``weights``.
    """
    if normalizer is None:
        value = weights.sum()
    elif isinstance(normalizer, Tensor):
        if normalizer.numel() != 1:
            raise ValueError(f"normalizer must be a scalar, got shape {tuple(normalizer.shape)}")
        value = normalizer.detach().reshape(()).to(device=weights.device, dtype=weights.dtype)
    elif isinstance(normalizer, (int, float)) and not isinstance(normalizer, bool):
        if not math.isfinite(normalizer) or normalizer < 0:
            raise ValueError(f"normalizer must be finite and >= 0, got {normalizer!r}")
        value = torch.tensor(float(normalizer), dtype=weights.dtype, device=weights.device)
    else:
        raise TypeError(f"normalizer must be None, a number or a scalar tensor, got {type(normalizer)!r}")
    return value.clamp_min(1.0)


def reduce_weighted(per_token: Tensor, weights: Tensor, normalizer: Normalizer) -> Tensor:
    """``sum(weights * per_token) / normalizer``; tokens of weight 0 contribute exactly 0 even if non-finite.

    Args:
        per_token: per-token losses ``(B, T)`` or ``(N,)`` (nats).
        weights: per-token weights, same shape.
        normalizer: see :func:`resolve_normalizer`.

    Returns:
        0-d tensor (nats per target token).
    """
    kept = torch.where(weights != 0, per_token, torch.zeros_like(per_token))
    return (kept * weights).sum() / resolve_normalizer(weights, normalizer)


def _xlogy_diff(log_a: Tensor, log_b: Tensor) -> Tensor:
    """Elementwise ``a * (log a - log b)`` with ``0 * (...) = 0`` and NaN-free gradients.

    Args:
        log_a: log-probabilities ``(..., V)`` of the weighting distribution ``a``.
        log_b: log-probabilities ``(..., V)`` of ``b``.

    Returns:
        ``(..., V)`` tensor (nats).
    """
    a = log_a.exp()
    support = a > 0
    diff = torch.where(support, log_a - log_b, torch.zeros_like(log_a))
    return a * diff


def kl_rows(log_a: Tensor, log_b: Tensor) -> Tensor:
    """Per-row ``KL(a || b) = sum_v a_v (log a_v - log b_v)``: ``(..., V) -> (...)`` in nats."""
    return _xlogy_diff(log_a, log_b).sum(dim=-1)


def _log_mixture(log_a: Tensor, log_b: Tensor, weight_a: float) -> Tensor:
    """``log(weight_a * a + (1 - weight_a) * b)`` computed stably in log space: ``(..., V) -> (..., V)``."""
    log_wa = math.log(weight_a) if weight_a > 0 else -math.inf
    log_wb = math.log1p(-weight_a) if weight_a < 1 else -math.inf
    return torch.logaddexp(log_a + log_wa, log_b + log_wb)


def _floor_logprobs(logp: Tensor) -> Tensor:
    """Clamp log-probabilities to ``log(finfo.tiny)`` (-87.3 in float32, -708.4 in float64)."""
    return logp.clamp_min(math.log(torch.finfo(logp.dtype).tiny))


def connected_zero(x: Tensor) -> Tensor:
    """A 0-d zero that is part of ``x``'s graph (zero, finite gradient even if ``x`` holds infinities)."""
    return torch.where(torch.zeros_like(x, dtype=torch.bool), x, torch.zeros_like(x)).sum()


def check_labels(logits: Tensor, labels: Tensor, *, min_logits_dim: int = 0) -> None:
    """Raise unless ``labels`` is an integer tensor of shape ``logits.shape[:-1]`` (and ``logits`` has at least
    ``min_logits_dim`` axes)."""
    if logits.dim() < min_logits_dim or tuple(labels.shape) != tuple(logits.shape[:-1]):
        raise ValueError(f"labels shape {tuple(labels.shape)} does not match logits {tuple(logits.shape)}")
    if labels.dtype == torch.bool or labels.is_floating_point():
        raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")


def _prepare_pair(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float
) -> tuple[Tensor, Tensor]:
    """Validate shapes and return tempered log-probs ``(log q_T, log p_T)``, both ``(..., V)``."""
    _check_temperature(temperature)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} must have the same shape"
        )
    if student_logits.dim() < 2:
        raise ValueError(f"logits must be (B, T, V) or (N, V), got shape {tuple(student_logits.shape)}")
    s = as_compute(student_logits)
    t = as_compute(teacher_logits.detach()).to(s.dtype)
    log_q = F.log_softmax(s / temperature, dim=-1)
    log_p = F.log_softmax(t / temperature, dim=-1)
    return log_q, log_p


def _oriented(log_q: Tensor, log_p: Tensor, reverse: bool) -> tuple[Tensor, Tensor]:
    """``(log a, log b)`` of ``KL(a || .)``: ``(log p, log q)`` forward, ``(log q, floored log p)`` reverse
    (see :func:`_floor_logprobs`)."""
    return (log_q, _floor_logprobs(log_p)) if reverse else (log_p, log_q)


def _skew(student_logits: Tensor, teacher_logits: Tensor, alpha: float, mask: Tensor | None,
          temperature: float, normalizer: Normalizer, *, reverse: bool) -> Tensor:
    """``T**2 * KL(a || alpha * a + (1 - alpha) * b)`` with ``(a, b)`` from :func:`_oriented`."""
    check_unit_interval("alpha", alpha)
    log_a, log_b = _oriented(*_prepare_pair(student_logits, teacher_logits, temperature), reverse)
    return _finish(kl_rows(log_a, _log_mixture(log_a, log_b, alpha)), mask, normalizer, temperature)


def _finish(per_token: Tensor, mask: Tensor | None, normalizer: Normalizer, temperature: float) -> Tensor:
    """Scale per-token divergences ``(...)`` by ``T**2``, mask and normalise to a 0-d loss (nats/token)."""
    weights = token_weights(mask, per_token.shape, per_token.dtype, per_token.device)
    return reduce_weighted(per_token * (temperature**2), weights, normalizer)


# ----------------------------------------------------------------------------------------------------------
# Logit divergences
# ----------------------------------------------------------------------------------------------------------


def forward_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor | None = None,
    temperature: float = 1.0,
    normalizer: Normalizer = None,
) -> Tensor:
    """Forward KL ``T**2 * KL(p_T || q_T)`` with ``p_T = softmax(teacher/T)``, ``q_T = softmax(student/T)``.

    Mode-covering distillation loss (Hinton et al., 2015). Teacher entries at ``-inf`` have zero
    probability and contribute nothing.

    Args:
        student_logits: ``(B, T, V)`` or ``(N, V)``.
        teacher_logits: same shape as ``student_logits`` (detached).
        mask: ``(B, T)`` / ``(N,)`` bool or float token weights, or ``None`` for all tokens.
        temperature: softmax temperature ``T > 0``.
        normalizer: target-token count of the optimizer step (default: the mask's sum), clamped to ``>= 1``.

    Returns:
        0-d tensor: masked sum of per-token divergences / normalizer (nats per target token).
    """
    log_a, log_b = _oriented(*_prepare_pair(student_logits, teacher_logits, temperature), reverse=False)
    return _finish(kl_rows(log_a, log_b), mask, normalizer, temperature)


def reverse_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor | None = None,
    temperature: float = 1.0,
    normalizer: Normalizer = None,
) -> Tensor:
    """Reverse KL ``T**2 * KL(q_T || p_T)`` (mode-seeking; MiniLLM-style).

    The teacher's log-probabilities are floored at ``log(finfo(dtype).tiny)`` (-87.3 in float32, -708.4 in
    float64) so zero-probability teacher entries (``-inf`` logits from top-k filtering) give a large finite
    penalty instead of ``+inf``.

    Args:
        student_logits: ``(B, T, V)`` or ``(N, V)``.
        teacher_logits: same shape as ``student_logits`` (detached).
        mask: ``(B, T)`` / ``(N,)`` bool or float token weights, or ``None`` for all tokens.
        temperature: softmax temperature ``T > 0``.
        normalizer: target-token count of the optimizer step (default: the mask's sum), clamped to ``>= 1``.

    Returns:
        0-d tensor (nats per target token).
    """
    log_a, log_b = _oriented(*_prepare_pair(student_logits, teacher_logits, temperature), reverse=True)
    return _finish(kl_rows(log_a, log_b), mask, normalizer, temperature)


def generalized_jsd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    beta: float = 0.5,
    mask: Tensor | None = None,
    temperature: float = 1.0,
    normalizer: Normalizer = None,
) -> Tensor:
    """Generalized Jensen-Shannon divergence ``T**2 * JSD_beta(p_T || q_T)``.

    Convention (GKD paper, Agarwal et al. 2024, eq. as written there, *not* TRL's endpoint remapping):
    ``JSD_beta = beta * KL(p || m) + (1 - beta) * KL(q || m)`` with ``m = beta * p + (1 - beta) * q``.
    At ``beta = 0`` and ``beta = 1`` the mixture equals one of the two distributions and the divergence is
    identically zero; this function returns exactly ``0`` there (with a zero gradient). Use
    :func:`forward_kl` / :func:`reverse_kl` for the KL endpoints. ``beta = 0.5`` is the symmetric JSD,
    bounded by ``T**2 * log 2``.

    Args:
        student_logits: ``(B, T, V)`` or ``(N, V)``.
        teacher_logits: same shape as ``student_logits`` (detached).
        beta: mixture weight of the teacher, in ``[0, 1]``.
        mask: ``(B, T)`` / ``(N,)`` bool or float token weights, or ``None`` for all tokens.
        temperature: softmax temperature ``T > 0``.
        normalizer: target-token count of the optimizer step (default: the mask's sum), clamped to ``>= 1``.

    Returns:
        0-d tensor (nats per target token).
    """
    check_unit_interval("beta", beta)
    log_q, log_p = _prepare_pair(student_logits, teacher_logits, temperature)
    if beta in (0.0, 1.0):
        return connected_zero(log_q)
    log_m = _log_mixture(log_p, log_q, beta)
    per_token = beta * kl_rows(log_p, log_m) + (1.0 - beta) * kl_rows(log_q, log_m)
    return _finish(per_token, mask, normalizer, temperature)


def skew_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    alpha: float = 0.1,
    mask: Tensor | None = None,
    temperature: float = 1.0,
    normalizer: Normalizer = None,
) -> Tensor:
    """Skew forward KL ``T**2 * KL(p_T || alpha * p_T + (1 - alpha) * q_T)`` (DistiLLM, Ko et al. 2024).

    ``alpha = 0`` is the forward KL, ``alpha = 1`` is identically zero.

    Args:
        student_logits: ``(B, T, V)`` or ``(N, V)``.
        teacher_logits: same shape as ``student_logits`` (detached).
        alpha: skew (weight of the teacher in the mixture), in ``[0, 1]``.
        mask: ``(B, T)`` / ``(N,)`` bool or float token weights, or ``None`` for all tokens.
        temperature: softmax temperature ``T > 0``.
        normalizer: target-token count of the optimizer step (default: the mask's sum), clamped to ``>= 1``.

    Returns:
        0-d tensor (nats per target token).
    """
    return _skew(student_logits, teacher_logits, alpha, mask, temperature, normalizer, reverse=False)


def skew_reverse_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    alpha: float = 0.1,
    mask: Tensor | None = None,
    temperature: float = 1.0,
    normalizer: Normalizer = None,
) -> Tensor:
    """Skew reverse KL ``T**2 * KL(q_T || alpha * q_T + (1 - alpha) * p_T)`` (DistiLLM, Ko et al. 2024).

    ``alpha = 0`` is the reverse KL (teacher log-probs floored as in :func:`reverse_kl`), ``alpha = 1`` is
    identically zero.

    Args:
        student_logits: ``(B, T, V)`` or ``(N, V)``.
        teacher_logits: same shape as ``student_logits`` (detached).
        alpha: skew (weight of the student in the mixture), in ``[0, 1]``.
        mask: ``(B, T)`` / ``(N,)`` bool or float token weights, or ``None`` for all tokens.
        temperature: softmax temperature ``T > 0``.
        normalizer: target-token count of the optimizer step (default: the mask's sum), clamped to ``>= 1``.

    Returns:
        0-d tensor (nats per target token).
    """
    return _skew(student_logits, teacher_logits, alpha, mask, temperature, normalizer, reverse=True)


DIVERGENCES: dict[str, Callable[..., Tensor]] = {
    "forward_kl": forward_kl,
    "reverse_kl": reverse_kl,
    "jsd": generalized_jsd,
    "skew_kl": skew_kl,
    "skew_reverse_kl": skew_reverse_kl,
}


def divergence_kwargs(name: str, *, jsd_beta: float, skew_alpha: float) -> dict[str, float]:
    """The extra keyword arguments of :func:`kd_divergence` for divergence ``name``: ``{'beta': jsd_beta}`` for
    ``'jsd'``, ``{'alpha': skew_alpha}`` for the skew divergences, nothing otherwise. The one place that maps
    config settings to divergence arguments (trainer, chunked loss, process losses, :class:`KDLossWeights`)."""
    if name == "jsd":
        return {"beta": jsd_beta}
    if name in ("skew_kl", "skew_reverse_kl"):
        return {"alpha": skew_alpha}
    return {}


def kd_divergence(name: str, student_logits: Tensor, teacher_logits: Tensor, **kw: Any) -> Tensor:
    """Dispatch to a logit divergence by name.

    Args:
        name: one of ``'forward_kl'``, ``'reverse_kl'``, ``'jsd'``, ``'skew_kl'``, ``'skew_reverse_kl'``.
        student_logits: ``(B, T, V)`` or ``(N, V)``.
        teacher_logits: same shape.
        **kw: keyword arguments of the chosen function (``mask``, ``temperature``, ``normalizer``, and
            ``beta`` for ``'jsd'`` or ``alpha`` for the skew divergences).

    Returns:
        0-d tensor (nats per target token).
    """
    try:
        fn = DIVERGENCES[name]
    except KeyError:
        raise ValueError(f"unknown divergence {name!r}; expected one of {sorted(DIVERGENCES)}") from None
    return fn(student_logits, teacher_logits, **kw)


# ----------------------------------------------------------------------------------------------------------
# Cross-entropy and sparse top-k KD
# ----------------------------------------------------------------------------------------------------------


def cross_entropy(
    logits: Tensor,
    labels: Tensor,
    label_smoothing: float = 0.0,
    normalizer: Normalizer = None,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """Token cross-entropy with label smoothing; tokens whose label is ``ignore_index`` are skipped.

    Per token: ``(1 - eps) * (-log q_y) + eps * mean_v(-log q_v)`` (the same definition as
    ``torch.nn.functional.cross_entropy(label_smoothing=eps)``).

    Args:
        logits: ``(B, T, V)`` or ``(N, V)``.
        labels: int64 ``(B, T)`` or ``(N,)`` in ``[0, V)`` or equal to ``ignore_index``.
        label_smoothing: ``eps`` in ``[0, 1]``.
        normalizer: target-token count of the optimizer step (default: number of non-ignored labels),
            clamped to ``>= 1``.
        ignore_index: label value that marks tokens without a target.

    Returns:
        0-d tensor (nats per target token).
    """
    check_unit_interval("label_smoothing", label_smoothing)
    check_labels(logits, labels)
    per_token, valid = cross_entropy_per_token(logits, labels, label_smoothing, ignore_index)
    return reduce_weighted(per_token, valid.to(per_token.dtype), normalizer)


def cross_entropy_per_token(
    logits: Tensor, labels: Tensor, label_smoothing: float = 0.0, ignore_index: int = IGNORE_INDEX
) -> tuple[Tensor, Tensor]:
    """Per-token cross-entropy ``(1 - eps) * (-log q_y) + eps * mean_v(-log q_v)``, unreduced and unchecked.

    Args:
        logits: ``(B, T, V)`` or ``(N, V)``.
        labels: int64 ``(B, T)`` or ``(N,)``; ``ignore_index`` entries are scored against token 0.
        label_smoothing: ``eps``.
        ignore_index: label value that marks tokens without a target.

    Returns:
        ``(per_token, valid)``: the losses ``(B, T)`` / ``(N,)`` (nats, in the compute dtype) and the bool
        mask of the labels that are not ``ignore_index``.
    """
    log_q = F.log_softmax(as_compute(logits), dim=-1)
    valid = labels != ignore_index
    safe = torch.where(valid, labels, torch.zeros_like(labels)).long()
    nll = -log_q.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    per_token = (
        nll if label_smoothing == 0.0 else (1.0 - label_smoothing) * nll - label_smoothing * log_q.mean(-1)
    )
    return per_token, valid


def _masked_logsumexp(x: Tensor, drop: Tensor) -> Tensor:
    """``logsumexp`` over the last axis of ``x`` ignoring entries where ``drop`` is True.

    Rows with nothing left give ``-inf`` with a zero (not NaN) gradient.

    Args:
        x: ``(..., V)``.
        drop: bool ``(..., V)``.

    Returns:
        ``(...)``.
    """
    neg_inf = torch.full_like(x, -math.inf)
    kept = torch.where(drop, neg_inf, x)
    row_max = kept.amax(dim=-1, keepdim=True).detach()
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    sums = torch.exp(kept - row_max).sum(dim=-1)
    positive = sums > 0
    safe = torch.where(positive, sums, torch.ones_like(sums))
    out = torch.log(safe) + row_max.squeeze(-1)
    return torch.where(positive, out, torch.full_like(out, -math.inf))


def sparse_topk_kl(
    student_logits: Tensor,
    teacher_topk_ids: Tensor,
    teacher_topk_logprobs: Tensor,
    mask: Tensor | None = None,
    temperature: float = 1.0,
    normalizer: Normalizer = None,
) -> Tensor:
    """Forward KL against a sparse top-k teacher, over ``K + 1`` buckets (the K ids plus a tail bucket).

    Teacher buckets: the K listed probabilities and a tail of mass ``max(0, 1 - sum_k p_k)``, renormalised
    over the ``K + 1`` buckets (this absorbs rounding of stored log-probs). A tail below the rounding error
    of the sum (``K * finfo.eps``), or any tail when ``K = V``, counts as empty. Student buckets: its
    probabilities on the same K ids and its remaining mass ``logsumexp`` over all other ids (computed with
    the K ids masked out, no cancellation). Loss per token: ``T**2 * KL(teacher buckets || student
    buckets)``.

    Temperature: the student is ``softmax(student_logits / T)`` over the full vocabulary; the teacher
    buckets are re-tempered as ``log_softmax(log b / T)`` over the ``K + 1`` buckets. That is exact when the
    tail is empty (e.g. ``K = V``) and otherwise treats the tail as a single atom.

    Args:
        student_logits: ``(B, T, V)`` or ``(N, V)``.
        teacher_topk_ids: int64 ``(B, T, K)`` / ``(N, K)``, distinct ids in ``[0, V)`` per token.
        teacher_topk_logprobs: ``(B, T, K)`` / ``(N, K)`` teacher log-probabilities at temperature 1
            (``-inf`` allowed for padded slots); detached.
        mask: ``(B, T)`` / ``(N,)`` bool or float token weights, or ``None`` for all tokens.
        temperature: softmax temperature ``T > 0``.
        normalizer: target-token count of the optimizer step (default: the mask's sum), clamped to ``>= 1``.

    Returns:
        0-d tensor (nats per target token).
    """
    _check_temperature(temperature)
    if teacher_topk_ids.shape != teacher_topk_logprobs.shape:
        raise ValueError(
            f"top-k ids {tuple(teacher_topk_ids.shape)} and log-probs {tuple(teacher_topk_logprobs.shape)} differ"
        )
    if tuple(teacher_topk_ids.shape[:-1]) != tuple(student_logits.shape[:-1]):
        raise ValueError(
            f"top-k shape {tuple(teacher_topk_ids.shape)} does not match logits {tuple(student_logits.shape)}"
        )
    vocab = student_logits.shape[-1]
    k = teacher_topk_ids.shape[-1]
    if not 1 <= k <= vocab:
        raise ValueError(f"K must be in [1, V={vocab}], got {k}")
    ids = teacher_topk_ids.long()

    s = as_compute(student_logits)
    log_q_full = F.log_softmax(s / temperature, dim=-1)
    log_q_topk = log_q_full.gather(-1, ids)
    in_topk = torch.zeros_like(log_q_full, dtype=torch.bool).scatter_(-1, ids, True)
    log_q_tail = _masked_logsumexp(log_q_full, in_topk)
    log_q = torch.cat([log_q_topk, log_q_tail.unsqueeze(-1)], dim=-1)

    log_p = teacher_buckets(teacher_topk_logprobs.detach().to(s.dtype), vocab, temperature)
    return _finish(kl_rows(log_p, log_q), mask, normalizer, temperature)


def teacher_buckets(topk_logprobs: Tensor, vocab: int, temperature: float) -> Tensor:
    """Teacher log-probabilities over ``K + 1`` buckets (the K ids, then the tail), re-tempered: the teacher
    side of :func:`sparse_topk_kl` (and of :mod:`training.losses.sparse_kd_ce`).

    The tail has mass ``max(0, 1 - sum_k p_k)``; below the rounding error of that sum (``K * finfo.eps``), or
    whenever ``K == V``, it counts as empty. The buckets are renormalised as ``log_softmax(log b / T)``.

    Args:
        topk_logprobs: ``(..., K)`` float teacher log-probabilities at temperature 1 (``-inf`` allowed), constants.
        vocab: V, the vocabulary size.
        temperature: ``T > 0``.

    Returns:
        ``(..., K + 1)`` log-probabilities (``-inf`` for empty buckets).
    """
    k = topk_logprobs.shape[-1]
    # 1 - sum(p_k) carries a rounding error of about K * eps; anything below that is no tail. With K = V
    # the ids cover the vocabulary and the tail is empty by construction.
    tail_mass = 1.0 - topk_logprobs.exp().sum(dim=-1)
    has_tail = tail_mass > k * torch.finfo(topk_logprobs.dtype).eps
    if k == vocab:
        has_tail = torch.zeros_like(has_tail)
    log_tail = torch.where(
        has_tail, torch.log(torch.where(has_tail, tail_mass, torch.ones_like(tail_mass))), -math.inf
    )
    buckets = torch.cat([topk_logprobs, log_tail.unsqueeze(-1)], dim=-1)
    if temperature != 1.0:
        buckets = buckets / temperature
    return F.log_softmax(buckets, dim=-1)


# ----------------------------------------------------------------------------------------------------------
# Hidden-state losses
# ----------------------------------------------------------------------------------------------------------


def uniform_layer_map(num_student_layers: int, num_teacher_layers: int) -> dict[int, int]:
    """Map each student layer ``i`` to teacher layer ``floor((i + 1) * L_t / L_s) - 1``.

    Layers are spread evenly and the last student layer maps to the last teacher layer (e.g. 4 -> 12 gives
    ``{0: 2, 1: 5, 2: 8, 3: 11}``). Indices are positions in the hidden-state lists handed to
    :func:`hidden_state_loss`.

    Args:
        num_student_layers: ``L_s >= 1``.
        num_teacher_layers: ``L_t >= L_s``.

    Returns:
        ``{student_layer: teacher_layer}``.
    """
    if num_student_layers < 1 or num_teacher_layers < num_student_layers:
        raise ValueError(
            f"need 1 <= num_student_layers <= num_teacher_layers, got {num_student_layers}, {num_teacher_layers}"
        )
    return {i: (i + 1) * num_teacher_layers // num_student_layers - 1 for i in range(num_student_layers)}


class HiddenProjector(nn.Module):
    """Learned projection of student hidden states into the teacher's width, one per mapped layer.

    Holds one ``nn.Linear(student_dim, teacher_dim)`` per mapped student layer when the widths differ and
    no parameters (identity) when they are equal.
    """

    def __init__(
        self, student_dim: int, teacher_dim: int, layer_map: Mapping[int, int], bias: bool = False
    ) -> None:
        """Build the projector.

        Args:
            student_dim: student hidden width ``H_s``.
            teacher_dim: teacher hidden width ``H_t``.
            layer_map: ``{student_layer: teacher_layer}`` (non-negative indices, at least one entry).
            bias: whether the linear projections have a bias.
        """
        super().__init__()
        if student_dim < 1 or teacher_dim < 1:
            raise ValueError(f"hidden widths must be >= 1, got {student_dim}, {teacher_dim}")
        if not layer_map:
            raise ValueError("layer_map must map at least one student layer")
        if any(s < 0 or t < 0 for s, t in layer_map.items()):
            raise ValueError(f"layer indices must be >= 0, got {dict(layer_map)}")
        self.student_dim = student_dim
        self.teacher_dim = teacher_dim
        self._layer_map = {int(s): int(t) for s, t in sorted(layer_map.items())}
        self.projections = nn.ModuleDict(
            {str(s): nn.Linear(student_dim, teacher_dim, bias=bias) for s in self._layer_map}
            if student_dim != teacher_dim
            else {}
        )

    @property
    def layer_map(self) -> dict[int, int]:
        """``{student_layer: teacher_layer}`` (a copy)."""
        return dict(self._layer_map)

    def forward(self, student_layer: int, hidden: Tensor) -> Tensor:
        """Project one student layer's hidden states ``(..., H_s) -> (..., H_t)``."""
        if student_layer not in self._layer_map:
            raise KeyError(f"student layer {student_layer} is not in the layer map {self._layer_map}")
        if hidden.shape[-1] != self.student_dim:
            raise ValueError(f"expected hidden width {self.student_dim}, got {hidden.shape[-1]}")
        if self.student_dim == self.teacher_dim:
            return hidden
        return self.projections[str(student_layer)](hidden)


def hidden_state_loss(
    student_hidden: Sequence[Tensor],
    teacher_hidden: Sequence[Tensor],
    projector: HiddenProjector,
    kind: HiddenLossKind = "mse",
    mask: Tensor | None = None,
    normalizer: Normalizer = None,
) -> Tensor:
    """Hidden-state matching loss averaged over the projector's layer map.

    For each mapped pair ``(s, t)``: ``h = projector(s, student_hidden[s])`` and per token either
    ``mean_H (h - teacher_hidden[t])**2`` (``'mse'``, squared hidden units averaged over the teacher width)
    or ``1 - cos(h, teacher_hidden[t])`` (``'cosine'``, dimensionless, in ``[0, 2]``). Tokens are reduced
    as ``sum(mask * loss) / normalizer`` and the result is averaged over mapped layers.

    Args:
        student_hidden: per-layer student states, each ``(B, T, H_s)`` or ``(N, H_s)``.
        teacher_hidden: per-layer teacher states, each ``(B, T, H_t)`` or ``(N, H_t)`` (detached).
        projector: maps student width to teacher width and holds the layer map.
        kind: ``'mse'`` or ``'cosine'``.
        mask: ``(B, T)`` / ``(N,)`` bool or float token weights, or ``None`` for all tokens.
        normalizer: target-token count of the optimizer step (default: the mask's sum), clamped to ``>= 1``.

    Returns:
        0-d tensor (see ``kind`` for units).
    """
    if kind not in ("mse", "cosine"):
        raise ValueError(f"kind must be 'mse' or 'cosine', got {kind!r}")
    terms = []
    for s_idx, t_idx in projector.layer_map.items():
        if s_idx >= len(student_hidden) or t_idx >= len(teacher_hidden):
            raise IndexError(
                f"layer map entry {s_idx}->{t_idx} out of range for {len(student_hidden)} student / "
                f"{len(teacher_hidden)} teacher hidden states"
            )
        h = as_compute(projector(s_idx, student_hidden[s_idx]))
        target = as_compute(teacher_hidden[t_idx].detach()).to(h.dtype)
        if h.shape != target.shape:
            raise ValueError(f"projected student {tuple(h.shape)} vs teacher {tuple(target.shape)} mismatch")
        if kind == "mse":
            per_token = (h - target).pow(2).mean(dim=-1)
        else:
            per_token = 1.0 - F.cosine_similarity(h, target, dim=-1, eps=1e-8)
        weights = token_weights(mask, per_token.shape, per_token.dtype, per_token.device)
        terms.append(reduce_weighted(per_token, weights, normalizer))
    return torch.stack(terms).mean()


# ----------------------------------------------------------------------------------------------------------
# Weighted combination
# ----------------------------------------------------------------------------------------------------------


class KDLossWeights(FrozenStrictModel):
    """Weights and divergence settings of the combined distillation objective (validated at the edge)."""

    kd: float = Field(1.0, ge=0.0, allow_inf_nan=False, description="weight of the logit divergence")
    ce: float = Field(0.0, ge=0.0, allow_inf_nan=False, description="weight of the hard-label CE")
    hidden: float = Field(0.0, ge=0.0, allow_inf_nan=False, description="weight of the hidden-state loss")
    divergence: DivergenceName = "forward_kl"
    temperature: float = Field(1.0, gt=0.0, allow_inf_nan=False)
    jsd_beta: float = Field(0.5, ge=0.0, le=1.0)
    skew_alpha: float = Field(0.1, ge=0.0, le=1.0)
    label_smoothing: float = Field(0.0, ge=0.0, le=1.0)
    hidden_kind: HiddenLossKind = "mse"

    def divergence_kwargs(self) -> dict[str, float]:
        """Extra keyword arguments of :func:`kd_divergence` for the chosen divergence."""
        return divergence_kwargs(self.divergence, jsd_beta=self.jsd_beta, skew_alpha=self.skew_alpha)


def combined_kd_loss(
    student_logits: Tensor,
    weights: KDLossWeights,
    *,
    teacher_logits: Tensor | None = None,
    teacher_topk_ids: Tensor | None = None,
    teacher_topk_logprobs: Tensor | None = None,
    labels: Tensor | None = None,
    mask: Tensor | None = None,
    normalizer: Normalizer = None,
    student_hidden: Sequence[Tensor] | None = None,
    teacher_hidden: Sequence[Tensor] | None = None,
    projector: HiddenProjector | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """``kd * divergence + ce * cross_entropy + hidden * hidden_state_loss``.

    Terms with weight 0 are not computed (reported as 0.0). The KD and hidden terms use ``mask``; if it is
    ``None`` and ``labels`` are given they use ``labels != -100``, otherwise every token. The KD term uses
    dense ``teacher_logits`` when given, else the sparse top-k teacher (forward KL only).

    Args:
        student_logits: ``(B, T, V)`` or ``(N, V)``.
        weights: the validated weights / divergence settings.
        teacher_logits: ``(B, T, V)`` / ``(N, V)``, or ``None`` when a top-k teacher is given.
        teacher_topk_ids: int64 ``(B, T, K)`` / ``(N, K)``.
        teacher_topk_logprobs: ``(B, T, K)`` / ``(N, K)``.
        labels: int64 ``(B, T)`` / ``(N,)`` with ``-100`` for ignored tokens (needed when ``ce > 0``).
        mask: ``(B, T)`` / ``(N,)`` token weights for the KD and hidden terms.
        normalizer: target-token count of the optimizer step, passed to every term.
        student_hidden: per-layer student states ``(B, T, H_s)`` (needed when ``hidden > 0``).
        teacher_hidden: per-layer teacher states ``(B, T, H_t)``.
        projector: the :class:`HiddenProjector`.

    Returns:
        ``(total, terms)``: total is a 0-d tensor; terms maps ``'kd'``, ``'ce'``, ``'hidden'`` (unweighted)
        and ``'total'`` to detached Python floats for logging.
    """
    if mask is None and labels is not None:
        mask = labels != IGNORE_INDEX
    total = connected_zero(student_logits).to(_compute_dtype(student_logits.dtype))
    terms = {"kd": 0.0, "ce": 0.0, "hidden": 0.0}
    if weights.kd > 0:
        if teacher_logits is not None:
            kd = kd_divergence(
                weights.divergence,
                student_logits,
                teacher_logits,
                mask=mask,
                temperature=weights.temperature,
                normalizer=normalizer,
                **weights.divergence_kwargs(),
            )
        elif teacher_topk_ids is not None and teacher_topk_logprobs is not None:
            if weights.divergence != "forward_kl":
                raise ValueError(
                    f"the sparse top-k teacher supports forward_kl only, not {weights.divergence!r}"
                )
            kd = sparse_topk_kl(
                student_logits,
                teacher_topk_ids,
                teacher_topk_logprobs,
                mask=mask,
                temperature=weights.temperature,
                normalizer=normalizer,
            )
        else:
            raise ValueError("kd > 0 needs teacher_logits or teacher_topk_ids + teacher_topk_logprobs")
        total = total + weights.kd * kd
        terms["kd"] = float(kd.detach())
    if weights.ce > 0:
        if labels is None:
            raise ValueError("ce > 0 needs labels")
        ce = cross_entropy(student_logits, labels, weights.label_smoothing, normalizer)
        total = total + weights.ce * ce
        terms["ce"] = float(ce.detach())
    if weights.hidden > 0:
        if student_hidden is None or teacher_hidden is None or projector is None:
            raise ValueError("hidden > 0 needs student_hidden, teacher_hidden and projector")
        hid = hidden_state_loss(
            student_hidden, teacher_hidden, projector, weights.hidden_kind, mask, normalizer
        )
        total = total + weights.hidden * hid.to(total.dtype)
        terms["hidden"] = float(hid.detach())
    terms["total"] = float(total.detach())
    return total, terms
