"""Token ids for judge inputs and padded batches of them.

One input is ``<bos>`` + prompt + response + ``<eos>``; prompt and response are encoded separately, so a
response has the same ids whatever prompt precedes it. A too-long input loses the start of its prompt
(``<bos>`` kept); a response that alone does not fit is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from arbiter.judge_training.model import STEP_END_ID
from training.tokenizer import DistilleryTokenizer, require_native

PaddingSide = Literal["left", "right"]


class InputTooLongError(ValueError):
    """A response does not fit the judge's maximum input length."""


@dataclass(frozen=True)
class EncodedInput:
    """ids: ``<bos>`` + prompt + response + ``<eos>``; response_start: index of the response's first token
    in ``ids``; step_positions: indices of the response's ``</step>`` tokens in ``ids``."""

    ids: list[int]
    response_start: int
    step_positions: list[int]


def encode_input(tokenizer: DistilleryTokenizer, prompt: str, response: str, max_length: int) -> EncodedInput:
    """Encode one judge input of at most ``max_length`` tokens."""
    require_native(tokenizer, "the judge (step verdicts at </step>)")
    prompt_ids = tokenizer.encode(prompt)
    response_ids = tokenizer.encode(response)
    room = max_length - 2 - len(response_ids)
    if room < 0:
        raise InputTooLongError(
            f"the response is {len(response_ids)} tokens; this judge reads at most {max_length - 2} "
            "response tokens (max_length minus <bos> and <eos>)"
        )
    kept = prompt_ids[len(prompt_ids) - room:] if len(prompt_ids) > room else prompt_ids
    ids = [tokenizer.bos_id, *kept, *response_ids, tokenizer.eos_id]
    start = 1 + len(kept)
    positions = [start + i for i, token in enumerate(response_ids) if token == STEP_END_ID]
    return EncodedInput(ids=ids, response_start=start, step_positions=positions)


def pad(sequences: list[list[int]], pad_id: int, side: PaddingSide = "right") -> tuple[Tensor, Tensor, Tensor]:
    """Pad to the longest sequence: input_ids (B, T), attention_mask (B, T) and offsets (B,), the index at
    which each row's first token landed (0 for right padding)."""
    if not sequences:
        raise ValueError("cannot pad an empty batch")
    width = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    offsets = torch.zeros(len(sequences), dtype=torch.long)
    for row, seq in enumerate(sequences):
        start = width - len(seq) if side == "left" else 0
        ids[row, start:start + len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, start:start + len(seq)] = 1
        offsets[row] = start
    return ids, mask, offsets


@dataclass(frozen=True)
class PaddedInputs:
    """A padded batch of judge inputs: input_ids, attention_mask, response_mask (B, T) (1 on response tokens
    and the closing ``<eos>``) and offsets (B,) (where each row's first token landed)."""

    input_ids: Tensor
    attention_mask: Tensor
    response_mask: Tensor
    offsets: Tensor


def pad_inputs(inputs: list[EncodedInput], pad_id: int, side: PaddingSide = "right") -> PaddedInputs:
    """:func:`pad` for encoded inputs, plus the response mask."""
    ids, mask, offsets = pad([item.ids for item in inputs], pad_id, side)
    response = torch.zeros_like(mask)
    for row, item in enumerate(inputs):
        start = int(offsets[row])
        response[row, start + item.response_start:start + len(item.ids)] = 1
    return PaddedInputs(ids, mask, response, offsets)
