"""Rows (single or packed examples) to right-padded training tensors, and the document mask they imply."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from training.data.encoding import IGNORE_INDEX, EncodedExample
from training.model import block_causal_mask

__all__ = ["PackedRow", "Row", "block_causal_mask", "collate"]


class Row(Protocol):
    """One row of a batch; every field is (T,) for the row's own length T."""

    @property
    def input_ids(self) -> list[int]: ...

    @property
    def labels(self) -> list[int]: ...

    @property
    def position_ids(self) -> list[int]: ...

    @property
    def sequence_ids(self) -> list[int]: ...


@dataclass(frozen=True, slots=True)
class PackedRow:
    """Several encoded examples concatenated into one row of (T,) fields, T = the sum of their lengths.

    ``position_ids`` restart at 0 for each example and ``sequence_ids`` number the examples 1, 2, ...
    (0 marks padding), so a model can keep attention within each example (:func:`block_causal_mask`).
    Labels are each example's own, so no position targets a token of the next example.
    """

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]
    sequence_ids: list[int]

    @classmethod
    def pack(cls, examples: Sequence[EncodedExample]) -> PackedRow:
        if not examples:
            raise ValueError("cannot pack zero examples")
        input_ids: list[int] = []
        labels: list[int] = []
        position_ids: list[int] = []
        sequence_ids: list[int] = []
        for number, example in enumerate(examples, start=1):
            length = len(example.input_ids)
            input_ids.extend(example.input_ids)
            labels.extend(example.labels)
            position_ids.extend(range(length))
            sequence_ids.extend([number] * length)
        return cls(input_ids, labels, position_ids, sequence_ids)


def collate(batch: Sequence[Row], pad_id: int) -> dict[str, Tensor]:
    """Right-pad rows to the longest one.

    Returns:
        ``input_ids`` (B, T) long, padded with ``pad_id``; ``labels`` (B, T) long, -100 on padding;
        ``attention_mask`` (B, T) long, 1 on real tokens; ``position_ids`` (B, T) long, 0 on padding;
        ``sequence_ids`` (B, T) long, 0 on padding; ``num_target_tokens`` () long, the count of
        ``labels != -100`` (use ``int()`` or keep it as a tensor for an all-reduce).
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    width = max(len(row.input_ids) for row in batch)
    shape = (len(batch), width)
    input_ids = torch.full(shape, pad_id, dtype=torch.long)
    labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros(shape, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    sequence_ids = torch.zeros(shape, dtype=torch.long)
    for i, row in enumerate(batch):
        length = len(row.input_ids)
        if not len(row.labels) == len(row.position_ids) == len(row.sequence_ids) == length:
            raise ValueError(f"row {i}: input_ids, labels, position_ids and sequence_ids differ in length")
        input_ids[i, :length] = torch.tensor(row.input_ids, dtype=torch.long)
        labels[i, :length] = torch.tensor(row.labels, dtype=torch.long)
        attention_mask[i, :length] = 1
        position_ids[i, :length] = torch.tensor(row.position_ids, dtype=torch.long)
        sequence_ids[i, :length] = torch.tensor(row.sequence_ids, dtype=torch.long)
    return {
        "input_ids": input_ids,
        "labels": labels,
        "attention_mask": attention_mask,
        "position_ids": position_ids,
        "sequence_ids": sequence_ids,
        "num_target_tokens": (labels != IGNORE_INDEX).sum(),
    }
