"""Teacher sources behind one interface: given token ids, produce the teacher's next-token targets.

``CheckpointTeacher`` runs a Distillery artifact (or a Hugging Face Llama directory) in-process; the other
sources (local Hugging Face directory, OpenAI-compatible server, precomputed top-k cache) live in
:mod:`training.teacher_sources`, and :func:`build_teacher` picks one from a config section.
Every teacher declares its tokenizer; :func:`ensure_same_vocabulary` refuses a teacher whose tokenizer
maps text to different ids than the student's, because token-level KD over mismatched vocabularies
trains on garbage without any error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

from training.model import Student
from training.tokenizer import DistilleryTokenizer, check_tokenizers_match
from training.user_errors import UserError

if TYPE_CHECKING:
    from training.kd_config import TeacherSection


class VocabularyMismatchError(ValueError):
    """Teacher and student do not share a vocabulary."""


class TeacherPathError(UserError):
    """A teacher section names a directory that does not exist."""


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

    def targets(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> TeacherTargets:
        """Dense targets: the full logits."""
        return TeacherTargets(logits=self.logits(input_ids, attention_mask))

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


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_teacher(section: TeacherSection) -> Teacher:
    """The teacher a validated ``teacher`` config section names (``kind``: checkpoint, hf, http or cache).

    Raises:
        TeacherPathError: when ``path`` (checkpoint, hf, cache) is not a directory.
    """
    if section.kind in ("checkpoint", "hf", "cache") and not Path(str(section.path)).is_dir():
        raise TeacherPathError(f"teacher {section.kind} directory {section.path} does not exist; fix teacher.path "
                               "(or --teacher) to name the teacher's directory")
    if section.kind == "checkpoint":
        assert section.path is not None
        return CheckpointTeacher(section.path, dtype=_DTYPES[section.dtype])
    if section.kind == "hf":
        from training.teacher_sources.hf import HFTeacher

        assert section.path is not None
        return HFTeacher(section.path, dtype=_DTYPES[section.dtype],  # type: ignore[return-value]
                         allow_pickle=section.allow_pickle)
    if section.kind == "http":
        from training.teacher_sources.http_teacher import HttpTeacher

        return HttpTeacher.from_section(section)  # type: ignore[return-value]
    if section.kind == "cache":
        from training.teacher_sources.cache_teacher import CacheTeacher

        assert section.path is not None
        return CacheTeacher(section.path, temperature=section.temperature)  # type: ignore[return-value]
    raise ValueError(f"unknown teacher kind {section.kind!r}")
