"""The judge's training objective on one batch, and its evaluation on a set of encoded pairs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from arbiter.judge_training.batches import IGNORE_INDEX, EncodedPair, PairBatch, collate
from arbiter.judge_training.encoding import PaddingSide
from arbiter.judge_training.losses import WINNER_INDEX, davidson_probabilities, masked_bce, pairwise_loss
from arbiter.judge_training.metrics import auroc, f1, pairwise_accuracy, three_way_accuracy
from arbiter.judge_training.model import JudgeModel

OUTCOMES = tuple(WINNER_INDEX)


def batch_loss(model: JudgeModel, batch: PairBatch, clause_weight: float, step_weight: float,
               lm_weight: float = 0.0) -> tuple[Tensor, dict[str, float]]:
    """``pairwise + clause_weight * clause BCE + step_weight * step BCE + lm_weight * LM CE`` and the terms
    as floats. The LM term (next-token cross-entropy on the good responses, through the backbone's own LM
    head) keeps the LM that the surprise features read calibrated while the heads train."""
    out = model(batch.input_ids, batch.attention_mask, batch.response_mask)
    p = batch.num_pairs
    pair = pairwise_loss(out.score[:p], out.score[p:], batch.winner, model.tie_log_nu)
    total = pair
    terms = {"pairwise": pair.item()}
    if out.clause_logits is not None and clause_weight > 0:
        clause = masked_bce(out.clause_logits, batch.clause_targets, batch.clause_mask)
        total = total + clause_weight * clause
        terms["clause"] = clause.item()
    if out.step_logits is not None and step_weight > 0:
        step = masked_bce(out.step_logits, batch.step_targets, batch.step_mask)
        total = total + step_weight * step
        terms["step"] = step.item()
    target = batch.lm_labels != IGNORE_INDEX
    if lm_weight > 0 and bool(target.any()):
        logits = model.backbone.lm_head(out.hidden[target])
        lm = F.cross_entropy(logits.float(), batch.lm_labels[target])
        total = total + lm_weight * lm
        terms["lm"] = lm.item()
    terms["total"] = total.item()
    return total, terms


@torch.no_grad()
def evaluate(model: JudgeModel, pairs: Sequence[EncodedPair], *, batch_pairs: int, pad_id: int,
             padding_side: PaddingSide = "right") -> dict[str, Any]:
    """Metrics on ``pairs``: pairwise_accuracy (non-tie pairs), three_way_accuracy (argmax of the Davidson
    probabilities), clause_f1 (macro over clauses, threshold 0.5) with per-clause values, step_auroc (all
    labelled steps of both sides pooled), and counts. Undefined metrics are ``None``."""
    was_training = model.training
    model.eval()
    scores_a: list[float] = []
    scores_b: list[float] = []
    predicted: list[str] = []
    clause_probs: list[list[float]] = []
    clause_rows: list[tuple[tuple[float, ...], tuple[bool, ...]]] = []
    step_scores: list[float] = []
    step_labels: list[float] = []
    for start in range(0, len(pairs), batch_pairs):
        chunk = pairs[start:start + batch_pairs]
        batch = collate(chunk, pad_id, padding_side, len(model.clauses))
        out = model(batch.input_ids, batch.attention_mask, batch.response_mask)
        p = batch.num_pairs
        scores_a += out.score[:p].tolist()
        scores_b += out.score[p:].tolist()
        probs = davidson_probabilities(out.score[:p], out.score[p:], model.tie_log_nu)
        predicted += [OUTCOMES[i] for i in probs.argmax(-1).tolist()]
        if out.clause_logits is not None:
            clause_probs += out.clause_logits.sigmoid().tolist()
            clause_rows += [(side.clause_targets, side.clause_mask)
                            for side in [pair.a for pair in chunk] + [pair.b for pair in chunk]]
        if out.step_logits is not None:
            step_scores += out.step_logits[batch.step_mask].tolist()
            step_labels += batch.step_targets[batch.step_mask].tolist()
    winners = [pair.winner for pair in pairs]
    per_clause: dict[str, float | None] = {}
    for index, name in enumerate(model.clauses):
        chosen = [(probs[index] >= 0.5, targets[index] >= 0.5)
                  for probs, (targets, mask) in zip(clause_probs, clause_rows, strict=True) if mask[index]]
        per_clause[name] = f1([c[0] for c in chosen], [c[1] for c in chosen])
    defined = [value for value in per_clause.values() if value is not None]
    if was_training:
        model.train()
    return {
        "pairwise_accuracy": pairwise_accuracy(scores_a, scores_b, winners),
        "three_way_accuracy": three_way_accuracy(predicted, winners),
        "clause_f1": sum(defined) / len(defined) if defined else None,
        "clause_f1_per_clause": per_clause,
        "step_auroc": auroc(step_scores, step_labels) if step_scores else None,
        "num_pairs": len(pairs),
        "num_non_tie_pairs": sum(w != "tie" for w in winners),
        "num_steps": len(step_labels),
        "tie_nu": float(model.tie_log_nu.exp()),
    }


def selection_value(metrics: dict[str, Any], selection: str) -> float:
    """The number the best checkpoint maximises: one metric, or the mean of the defined headline ones."""
    names = ("pairwise_accuracy", "clause_f1", "step_auroc") if selection == "mean" else (selection,)
    values = [metrics[name] for name in names if metrics.get(name) is not None]
    return sum(values) / len(values) if values else float("-inf")
