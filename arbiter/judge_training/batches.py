"""Preference pairs as tensors: encoding once, then collating pairs into padded judge batches.

A batch of P pairs is one forward pass over 2P sequences: rows ``0..P-1`` are the ``a`` responses and rows
``P..2P-1`` the ``b`` responses.

The LM objective (pretraining and the auxiliary term) learns from *good* responses only: a response is
good when it did not lose its pair and carries no negative label (no clause labelled 0, no step labelled
below 0.5). Unlabelled data thus uses winners and both sides of ties.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from arbiter.data.schema import PreferencePair, Side
from arbiter.judge_training.encoding import EncodedInput, PaddingSide, encode_input, pad_inputs
from arbiter.judge_training.losses import WINNER_INDEX
from training.tokenizer import DistilleryTokenizer

IGNORE_INDEX = -100


@dataclass(frozen=True)
class EncodedSide:
    """One response: its input, clause targets/mask (C,) in the judge's clause order, step labels (one per
    ``</step>`` of the response) or None, and whether the LM objective may learn from it (``good``)."""

    input: EncodedInput
    clause_targets: tuple[float, ...]
    clause_mask: tuple[bool, ...]
    step_labels: tuple[float, ...] | None
    good: bool


@dataclass(frozen=True)
class EncodedPair:
    a: EncodedSide
    b: EncodedSide
    winner: str


@dataclass
class PairBatch:
    """input_ids, attention_mask, response_mask: (2P, T); winner: (P,) in {0: a, 1: b, 2: tie};
    clause_targets and clause_mask: (2P, C); step_targets and step_mask: (2P, T), set at labelled
    ``</step>`` positions; lm_labels: (2P, T) next-token targets over good responses (-100 elsewhere)."""

    input_ids: Tensor
    attention_mask: Tensor
    response_mask: Tensor
    winner: Tensor
    clause_targets: Tensor
    clause_mask: Tensor
    step_targets: Tensor
    step_mask: Tensor
    lm_labels: Tensor

    @property
    def num_pairs(self) -> int:
        return int(self.winner.shape[0])


def _encode_side(pair: PreferencePair, side: Side, tokenizer: DistilleryTokenizer, clauses: Sequence[str],
                 max_length: int) -> EncodedSide:
    encoded = encode_input(tokenizer, pair.prompt, pair.response(side), max_length)
    labels = pair.clauses(side) or {}
    targets = tuple(float(labels.get(name, 0)) for name in clauses)
    mask = tuple(name in labels for name in clauses)
    steps = pair.step_labels(side)
    if steps is not None and len(steps) != len(encoded.step_positions):
        raise ValueError(
            f"response {side} has {len(steps)} step labels but {len(encoded.step_positions)} </step> tokens "
            "after tokenization"
        )
    lost = pair.winner not in (side, "tie")
    negative = 0 in labels.values() or any(label < 0.5 for label in steps or ())
    return EncodedSide(encoded, targets, mask, None if steps is None else tuple(steps), not (lost or negative))


def encode_pairs(pairs: Sequence[PreferencePair], tokenizer: DistilleryTokenizer, clauses: Sequence[str],
                 max_length: int) -> list[EncodedPair]:
    """Encode every pair (``ValueError`` naming the pair when a response is too long or its step labels
    do not line up with its ``</step>`` tokens)."""
    out = []
    for pair in pairs:
        try:
            a = _encode_side(pair, "a", tokenizer, clauses, max_length)
            b = _encode_side(pair, "b", tokenizer, clauses, max_length)
        except ValueError as exc:
            raise ValueError(f"pair {pair.id or pair.prompt!r}: {exc}") from exc
        out.append(EncodedPair(a, b, pair.winner))
    return out


def lm_inputs(pairs: Sequence[EncodedPair]) -> list[EncodedInput]:
    """The good responses of the pairs (what the LM objective learns from), ``a`` before ``b``."""
    return [side.input for pair in pairs for side in (pair.a, pair.b) if side.good]


def lm_labels(inputs: Sequence[EncodedInput], input_ids: Tensor, offsets: Tensor, rows: Sequence[bool]) -> Tensor:
    """(B, T) next-token labels for the rows flagged in ``rows``: position t holds token t + 1 from the last
    prompt token up to the token before ``<eos>`` (so the response and ``<eos>`` are predicted)."""
    labels = torch.full(input_ids.shape, IGNORE_INDEX, dtype=torch.long)
    for row, (item, wanted) in enumerate(zip(inputs, rows, strict=True)):
        if wanted:
            start, end = int(offsets[row]) + item.response_start - 1, int(offsets[row]) + len(item.ids) - 1
            labels[row, start:end] = input_ids[row, start + 1:end + 1]
    return labels


def lm_batch(inputs: Sequence[EncodedInput], pad_id: int, side: PaddingSide) -> tuple[Tensor, Tensor, Tensor]:
    """input_ids, attention_mask and next-token labels (B, T) for LM training on whole inputs."""
    padded = pad_inputs(list(inputs), pad_id, side)
    labels = lm_labels(inputs, padded.input_ids, padded.offsets, [True] * len(inputs))
    return padded.input_ids, padded.attention_mask, labels


def collate(pairs: Sequence[EncodedPair], pad_id: int, side: PaddingSide, num_clauses: int) -> PairBatch:
    """Stack pairs into one :class:`PairBatch`."""
    rows = [p.a for p in pairs] + [p.b for p in pairs]
    inputs = [r.input for r in rows]
    padded = pad_inputs(inputs, pad_id, side)
    ids, offsets = padded.input_ids, padded.offsets
    clause_targets = torch.tensor([r.clause_targets for r in rows], dtype=torch.float32).reshape(len(rows), num_clauses)
    clause_mask = torch.tensor([r.clause_mask for r in rows], dtype=torch.bool).reshape(len(rows), num_clauses)
    step_targets = torch.zeros(ids.shape, dtype=torch.float32)
    step_mask = torch.zeros(ids.shape, dtype=torch.bool)
    for row, item in enumerate(rows):
        if item.step_labels is None:
            continue
        for position, label in zip(item.input.step_positions, item.step_labels, strict=True):
            step_targets[row, offsets[row] + position] = label
            step_mask[row, offsets[row] + position] = True
    winner = torch.tensor([WINNER_INDEX[p.winner] for p in pairs], dtype=torch.long)
    labels = lm_labels(inputs, ids, offsets, [r.good for r in rows])
    return PairBatch(ids, padded.attention_mask, padded.response_mask, winner, clause_targets, clause_mask,
                     step_targets, step_mask, labels)
