"""Chunked KD + CE loss computed from final hidden states and the ``lm_head`` weight.

The plain path materialises student logits ``(N, V)``, teacher logits ``(N, V)`` and several same-sized
softmax intermediates, plus their gradients. This module never holds more than one ``(C, V)`` chunk of
them: a :class:`torch.autograd.Function` walks over the tokens in chunks of ``C`` rows, computes the
chunk's logits, loss and ``dL/dlogits``, and immediately folds the latter into
``grad_hidden[chunk] = dlogits @ W`` and ``grad_W += dlogits^T @ h_chunk`` (the technique of Liger-Kernel's
fused linear cross-entropy). ``backward`` only rescales the stored gradients by ``grad_output``.

Value and gradients equal the plain path
``kd_weight * kd_divergence(h @ W^T, h_t @ W_t^T, mask=kd_mask, ...) + ce_weight * cross_entropy(h @ W^T,
labels, ...)`` from :mod:`training.losses`, with the same normalizer semantics. Forward KL + CE uses
closed-form logit gradients, with a dense teacher or a sparse top-k one (:mod:`training.losses.sparse_kd_ce`); the
other divergences differentiate the :mod:`training.losses` function on each chunk with autograd (still
``O(C * V)`` memory). Tokens without a target in any computed term (prompt, padding) are skipped: their
output projections are never computed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from training.losses.dense_kd_ce import dense_kd_ce_logit_grad
from training.losses.kd import (
    DIVERGENCES,
    IGNORE_INDEX,
    Normalizer,
    cross_entropy,
    divergence_kwargs,
    kd_divergence,
    resolve_normalizer,
    sparse_topk_kl,
)
from training.losses.sparse_kd_ce import sparse_kd_ce_logit_grad

__all__ = ["ChunkedLossTerms", "chunked_kd_ce_loss", "chunked_kd_ce_loss_with_terms"]


@dataclass(frozen=True)
class ChunkedLossTerms:
    """Detached per-term values of one chunked loss call (nats per target token, unweighted)."""

    kd: float
    ce: float
    total: float


@dataclass(frozen=True)
class _Settings:
    """Validated scalar settings shared by every chunk."""

    temperature: float
    kd_weight: float
    ce_weight: float
    chunk_size: int
    divergence: str
    divergence_kwargs: dict[str, float]
    label_smoothing: float
    ignore_index: int
    weight_grad: bool


def _closed_form_chunk(
    h_c: Tensor,
    w: Tensor,
    teacher: tuple[Tensor, Tensor] | None,
    labels: Tensor,
    kd_w: Tensor,
    kd_norm: Tensor,
    ce_norm: Tensor,
    cfg: _Settings,
) -> tuple[Tensor, Tensor, Tensor]:
    """Forward KL + CE on one chunk with closed-form gradients (:mod:`training.losses.dense_kd_ce` or, for a
    top-k teacher, :mod:`training.losses.sparse_kd_ce`), holding a few ``(C, V)`` buffers.

    Args:
        h_c: student hidden states of the chunk ``(C, H)`` in the compute dtype.
        w: student lm_head weight ``(V, H)`` in the compute dtype.
        teacher: ``(teacher_hidden (C, H_t), teacher_weight (V, H_t))`` for a dense teacher,
            ``(topk_ids (C, K), topk_logprobs (C, K))`` for a top-k one, ``None`` when ``kd_weight == 0``.
        labels: int64 ``(C,)``.
        kd_w: float KD token weights ``(C,)``.
        kd_norm: 0-d KD normalizer (tokens).
        ce_norm: 0-d CE normalizer (tokens).
        cfg: settings.

    Returns:
        ``(kd_term, ce_term, dlogits)``: the chunk's KD and CE contributions (each already divided by its
        normalizer, unweighted; 0-d) and the gradient of ``kd_weight * kd + ce_weight * ce`` w.r.t. the
        chunk's logits ``h_c @ w.T``, ``(C, V)``.
    """
    settings = {"kd_weight": cfg.kd_weight, "ce_weight": cfg.ce_weight, "temperature": cfg.temperature,
                "label_smoothing": cfg.label_smoothing, "ignore_index": cfg.ignore_index, "owned": True}
    if cfg.kd_weight == 0 or teacher is None:
        return dense_kd_ce_logit_grad(h_c @ w.T, None, labels, kd_w, kd_norm, ce_norm, **settings)
    if teacher[0].is_floating_point():
        return dense_kd_ce_logit_grad(h_c @ w.T, teacher[0] @ teacher[1].T, labels, kd_w, kd_norm, ce_norm,
                                      **settings)
    return sparse_kd_ce_logit_grad(h_c @ w.T, teacher[0], teacher[1], labels, kd_w, kd_norm, ce_norm, **settings)


def _autograd_chunk(
    h_c: Tensor,
    w: Tensor,
    teacher: tuple[Tensor, Tensor] | None,
    labels: Tensor,
    kd_w: Tensor,
    kd_norm: Tensor,
    ce_norm: Tensor,
    cfg: _Settings,
) -> tuple[Tensor, Tensor, Tensor]:
    """Any divergence (or the sparse top-k teacher) + CE on one chunk, differentiated with autograd.

    Arguments and result as for :func:`_closed_form_chunk` (the two are interchangeable chunk functions).
    """
    logits = h_c @ w.T
    zero = logits.new_zeros(())
    kd_term, ce_term = zero, zero
    with torch.enable_grad():
        leaf = logits.detach().requires_grad_(True)
        total = leaf.sum() * 0.0
        del logits
        if cfg.kd_weight != 0:
            assert teacher is not None
            if teacher[0].is_floating_point():  # dense: (hidden, weight); top-k: (int ids, log-probs)
                kd_term = kd_divergence(
                    cfg.divergence,
                    leaf,
                    teacher[0] @ teacher[1].T,
                    mask=kd_w,
                    temperature=cfg.temperature,
                    normalizer=kd_norm,
                    **cfg.divergence_kwargs,
                )
            else:
                kd_term = sparse_topk_kl(
                    leaf, teacher[0], teacher[1], mask=kd_w, temperature=cfg.temperature, normalizer=kd_norm
                )
            total = total + cfg.kd_weight * kd_term
        if cfg.ce_weight != 0:
            ce_term = cross_entropy(leaf, labels, cfg.label_smoothing, ce_norm, cfg.ignore_index)
            total = total + cfg.ce_weight * ce_term
        (dlogits,) = torch.autograd.grad(total, leaf)
    return kd_term.detach(), ce_term.detach(), dlogits


class _ChunkedKDCE(torch.autograd.Function):
    """Loss forward that also produces ``dL/dhidden`` and ``dL/dW`` chunk by chunk."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: Tensor,
        weight: Tensor,
        teacher_hidden: Tensor | None,
        teacher_weight: Tensor | None,
        topk_ids: Tensor | None,
        topk_logprobs: Tensor | None,
        labels: Tensor,
        kd_w: Tensor,
        kd_norm: Tensor,
        ce_norm: Tensor,
        cfg: _Settings,
    ) -> tuple[Tensor, Tensor, Tensor]:
        n_tokens = hidden.shape[0]
        cdtype = torch.float64 if hidden.dtype == torch.float64 else torch.float32
        w = weight.detach().to(cdtype)
        tw = teacher_weight.detach().to(cdtype) if teacher_weight is not None else None
        grad_hidden = torch.zeros(hidden.shape, dtype=cdtype, device=hidden.device)
        grad_weight = torch.zeros(w.shape, dtype=cdtype, device=w.device) if cfg.weight_grad else None
        kd_total = torch.zeros((), dtype=cdtype, device=hidden.device)
        ce_total = torch.zeros((), dtype=cdtype, device=hidden.device)
        closed_form = cfg.divergence == "forward_kl"

        # rows without a target in any computed term (prompt, padding) add nothing to the loss or the
        # gradients: skip their output projections (the (C, V) matmuls dominate this function)
        active = torch.zeros(n_tokens, dtype=torch.bool, device=hidden.device)
        if cfg.kd_weight != 0:
            active |= kd_w != 0
        if cfg.ce_weight != 0:
            active |= labels != cfg.ignore_index
        rows = None if bool(active.all()) else active.nonzero().squeeze(1)
        n_rows = n_tokens if rows is None else int(rows.numel())

        for start in range(0, n_rows, cfg.chunk_size):
            stop = min(start + cfg.chunk_size, n_rows)
            pick: slice | Tensor = slice(start, stop) if rows is None else rows[start:stop]
            h_c = hidden[pick].detach().to(cdtype)
            teacher: tuple[Tensor, Tensor] | None = None
            if cfg.kd_weight != 0:
                if teacher_hidden is not None and tw is not None:
                    teacher = (teacher_hidden[pick].detach().to(cdtype), tw)
                elif topk_ids is not None and topk_logprobs is not None:
                    teacher = (topk_ids[pick], topk_logprobs[pick])
            chunk_fn = _closed_form_chunk if closed_form else _autograd_chunk
            kd_c, ce_c, dlogits = chunk_fn(h_c, w, teacher, labels[pick], kd_w[pick], kd_norm, ce_norm, cfg)
            kd_total += kd_c
            ce_total += ce_c
            if rows is None:
                torch.matmul(dlogits, w, out=grad_hidden[start:stop])
            else:
                grad_hidden.index_copy_(0, rows[start:stop], dlogits @ w)
            if grad_weight is not None:
                grad_weight.addmm_(dlogits.T, h_c)
            del dlogits, h_c

        ctx.save_for_backward(
            grad_hidden.to(hidden.dtype),
            grad_weight.to(weight.dtype) if grad_weight is not None else None,
        )
        loss = cfg.kd_weight * kd_total + cfg.ce_weight * ce_total
        ctx.mark_non_differentiable(kd_total, ce_total)
        return loss, kd_total, ce_total

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor, *_unused: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        grad_hidden, grad_weight = ctx.saved_tensors
        g_h = grad_hidden * grad_loss.to(grad_hidden.dtype) if ctx.needs_input_grad[0] else None
        g_w = (
            grad_weight * grad_loss.to(grad_weight.dtype)
            if grad_weight is not None and ctx.needs_input_grad[1]
            else None
        )
        return (g_h, g_w) + (None,) * 9


def chunked_kd_ce_loss_with_terms(
    student_hidden: Tensor,
    lm_head_weight: Tensor,
    teacher_hidden: Tensor | None = None,
    teacher_lm_head_weight: Tensor | None = None,
    labels: Tensor | None = None,
    kd_mask: Tensor | None = None,
    temperature: float = 1.0,
    kd_weight: float = 1.0,
    ce_weight: float = 1.0,
    normalizer: Normalizer = None,
    chunk_size: int = 1024,
    *,
    teacher_topk_ids: Tensor | None = None,
    teacher_topk_logprobs: Tensor | None = None,
    divergence: str = "forward_kl",
    beta: float = 0.5,
    alpha: float = 0.1,
    label_smoothing: float = 0.0,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[Tensor, ChunkedLossTerms]:
    """Chunked ``kd_weight * KD + ce_weight * CE`` from hidden states, plus detached per-term values.

    Equal in value and in gradients w.r.t. ``student_hidden`` and ``lm_head_weight`` to::

        logits = student_hidden @ lm_head_weight.T
        kd_weight * kd_divergence(divergence, logits, teacher_hidden @ teacher_lm_head_weight.T,
                                  mask=kd_mask, temperature=temperature, normalizer=normalizer)
        + ce_weight * cross_entropy(logits, labels, label_smoothing, normalizer)

    (or :func:`training.losses.sparse_topk_kl` for a top-k teacher) without holding ``(N, V)`` logits.
    With ``normalizer=None`` the KD term divides by ``kd_mask``'s sum and the CE term by the number of
    non-ignored labels (each clamped to ``>= 1``), exactly as the plain functions do. The teacher is a
    constant (no gradients). The ``lm_head`` has no bias. Double backward is not supported.

    Args:
        student_hidden: final student hidden states ``(N, H)`` (flattened ``B * T``).
        lm_head_weight: student ``lm_head`` weight ``(V, H)``.
        teacher_hidden: final teacher hidden states ``(N, H_t)``, or ``None`` with a top-k teacher.
        teacher_lm_head_weight: teacher ``lm_head`` weight ``(V, H_t)``.
        labels: int64 ``(N,)`` next-token labels, ``ignore_index`` for no target; ``None`` = all ignored.
        kd_mask: ``(N,)`` bool / float KD token weights; ``None`` = every token.
        temperature: KD softmax temperature ``T > 0`` (the divergence is scaled by ``T**2``; CE uses T=1).
        kd_weight: weight of the KD term (``>= 0``).
        ce_weight: weight of the CE term (``>= 0``).
        normalizer: target-token count of the optimizer step (used by both terms), or ``None``.
        chunk_size: tokens per chunk ``C >= 1``; peak extra memory is ``O(C * V)``.
        teacher_topk_ids: int64 ``(N, K)`` sparse teacher ids (instead of teacher hidden states).
        teacher_topk_logprobs: ``(N, K)`` sparse teacher log-probabilities.
        divergence: ``'forward_kl'`` (closed form), ``'reverse_kl'``, ``'jsd'``, ``'skew_kl'`` or
            ``'skew_reverse_kl'``; the top-k teacher supports ``'forward_kl'`` only.
        beta: JSD mixture weight (``divergence='jsd'``).
        alpha: skew (``divergence='skew_kl'`` / ``'skew_reverse_kl'``).
        label_smoothing: CE label smoothing in ``[0, 1]``.
        ignore_index: label value without a target.

    Returns:
        ``(loss, terms)``: 0-d loss in the compute dtype (float32, or float64 for float64 inputs), and the
        unweighted KD / CE terms and total as floats (a term whose weight is 0 is not computed and reads
        0.0).
    """
    if student_hidden.dim() != 2 or lm_head_weight.dim() != 2:
        raise ValueError(
            f"student_hidden must be (N, H) and lm_head_weight (V, H), got {tuple(student_hidden.shape)}, "
            f"{tuple(lm_head_weight.shape)}"
        )
    n_tokens, width = student_hidden.shape
    vocab = lm_head_weight.shape[0]
    if lm_head_weight.shape[1] != width:
        raise ValueError(f"lm_head_weight width {lm_head_weight.shape[1]} != hidden width {width}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be finite and > 0, got {temperature!r}")
    for name, value in (("kd_weight", kd_weight), ("ce_weight", ce_weight)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; expected one of {sorted(DIVERGENCES)}")

    dense_teacher = teacher_hidden is not None or teacher_lm_head_weight is not None
    sparse_teacher = teacher_topk_ids is not None or teacher_topk_logprobs is not None
    if dense_teacher and sparse_teacher:
        raise ValueError("give either teacher_hidden + teacher_lm_head_weight or the top-k teacher, not both")
    if kd_weight != 0:
        if dense_teacher:
            if teacher_hidden is None or teacher_lm_head_weight is None:
                raise ValueError("a dense teacher needs both teacher_hidden and teacher_lm_head_weight")
            if teacher_hidden.dim() != 2 or teacher_hidden.shape[0] != n_tokens:
                raise ValueError(
                    f"teacher_hidden must be (N={n_tokens}, H_t), got {tuple(teacher_hidden.shape)}"
                )
            if teacher_lm_head_weight.shape != (vocab, teacher_hidden.shape[1]):
                raise ValueError(
                    f"teacher_lm_head_weight must be (V={vocab}, H_t={teacher_hidden.shape[1]}), "
                    f"got {tuple(teacher_lm_head_weight.shape)}"
                )
        elif sparse_teacher:
            if teacher_topk_ids is None or teacher_topk_logprobs is None:
                raise ValueError("a top-k teacher needs both teacher_topk_ids and teacher_topk_logprobs")
            if teacher_topk_ids.dim() != 2 or teacher_topk_ids.shape[0] != n_tokens:
                raise ValueError(
                    f"teacher_topk_ids must be (N={n_tokens}, K), got {tuple(teacher_topk_ids.shape)}"
                )
            if teacher_topk_logprobs.shape != teacher_topk_ids.shape:
                raise ValueError("teacher_topk_ids and teacher_topk_logprobs must have the same shape")
            if divergence != "forward_kl":
                raise ValueError(f"the top-k teacher supports forward_kl only, not {divergence!r}")
        else:
            raise ValueError("kd_weight > 0 needs a teacher (hidden states + lm_head weight, or top-k)")
    else:
        teacher_hidden = teacher_lm_head_weight = teacher_topk_ids = teacher_topk_logprobs = None

    cdtype = torch.float64 if student_hidden.dtype == torch.float64 else torch.float32
    device = student_hidden.device
    if labels is None:
        labels = torch.full((n_tokens,), ignore_index, dtype=torch.long, device=device)
    if labels.shape != (n_tokens,) or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor of shape (N={n_tokens},)")
    labels = labels.long()
    if kd_mask is None:
        kd_w = torch.ones(n_tokens, dtype=cdtype, device=device)
    else:
        if kd_mask.shape != (n_tokens,):
            raise ValueError(f"kd_mask must have shape (N={n_tokens},), got {tuple(kd_mask.shape)}")
        kd_w = kd_mask.detach().to(cdtype)
    kd_norm = resolve_normalizer(kd_w, normalizer)
    ce_norm = resolve_normalizer((labels != ignore_index).to(cdtype), normalizer)
    cfg = _Settings(
        temperature=float(temperature),
        kd_weight=float(kd_weight),
        ce_weight=float(ce_weight),
        chunk_size=chunk_size,
        divergence=divergence,
        divergence_kwargs=divergence_kwargs(divergence, jsd_beta=beta, skew_alpha=alpha),
        label_smoothing=float(label_smoothing),
        ignore_index=ignore_index,
        weight_grad=lm_head_weight.requires_grad,
    )
    loss, kd, ce = _ChunkedKDCE.apply(
        student_hidden,
        lm_head_weight,
        teacher_hidden,
        teacher_lm_head_weight,
        teacher_topk_ids,
        teacher_topk_logprobs,
        labels,
        kd_w,
        kd_norm,
        ce_norm,
        cfg,
    )
    terms = ChunkedLossTerms(kd=float(kd), ce=float(ce), total=float(loss.detach()))
    return loss, terms


def chunked_kd_ce_loss(
    student_hidden: Tensor,
    lm_head_weight: Tensor,
    teacher_hidden: Tensor | None = None,
    teacher_lm_head_weight: Tensor | None = None,
    labels: Tensor | None = None,
    kd_mask: Tensor | None = None,
    temperature: float = 1.0,
    kd_weight: float = 1.0,
    ce_weight: float = 1.0,
    normalizer: Normalizer = None,
    chunk_size: int = 1024,
    **kwargs: Any,
) -> Tensor:
    """Chunked ``kd_weight * KD + ce_weight * CE`` (0-d tensor, nats per target token).

    Same arguments and semantics as :func:`chunked_kd_ce_loss_with_terms` (keyword-only extras such as
    ``teacher_topk_ids``, ``divergence``, ``label_smoothing`` go in ``kwargs``); shapes: ``student_hidden``
    ``(N, H)``, ``lm_head_weight`` ``(V, H)``, ``teacher_hidden`` ``(N, H_t)``, ``teacher_lm_head_weight``
    ``(V, H_t)``, ``labels`` / ``kd_mask`` ``(N,)``.
    """
    loss, _ = chunked_kd_ce_loss_with_terms(
        student_hidden,
        lm_head_weight,
        teacher_hidden,
        teacher_lm_head_weight,
        labels,
        kd_mask,
        temperature,
        kd_weight,
        ce_weight,
        normalizer,
        chunk_size,
        **kwargs,
    )
    return loss
