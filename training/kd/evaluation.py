"""Evaluation of a student (and optionally its teacher) on held-out data.

Metrics: ``val_loss`` (token cross-entropy on completion tokens, nats/token), ``kd_loss`` (forward KL to
the teacher), ``top1_agreement`` (share of target positions where student and teacher argmax agree), and
task metrics (``accuracy`` and task-specific ones) from greedy generation on held-out prompts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from training.generation import generate, left_pad
from training.losses import cross_entropy, forward_kl, sparse_topk_kl
from training.model import Student
from training.tokenizer import DistilleryTokenizer


@torch.no_grad()
def evaluate_loss(
    model: Student, batches: Iterable[dict[str, Tensor]], teacher: Any | None = None, max_batches: int = 20
) -> dict[str, float]:
    """Token-weighted validation metrics over at most ``max_batches`` collated batches."""
    was_training = model.training
    model.eval()
    ce_sum = kd_sum = agree = tokens = 0.0
    try:
        for i, batch in enumerate(batches):
            if i >= max_batches:
                break
            ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
            logits = model(ids, attention_mask=mask).float()
            n = float((labels != -100).sum())
            if n == 0:
                continue
            ce_sum += float(cross_entropy(logits, labels, normalizer=1.0))
            if teacher is not None:
                targets = teacher.targets(ids, mask)
                target = labels != -100
                if targets.is_sparse:
                    kd_sum += float(sparse_topk_kl(logits, targets.topk_ids, targets.topk_logprobs.float(),
                                                   mask=target, normalizer=1.0))
                    teacher_top1 = targets.topk_ids[..., 0]
                else:
                    kd_sum += float(forward_kl(logits, targets.logits.float(), mask=target, normalizer=1.0))
                    teacher_top1 = targets.logits.argmax(-1)
                agree += float(((logits.argmax(-1) == teacher_top1) & target).sum())
            tokens += n
    finally:
        model.train(was_training)
    if tokens == 0:
        return {"val_loss": float("nan"), "val_tokens": 0.0}
    out = {"val_loss": ce_sum / tokens, "val_tokens": tokens}
    if teacher is not None:
        out["kd_loss"] = kd_sum / tokens
        out["top1_agreement"] = agree / tokens
    return out


@torch.no_grad()
def generate_completions(
    model: Student, tokenizer: DistilleryTokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = 32
) -> list[str]:
    """Greedy completions (text after the prompt, up to eos, special tokens kept) for each prompt."""
    outputs: list[str] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        encoded = [tokenizer.encode(p, add_bos=True) for p in chunk]
        ids, mask = left_pad(encoded, tokenizer.pad_id)
        tokens = generate(model, ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                          eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id)
        for row in tokens[:, ids.shape[1]:].tolist():
            if tokenizer.eos_id in row:
                row = row[:row.index(tokenizer.eos_id)]
            outputs.append(tokenizer.decode(row))
    return outputs


def evaluate_task(
    model: Student, tokenizer: DistilleryTokenizer, examples: list[dict[str, Any]], task: str,
    max_new_tokens: int,
) -> dict[str, float]:
    """Mean of the task's per-example metrics (``accuracy`` etc.) over greedy generations."""
    from training.tasks import get_task

    scorer = get_task(task).score
    if not examples:
        return {}
    texts = generate_completions(model, tokenizer, [e["prompt"] for e in examples], max_new_tokens)
    totals: dict[str, float] = {}
    for example, text in zip(examples, texts, strict=True):
        for key, value in scorer(example, text).items():
            totals[key] = totals.get(key, 0.0) + float(value)
    return {k: v / len(examples) for k, v in totals.items()}
