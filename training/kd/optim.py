"""The optimizer of the KD trainer and learning-rate schedules (pure functions of the step)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from training.kd.config import KDConfig
    from training.model import Student


def warmup_cosine(step: int, *, warmup_steps: int, max_steps: int, min_ratio: float) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based).

    Linear warmup from 1/warmup to 1 over ``warmup_steps`` steps, then cosine decay from 1 to
    ``min_ratio`` at ``max_steps``; constant ``min_ratio`` after that.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups(model: Student, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: ``weight_decay`` on matrices, none on norms, biases and embeddings (each
    trainable parameter once, tied ones included)."""
    decay, no_decay = [], []
    seen: set[int] = set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        (decay if param.ndim == 2 and "embed_tokens" not in name else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: Student, cfg: KDConfig) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`; weight decay on matrices only (not norms, biases or embeddings)."""
    groups = param_groups(model, cfg.optim.weight_decay)
    params = [p for group in groups for p in group["params"]]
    # fused: one kernel over all parameters (CPU and CUDA) instead of a Python loop of per-tensor ops; the
    # update is AdamW's to fp32 rounding. Sharded (DTensor) parameters use the foreach implementation.
    sharded = any(type(p).__name__ == "DTensor" for p in params)
    fused = not sharded and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=cfg.optim.betas, fused=fused or None,
                             foreach=True if not fused else None)
