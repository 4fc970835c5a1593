"""The teacher interface: given token ids, produce the teacher's next-token targets.

:class:`Teacher` is what the trainer calls; :class:`TeacherTargets` holds dense logits or sparse top-k
log-probs. Every teacher declares its tokenizer; :func:`ensure_same_vocabulary` refuses a teacher whose
tokenizer maps text to different ids than the student's, because token-level KD over mismatched
vocabularies trains on garbage without any error. :func:`padded_topk` and :func:`real_positions` help the
sparse sources (HTTP, cache) build their targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from training.tokenizer import DistilleryTokenizer, check_tokenizers_match


class VocabularyMismatchError(ValueError):
    """Teacher and student do not share a vocabulary."""


@dataclass
class TeacherTargets:
    """Teacher next-token targets for a batch: dense logits, or sparse top-k log-probs.

    logits: (B, T, V) float; or topk_ids (B, T, K) int64 with topk_logprobs (B, T, K) float
    (temperature-1 log-probabilities; the missing mass is the tail bucket of the sparse KD loss).
    """

    logits: Tensor | None = None
    topk_ids: Tensor | None = None
    topk_logprobs: Tensor | None = None

    def __post_init__(self) -> None:
        dense = self.logits is not None
        sparse = self.topk_ids is not None and self.topk_logprobs is not None
        if dense == sparse:
            raise ValueError("TeacherTargets needs either logits or (topk_ids, topk_logprobs)")

    @property
    def is_sparse(self) -> bool:
        return self.logits is None


class Teacher(Protocol):
    """Anything that gives next-token targets for token sequences (see :class:`TeacherTargets`)."""

    tokenizer: DistilleryTokenizer
    vocab_size: int

    def targets(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> TeacherTargets:
        """(B, T) ids -> targets at every position (no gradient)."""
        ...

    def logits(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """(B, T) ids -> (B, T, V) next-token logits; sparse sources raise NotImplementedError."""
        ...


def ensure_same_vocabulary(teacher: Teacher, student_tokenizer: DistilleryTokenizer, student_vocab: int) -> None:
    """Raise :class:`VocabularyMismatchError` when token-level KD between the two would be meaningless."""
    try:
        check_tokenizers_match(teacher.tokenizer, student_tokenizer)
    except ValueError as exc:
        raise VocabularyMismatchError(str(exc)) from exc
    if teacher.vocab_size != student_vocab:
        raise VocabularyMismatchError(
            f"teacher logits have {teacher.vocab_size} entries but the student's vocab_size is {student_vocab}; "
            "build the student with the teacher's vocab_size"
        )


def padded_topk(batch: int, length: int, k: int) -> tuple[Tensor, Tensor]:
    """Targets for positions without a teacher distribution: ids ``0 .. K-1`` (distinct, as the sparse loss
    requires) and log-probs ``-inf``; (B, T, K) int64 and (B, T, K) float32."""
    ids = torch.arange(k, dtype=torch.long).expand(batch, length, k).clone()
    return ids, torch.full((batch, length, k), float("-inf"))


def real_positions(attention_mask: Tensor | None, input_ids: Tensor) -> list[Tensor]:
    """Per row, the (L,) indices of real tokens (left or right padding)."""
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    return [torch.nonzero(row, as_tuple=False).flatten() for row in mask.bool()]
