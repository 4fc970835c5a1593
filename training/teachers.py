"""Teacher sources behind one interface: given token ids, produce the teacher's next-token targets.

``CheckpointTeacher`` runs a Distillery artifact (or a Hugging Face Llama directory) in-process.
Every teacher declares its tokenizer; :func:`ensure_same_vocabulary` refuses a teacher whose tokenizer
maps text to different ids than the student's, because token-level KD over mismatched vocabularies
trains on garbage without any error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from training.model import Student
from training.tokenizer import DistilleryTokenizer, check_tokenizers_match


class VocabularyMismatchError(ValueError):
    """Teacher and student do not share a vocabulary."""


class Teacher(Protocol):
    """Anything that scores token sequences with next-token logits."""

    tokenizer: DistilleryTokenizer
    vocab_size: int

    def logits(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """(B, T) ids -> (B, T, V) next-token logits (no gradient)."""
        ...


class CheckpointTeacher:
    """A Distillery checkpoint (the same model class as the student, usually larger), frozen."""

    def __init__(self, directory: str | Path, dtype: torch.dtype = torch.float32) -> None:
        self.directory = Path(directory)
        self.model: Student = Student.from_pretrained(self.directory).to(dtype).eval()
        self.model.requires_grad_(False)
        self.tokenizer = DistilleryTokenizer.load(self.directory)
        self.vocab_size = self.model.config.vocab_size
        if self.tokenizer.vocab_size > self.vocab_size:
            raise VocabularyMismatchError(
                f"teacher {self.directory}: tokenizer has {self.tokenizer.vocab_size} ids but the model's "
                f"vocab_size is {self.vocab_size}"
            )

    @torch.no_grad()
    def logits(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """(B, T) -> (B, T, V) float32 logits."""
        return self.model(input_ids, attention_mask=attention_mask).float()

    @torch.no_grad()
    def final_hidden(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """(B, T) -> (B, T, H_t) final-norm hidden states, for the chunked loss."""
        return self.model.run(input_ids, attention_mask=attention_mask, compute_logits=False).last_hidden_state

    @torch.no_grad()
    def hidden_states(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> list[Tensor]:
        """(B, T) -> embedding output and every layer's output, each (B, T, H_t)."""
        out = self.model.run(input_ids, attention_mask=attention_mask, output_hidden_states=True,
                             compute_logits=False)
        assert out.hidden_states is not None
        return out.hidden_states

    @property
    def lm_head_weight(self) -> Tensor:
        """(V, H_t) output projection."""
        return self.model.lm_head.weight


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
