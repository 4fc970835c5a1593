"""Generation and next-token log-probs for in-process dense teachers (Distillery checkpoint or HF directory).

Used by the teacher server and by sequence-level KD. A "dense local teacher" has ``logits(ids, mask)`` and
``tokenizer``, and either a Distillery :class:`~training.model.Student` as ``model`` (KV-cached
:func:`training.generation.generate`) or a ``generate_ids`` method
(:class:`~training.teachers.hf.HFTeacher`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from training.generation import generate, left_pad
from training.model import Student


@dataclass(frozen=True)
class GenerationParams:
    """``temperature == 0`` is greedy decoding; ``seed`` makes sampling reproducible."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if not self.temperature >= 0 or self.temperature == float("inf"):
            raise ValueError(f"temperature must be finite and >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def is_dense_local(teacher: Any) -> bool:
    """True for teachers this module can run (a Student ``model`` or a ``generate_ids`` method)."""
    return isinstance(getattr(teacher, "model", None), Student) or hasattr(teacher, "generate_ids")


@torch.no_grad()
def generate_ids(
    teacher: Any, prompts: list[list[int]], params: GenerationParams
) -> list[tuple[list[int], bool]]:
    """Continue each prompt (a list of ids) -> per prompt (new ids without eos, stopped at eos?)."""
    if not prompts:
        return []
    if any(not p for p in prompts):
        raise ValueError("every prompt needs at least one token")
    tok = teacher.tokenizer
    eos, pad = tok.eos_id, tok.pad_id
    ids, mask = left_pad(prompts, pad)
    do_sample = params.temperature > 0
    temperature = params.temperature if do_sample else 1.0
    if params.max_new_tokens == 0:
        return [([], False) for _ in prompts]
    generator = torch.Generator().manual_seed(params.seed) if params.seed is not None else None
    model = getattr(teacher, "model", None)
    if isinstance(model, Student):
        out = generate(
            model,
            ids,
            attention_mask=mask,
            max_new_tokens=params.max_new_tokens,
            do_sample=do_sample,
            temperature=temperature,
            top_p=params.top_p,
            eos_token_id=eos if eos is not None else -1,
            pad_token_id=pad,
            generator=generator,
        )
    elif hasattr(teacher, "generate_ids"):
        with torch.random.fork_rng(devices=[]):
            if params.seed is not None:
                torch.manual_seed(params.seed)
            out = teacher.generate_ids(
                ids,
                mask,
                max_new_tokens=params.max_new_tokens,
                do_sample=do_sample,
                temperature=temperature,
                top_p=params.top_p,
                eos_token_id=eos,
                pad_token_id=pad,
            )
    else:
        raise TypeError(f"{type(teacher).__name__} cannot generate in-process")
    results: list[tuple[list[int], bool]] = []
    for row in out[:, ids.shape[1] :].tolist():
        if eos is not None and eos in row:
            results.append((row[: row.index(eos)], True))
        else:
            results.append((row, False))
    return results


@torch.no_grad()
def sequence_logprobs(teacher: Any, ids: list[int]) -> Tensor:
    """One sequence (L,) -> (L, V) float64 log-softmax of the teacher's logits (position t predicts t + 1)."""
    x = torch.tensor([ids], dtype=torch.long)
    logits = teacher.logits(x, torch.ones_like(x))[0]
    return torch.log_softmax(logits.double(), dim=-1)
