"""Packed rows back to one example a row, and per-example results back into the packed layout.

A packed batch (:class:`training.data.collate.PackedRow`) puts several examples in one row. A source that
cannot attend within examples of a packed row (an HTTP server, a top-k cache, a Hugging Face model) gets
the examples one a row instead (:meth:`Unpacked.split`), and its per-token outputs are scattered back into
the packed layout (:meth:`Unpacked.merge`), so every position of the packed batch gets exactly what the
source computes for that token in its own example.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Unpacked:
    """Where each example of a packed batch lives: ``rows``, ``starts`` and ``lengths`` (N,) int64 index
    the packed (B, T) layout; ``input_ids`` (N, L) and ``attention_mask`` (N, L) hold one example a row,
    right-padded to the longest (L)."""

    shape: tuple[int, int]
    rows: Tensor
    starts: Tensor
    lengths: Tensor
    input_ids: Tensor
    attention_mask: Tensor

    @classmethod
    def split(cls, input_ids: Tensor, sequence_ids: Tensor, pad_id: int) -> Unpacked:
        """input_ids, sequence_ids: (B, T) (examples contiguous, numbered from 1, 0 = padding)."""
        if input_ids.shape != sequence_ids.shape or input_ids.dim() != 2:
            raise ValueError(f"input_ids {tuple(input_ids.shape)} and sequence_ids {tuple(sequence_ids.shape)} "
                             "must both be (B, T)")
        rows, starts, lengths = [], [], []
        for b in range(sequence_ids.shape[0]):
            ids = sequence_ids[b]
            real = ids != 0
            if not bool(real.any()):
                continue
            change = torch.ones_like(ids, dtype=torch.bool)
            change[1:] = ids[1:] != ids[:-1]
            for start in torch.nonzero(change & real).flatten().tolist():
                length = int((ids[start:] == ids[start]).long().cumprod(0).sum())
                rows.append(b)
                starts.append(start)
                lengths.append(length)
        if not rows:
            raise ValueError("the packed batch has no examples (every sequence id is 0)")
        longest = max(lengths)
        out_ids = torch.full((len(rows), longest), pad_id, dtype=input_ids.dtype, device=input_ids.device)
        mask = torch.zeros((len(rows), longest), dtype=torch.long, device=input_ids.device)
        for i, (b, start, length) in enumerate(zip(rows, starts, lengths, strict=True)):
            out_ids[i, :length] = input_ids[b, start:start + length]
            mask[i, :length] = 1
        as_long = {"dtype": torch.long, "device": input_ids.device}
        return cls((input_ids.shape[0], input_ids.shape[1]), torch.tensor(rows, **as_long),
                   torch.tensor(starts, **as_long), torch.tensor(lengths, **as_long), out_ids, mask)

    def merge(self, values: Tensor) -> Tensor:
        """Per-example values (N, L, ...) -> the packed layout (B, T, ...); padding positions are 0."""
        if values.shape[:2] != self.input_ids.shape:
            raise ValueError(f"values {tuple(values.shape)} do not match the unpacked batch "
                             f"{tuple(self.input_ids.shape)}")
        out = values.new_zeros((*self.shape, *values.shape[2:]))
        for i, (b, start, length) in enumerate(zip(self.rows.tolist(), self.starts.tolist(),
                                                   self.lengths.tolist(), strict=True)):
            out[b, start:start + length] = values[i, :length]
        return out
