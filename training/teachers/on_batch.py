"""A teacher run on a training batch: packed rows and one forward for every output the losses need.

The trainer asks for up to three things per micro-batch: the KD targets (dense logits or sparse top-k),
the final-norm hidden states (chunked loss) and every layer's hidden states (hidden-state loss). This
wrapper owns two concerns that used to sit in the trainer:

* **Packed rows.** A packed batch holds several examples per row; no teacher source sees across examples,
  so the rows are split one example a row (:class:`training.data.unpack.Unpacked`) and every per-token output
  is merged back into the packed layout.
* **One forward.** A teacher that can return all its outputs from one pass (``CheckpointTeacher.outputs``)
  is called once per micro-batch; before, the hidden-state loss ran the teacher a second time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from training.data.unpack import Unpacked
from training.teachers.base import TeacherTargets

__all__ = ["TeacherOnBatch", "TeacherOutputs"]


@dataclass(frozen=True)
class TeacherOutputs:
    """What one teacher call gave, each in the batch's (B, T, ...) layout, or None when not asked for.

    Attributes:
        targets: KD targets (dense logits ``(B, T, V)`` or top-k ``(B, T, K)``).
        final_hidden: final-norm hidden states ``(B, T, H_t)``.
        hidden_states: embedding output and every layer's output, each ``(B, T, H_t)``.
    """

    targets: TeacherTargets | None = None
    final_hidden: Tensor | None = None
    hidden_states: list[Tensor] | None = None


def _merge_targets(unpacked: Unpacked, got: TeacherTargets) -> TeacherTargets:
    if got.is_sparse:
        assert got.topk_ids is not None and got.topk_logprobs is not None
        return TeacherTargets(topk_ids=unpacked.merge(got.topk_ids), topk_logprobs=unpacked.merge(got.topk_logprobs))
    assert got.logits is not None
    return TeacherTargets(logits=unpacked.merge(got.logits))


class TeacherOnBatch:
    """Runs ``teacher`` on (possibly packed) training batches.

    Args:
        teacher: any teacher source (``targets``; ``final_hidden`` / ``hidden_states`` for in-process ones;
            ``outputs`` when it can give several in one forward).
        pad_id: the tokenizer's pad id, used for the one-example-a-row batches of packed rows.
    """

    def __init__(self, teacher: Any, pad_id: int) -> None:
        self.teacher = teacher
        self.pad_id = pad_id

    def run(self, input_ids: Tensor, attention_mask: Tensor | None, sequence_ids: Tensor | None = None, *,
            targets: bool = False, final_hidden: bool = False, hidden_states: bool = False) -> TeacherOutputs:
        """The requested outputs for a batch.

        Args:
            input_ids: ``(B, T)`` token ids.
            attention_mask: ``(B, T)``, or None for no padding.
            sequence_ids: ``(B, T)`` example numbers of packed rows (0 = padding), or None when not packed.
            targets, final_hidden, hidden_states: which outputs to compute.

        Returns:
            :class:`TeacherOutputs` in the packed ``(B, T)`` layout.
        """
        if not (targets or final_hidden or hidden_states):
            return TeacherOutputs()
        unpacked = None if sequence_ids is None else Unpacked.split(input_ids, sequence_ids, self.pad_id)
        ids, mask = (input_ids, attention_mask) if unpacked is None else (unpacked.input_ids,
                                                                          unpacked.attention_mask)
        got = self._call(ids, mask, targets, final_hidden, hidden_states)
        if unpacked is None:
            return got
        return TeacherOutputs(
            targets=_merge_targets(unpacked, got.targets) if got.targets is not None else None,
            final_hidden=unpacked.merge(got.final_hidden) if got.final_hidden is not None else None,
            hidden_states=[unpacked.merge(h) for h in got.hidden_states] if got.hidden_states is not None else None,
        )

    def _call(self, ids: Tensor, mask: Tensor | None, targets: bool, final_hidden: bool,
              hidden_states: bool) -> TeacherOutputs:
        teacher = self.teacher
        if hasattr(teacher, "outputs"):
            return teacher.outputs(ids, mask, targets=targets, final_hidden=final_hidden,
                                   hidden_states=hidden_states)
        return TeacherOutputs(
            targets=teacher.targets(ids, mask) if targets else None,
            final_hidden=teacher.final_hidden(ids, mask) if final_hidden else None,
            hidden_states=teacher.hidden_states(ids, mask) if hidden_states else None,
        )
