"""Forward-KL KD against dense teacher logits plus cross-entropy, with closed-form logit gradients.

The composed path (:func:`training.losses.kd.forward_kl` plus :func:`training.losses.kd.cross_entropy`) runs
autograd through about fifteen ``(N, V)`` intermediates (two tempered ``log_softmax`` calls, divisions by
``T`` even at ``T = 1``, ``exp``, ``where`` masks, ``xlogy``-style products). Here the terms and
``dL/dlogits`` come from two ``log_softmax`` calls and a few in-place passes; the chunked loss
(:mod:`training.losses.chunked`) uses the same function on each chunk.

Definitions (identical to the composed path, which the tests use as the reference):

* KD: ``T**2 * KL(softmax(t / T) || softmax(s / T))`` per token, weighted by the KD mask.
* CE: token cross-entropy at temperature 1 with label smoothing ``eps``.

Gradients: ``d KD / d s = T * (softmax(s / T) - softmax(t / T))``;
``d CE / d s = softmax(s) - (1 - eps) onehot(y) - eps / V``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from training.losses.closed_form import apply_closed_form, check_settings, row_weights, subtract_ce_targets
from training.losses.kd import IGNORE_INDEX, Normalizer

__all__ = ["dense_kd_ce_logit_grad", "dense_kd_ce_loss"]


def dense_kd_ce_logit_grad(
    logits: Tensor,
    teacher_logits: Tensor | None,
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
        logits: ``(N, V)`` float32/float64 student logits (constants here).
        teacher_logits: ``(N, V)`` teacher logits in the same dtype, or ``None`` when ``kd_weight == 0``.
        labels: int64 ``(N,)``, ``ignore_index`` for no target.
        kd_rows: ``(N,)`` float KD token weights.
        kd_norm: 0-d KD normalizer (tokens); ce_norm: 0-d CE normalizer (tokens).
        kd_weight, ce_weight: term weights (0 skips a term); temperature: KD ``T > 0``;
        label_smoothing: CE ``eps``; ignore_index: label without a target.
        owned: the caller hands both logits tensors over (fresh matmul outputs): they may be overwritten.

    Returns:
        ``(kd_term, ce_term, dlogits)``: 0-d unweighted terms (each divided by its normalizer) and ``(N, V)``.
    """
    temp = temperature
    vocab = logits.shape[-1]
    zero = logits.new_zeros(())
    kd_term, ce_term = zero, zero
    dlogits: Tensor | None = None

    log_q1 = F.log_softmax(logits, dim=-1) if ce_weight != 0 else None
    if kd_weight != 0:
        if teacher_logits is None:
            raise ValueError("kd_weight > 0 needs teacher logits")
        if temp != 1.0:
            log_q = F.log_softmax(logits.div_(temp) if owned else logits / temp, dim=-1)
        else:
            log_q = log_q1 if log_q1 is not None else F.log_softmax(logits, dim=-1)
        t = teacher_logits
        if temp != 1.0:
            t = t.div_(temp) if owned else t / temp
        log_p = F.log_softmax(t, dim=-1)
        del t
        p = log_p.exp()
        # p * (log p - log q) with 0 * log 0 = 0, in log_p's storage
        kl_elems = log_p.sub_(log_q).mul_(p).masked_fill_(p == 0, 0.0)
        row_kl = kl_elems.sum(dim=-1) * (temp * temp)
        del kl_elems, log_p
        kept = kd_rows != 0
        kd_term = (torch.where(kept, row_kl, torch.zeros_like(row_kl)) * kd_rows).sum() / kd_norm
        # d/dz [T^2 KL(p_T || softmax(z / T))] = T (q_T - p_T)
        dlogits = log_q.exp() if log_q is log_q1 else log_q.exp_()
        dlogits.sub_(p).mul_(((kd_weight * temp / kd_norm) * kd_rows).unsqueeze(-1))
        del p, log_q
    if ce_weight != 0:
        assert log_q1 is not None
        valid = labels != ignore_index
        safe = torch.where(valid, labels, torch.zeros_like(labels)).unsqueeze(-1)
        nll = -log_q1.gather(-1, safe).squeeze(-1)
        eps = label_smoothing
        row_ce = nll if eps == 0 else (1.0 - eps) * nll - eps * log_q1.mean(dim=-1)
        ce_term = torch.where(valid, row_ce, torch.zeros_like(row_ce)).sum() / ce_norm
        # d/dz CE = softmax(z) - (1 - eps) * onehot(y) - eps / V
        ce_rows = (ce_weight / ce_norm) * valid.to(log_q1.dtype)
        grad_ce = log_q1.exp_().mul_(ce_rows.unsqueeze(-1))
        subtract_ce_targets(grad_ce, safe, ce_rows, eps, vocab)
        dlogits = grad_ce if dlogits is None else dlogits.add_(grad_ce)
        del grad_ce, log_q1
    if dlogits is None:
        dlogits = torch.zeros_like(logits)
    return kd_term, ce_term, dlogits


def dense_kd_ce_loss(
    student_logits: Tensor,
    teacher_logits: Tensor | None,
    labels: Tensor,
    *,
    kd_weight: float = 1.0,
    ce_weight: float = 0.0,
    kd_mask: Tensor | None = None,
    temperature: float = 1.0,
    label_smoothing: float = 0.0,
    normalizer: Normalizer = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """``kd_weight * forward_kl + ce_weight * cross_entropy`` with closed-form gradients.

    Value and gradient equal ``kd_weight * forward_kl(logits, teacher_logits, mask=kd_mask, temperature=T,
    normalizer=normalizer) + ce_weight * cross_entropy(logits, labels, label_smoothing, normalizer)``.

    Args:
        student_logits: ``(B, T, V)`` or ``(N, V)`` (computed in fp32; the gradient has the input dtype).
        teacher_logits: same shape (constants), or ``None`` when ``kd_weight == 0``.
        labels: int64 ``(B, T)`` / ``(N,)`` with ``-100`` for tokens without a target.
        kd_weight: weight of the KD term (``>= 0``); ce_weight: weight of the CE term (``>= 0``).
        kd_mask: ``(B, T)`` / ``(N,)`` bool or float KD token weights; ``None`` means ``labels != -100``.
        temperature: KD softmax temperature ``T > 0`` (CE is always at temperature 1).
        label_smoothing: CE label smoothing in ``[0, 1]``.
        normalizer: target-token count of the optimizer step (default: each term's own mask sum).

    Returns:
        ``(total, kd, ce)``: the 0-d fp32 loss (differentiable w.r.t. the student logits) and the unweighted
        terms, detached (nats per target token).
    """
    check_settings(temperature, label_smoothing, kd_weight, ce_weight)
    vocab = student_logits.shape[-1]
    if kd_weight != 0 and (teacher_logits is None or teacher_logits.shape != student_logits.shape):
        got = None if teacher_logits is None else tuple(teacher_logits.shape)
        raise ValueError(f"teacher logits {got} must have the student's shape {tuple(student_logits.shape)}")
    rows = row_weights(student_logits, labels, kd_mask, normalizer)
    teacher = teacher_logits.detach().reshape(-1, vocab) if teacher_logits is not None and kd_weight != 0 else None

    def logit_grad(s: Tensor, owned: bool) -> tuple[Tensor, Tensor, Tensor]:
        # the teacher's logits are the caller's: only a converted copy may be overwritten
        t = teacher.float() if teacher is not None else None
        return dense_kd_ce_logit_grad(s, t, rows.labels, rows.kd_rows, rows.kd_norm, rows.ce_norm,
                                      kd_weight=kd_weight, ce_weight=ce_weight, temperature=temperature,
                                      label_smoothing=label_smoothing, owned=owned and t is not teacher)

    return apply_closed_form(student_logits.reshape(-1, vocab), logit_grad, kd_weight, ce_weight)
