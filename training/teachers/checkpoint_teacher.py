"""A Distillery checkpoint as a teacher (``teacher.kind: checkpoint``), run in-process and frozen."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from training.model import Student
from training.teachers.base import TeacherTargets, VocabularyMismatchError
from training.teachers.on_batch import TeacherOutputs
from training.tokenizer import DistilleryTokenizer


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

    @torch.no_grad()
    def outputs(self, input_ids: Tensor, attention_mask: Tensor | None = None, *, targets: bool = False,
                final_hidden: bool = False, hidden_states: bool = False) -> TeacherOutputs:
        """Any of :meth:`targets`, :meth:`final_hidden` and :meth:`hidden_states` from one forward pass."""
        out = self.model.run(input_ids, attention_mask=attention_mask, output_hidden_states=hidden_states,
                             compute_logits=targets)
        return TeacherOutputs(
            targets=TeacherTargets(logits=out.logits.float()) if targets and out.logits is not None else None,
            final_hidden=out.last_hidden_state if final_hidden else None,
            hidden_states=out.hidden_states if hidden_states else None,
        )

    @property
    def lm_head_weight(self) -> Tensor:
        """(V, H_t) output projection."""
        return self.model.lm_head.weight
