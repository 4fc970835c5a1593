"""Sparse top-k KD + cross-entropy on student logits in one pass, with closed-form logit gradients.

The composed path (:func:`training.losses.sparse_topk_kl` plus :func:`training.losses.cross_entropy`) runs
two full-vocabulary ``log_softmax`` calls and a masked ``logsumexp`` built from ``full_like`` / ``where`` /
``exp`` / ``sum``, and autograd then walks back through every one of those ``(N, V)`` intermediates. At the
SmolLM2 shape (V = 49,152) that made a KD step cost 1.39x a CE step (BENCHMARKS.md). Here one
:class:`torch.autograd.Function` computes both terms and ``dL/dlogits`` in its forward, in a single
``(N, V)`` buffer that is overwritten in place (about six passes over it); ``backward`` rescales that
buffer by ``grad_output``.

Definitions (identical to the composed path, which the tests use as the reference):

* KD: ``T**2 * KL(teacher buckets || student buckets)`` over ``K + 1`` buckets, the K teacher ids plus a
  tail, exactly as :func:`training.losses.sparse_topk_kl` defines them (teacher tail renormalised, student
  tail = ``logsumexp`` over the non-top-k ids, computed with those ids masked out: no cancellation).
* CE: token cross-entropy at temperature 1 with label smoothing ``eps``, as
  :func:`training.losses.cross_entropy`.

Gradients, with ``z = s / T``, ``q = softmax(z)``, ``q_tail`` the student tail mass and ``p`` the teacher
buckets: ``d KD / d s_v = T * (q_v - p_k)`` for the k-th listed id and ``T * q_v * (1 - p_tail / q_tail)``
for every other id; ``d CE / d s_v = softmax(s)_v - (1 - eps) [v = y] - eps / V``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from training.losses.closed_form import apply_closed_form, check_settings, row_weights, subtract_ce_targets
from training.losses.kd import IGNORE_INDEX, Normalizer, kl_rows, teacher_buckets

__all__ = ["SparseKDCETerms", "sparse_kd_ce_logit_grad", "sparse_kd_ce_loss"]


@dataclass(frozen=True)
class SparseKDCETerms:
    """The unweighted terms of one call as detached 0-d tensors (nats per target token; no host sync)."""

    kd: Tensor
    ce: Tensor


def sparse_kd_ce_logit_grad(
    logits: Tensor,
    topk_ids: Tensor,
    topk_logprobs: Tensor,
    labels: Tensor,
    kd_rows: Tensor,
    kd_norm: Tensor,
    ce_norm: Tensor,
    *,
    kd_weight: float,
    ce_weight: float,
    temperature: float,
    label_smoothing: float,
    ignore_index: int = IGNORE_INDEX,
    owned: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """The two terms and ``d(kd_weight * KD + ce_weight * CE) / d logits`` in closed form (no autograd).

    Args:
        logits: ``(N, V)`` float32/float64 student logits (constants here); overwritten when ``owned``.
        topk_ids: int ``(N, K)`` teacher ids.
        topk_logprobs: ``(N, K)`` teacher log-probabilities at temperature 1.
        labels: int64 ``(N,)``, ``ignore_index`` for no target.
        kd_rows: ``(N,)`` float KD token weights.
        kd_norm: 0-d KD normalizer (tokens); ce_norm: 0-d CE normalizer (tokens).
        kd_weight, ce_weight: term weights (0 skips a term); temperature: KD ``T > 0``;
        label_smoothing: CE ``eps``; ignore_index: label without a target.
        owned: the caller hands ``logits`` over (e.g. a fresh ``h @ W.T`` chunk): it becomes the gradient buffer
            instead of being copied.

    Returns:
        ``(kd_term, ce_term, dlogits)``: 0-d unweighted terms (each divided by its normalizer) and ``(N, V)``.
    """
    vocab = logits.shape[-1]
    s = logits
    # buf is z = s / T; a copy unless the caller handed the logits over (then s is not read again at T = 1)
    buf = s / temperature if temperature != 1.0 else (s if owned else s.clone())
    lse = torch.logsumexp(buf, dim=-1)  # (N,)
    zero = buf.new_zeros(())
    kd_term, ce_term = zero, zero

    if ce_weight != 0.0:
        valid = labels != ignore_index
        safe = torch.where(valid, labels, torch.zeros_like(labels)).unsqueeze(-1)
        lse1 = lse if temperature == 1.0 else torch.logsumexp(s, dim=-1)
        nll = lse1 - s.gather(-1, safe).squeeze(-1)
        eps = label_smoothing
        row_ce = nll if eps == 0.0 else (1.0 - eps) * nll - eps * (s.mean(dim=-1) - lse1)
        ce_term = torch.where(valid, row_ce, torch.zeros_like(row_ce)).sum() / ce_norm
        ce_rows = (ce_weight / ce_norm) * valid.to(buf.dtype)  # (N,) gradient scale of CE per row

    if kd_weight != 0.0:
        ids = topk_ids.long()
        zk = buf.gather(-1, ids)  # (N, K)
        log_qk = zk - lse.unsqueeze(-1)
        buf.scatter_(-1, ids, -math.inf)  # buf: z with the listed ids masked out
        lse_tail = torch.logsumexp(buf, dim=-1)  # (N,), -inf when the ids cover the vocabulary
        log_q = torch.cat([log_qk, (lse_tail - lse).unsqueeze(-1)], dim=-1)
        log_p = teacher_buckets(topk_logprobs.detach().to(buf.dtype), vocab, temperature)
        row_kl = kl_rows(log_p, log_q) * (temperature * temperature)
        kd_term = (torch.where(kd_rows != 0, row_kl, torch.zeros_like(row_kl)) * kd_rows).sum() / kd_norm
        kd_scale = (kd_weight * temperature / kd_norm) * kd_rows  # (N,) gradient scale of KD per row
        # non-listed ids: T q_v (1 - p_tail / q_tail); p_tail = 0 (no tail) gives factor 1
        log_p_tail = log_p[:, -1]
        ratio = torch.where(torch.isfinite(log_p_tail), torch.exp(log_p_tail - (lse_tail - lse)),
                            torch.zeros_like(log_p_tail))
        buf.sub_(lse.unsqueeze(-1)).exp_()  # q_v off the listed ids, 0 on them
        q_topk = log_qk.exp()
        kept = kd_rows != 0  # rows of weight 0 get exactly 0 even where their factor is not finite
        other = torch.where(kept, kd_scale * (1.0 - ratio), torch.zeros_like(ratio))
        listed = torch.where(kept.unsqueeze(-1), kd_scale.unsqueeze(-1) * (q_topk - log_p[:, :-1].exp()),
                             torch.zeros_like(q_topk))
        if ce_weight != 0.0 and temperature == 1.0:  # CE shares q: one pass for both terms
            other = other + ce_rows
            listed = listed + ce_rows.unsqueeze(-1) * q_topk
            buf.mul_(other.unsqueeze(-1)).scatter_(-1, ids, listed)
            subtract_ce_targets(buf, safe, ce_rows, label_smoothing, vocab)
        else:
            buf.mul_(other.unsqueeze(-1)).scatter_(-1, ids, listed)
            if ce_weight != 0.0:
                grad_ce = (s - lse1.unsqueeze(-1)).exp_().mul_(ce_rows.unsqueeze(-1))
                subtract_ce_targets(grad_ce, safe, ce_rows, label_smoothing, vocab)
                buf.add_(grad_ce)
                del grad_ce
    elif ce_weight != 0.0:
        buf = (s - lse1.unsqueeze(-1)).exp_().mul_(ce_rows.unsqueeze(-1))
        subtract_ce_targets(buf, safe, ce_rows, label_smoothing, vocab)
    else:
        buf = buf.zero_() if buf is not s else torch.zeros_like(s)
    return kd_term, ce_term, buf


def sparse_kd_ce_loss(
    student_logits: Tensor,
    teacher_topk_ids: Tensor,
    teacher_topk_logprobs: Tensor,
    labels: Tensor,
    *,
    kd_weight: float = 1.0,
    ce_weight: float = 0.0,
    kd_mask: Tensor | None = None,
    temperature: float = 1.0,
    label_smoothing: float = 0.0,
    normalizer: Normalizer = None,
) -> tuple[Tensor, SparseKDCETerms]:
    """``kd_weight * sparse_topk_kl + ce_weight * cross_entropy`` with one softmax and closed-form gradients.

    Value and gradient equal ``kd_weight * sparse_topk_kl(logits, ids, logprobs, mask=kd_mask,
    temperature=T, normalizer=normalizer) + ce_weight * cross_entropy(logits, labels, label_smoothing,
    normalizer)`` (tests compare both, values and gradients, relative to their scale).

    Args:
        student_logits: ``(B, T, V)`` or ``(N, V)``; fp32 or lower (computed in fp32, the gradient is
            returned in the input dtype).
        teacher_topk_ids: int ``(B, T, K)`` / ``(N, K)``, distinct ids in ``[0, V)`` per token.
        teacher_topk_logprobs: ``(B, T, K)`` / ``(N, K)`` teacher log-probabilities at temperature 1
            (``-inf`` allowed for padded slots); treated as constants.
        labels: int64 ``(B, T)`` / ``(N,)`` with ``-100`` for tokens without a target.
        kd_weight: weight of the KD term (``>= 0``; 0 skips it).
        ce_weight: weight of the CE term (``>= 0``; 0 skips it).
        kd_mask: ``(B, T)`` / ``(N,)`` bool or float KD token weights; ``None`` means ``labels != -100``.
        temperature: KD softmax temperature ``T > 0`` (CE is always at temperature 1).
        label_smoothing: CE label smoothing in ``[0, 1]``.
        normalizer: target-token count of the optimizer step (default: each term's own mask sum), clamped
            to ``>= 1``.

    Returns:
        ``(total, terms)``: total is a 0-d fp32 tensor (nats per target token) differentiable w.r.t. the
        logits; ``terms`` holds the unweighted KD and CE values.
    """
    check_settings(temperature, label_smoothing, kd_weight, ce_weight)
    vocab = student_logits.shape[-1]
    if teacher_topk_ids.shape != teacher_topk_logprobs.shape:
        raise ValueError(f"top-k ids {tuple(teacher_topk_ids.shape)} and log-probs "
                         f"{tuple(teacher_topk_logprobs.shape)} differ")
    if tuple(teacher_topk_ids.shape[:-1]) != tuple(student_logits.shape[:-1]):
        raise ValueError(f"top-k shape {tuple(teacher_topk_ids.shape)} does not match logits "
                         f"{tuple(student_logits.shape)}")
    k = teacher_topk_ids.shape[-1]
    if not 1 <= k <= vocab:
        raise ValueError(f"K must be in [1, V={vocab}], got {k}")
    rows = row_weights(student_logits, labels, kd_mask, normalizer)
    ids, logprobs = teacher_topk_ids.reshape(-1, k), teacher_topk_logprobs.reshape(-1, k)

    def logit_grad(s: Tensor, owned: bool) -> tuple[Tensor, Tensor, Tensor]:
        return sparse_kd_ce_logit_grad(s, ids, logprobs, rows.labels, rows.kd_rows, rows.kd_norm, rows.ce_norm,
                                       kd_weight=kd_weight, ce_weight=ce_weight, temperature=temperature,
                                       label_smoothing=label_smoothing, owned=owned)

    total, kd, ce = apply_closed_form(student_logits.reshape(-1, vocab), logit_grad, kd_weight, ce_weight)
    return total, SparseKDCETerms(kd=kd, ce=ce)
