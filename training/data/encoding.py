"""Turning an :class:`Example` into token ids and next-token labels for the distillation loss.

Label alignment (labels are already shifted; the loss must NOT shift them again)::

    input_ids = [bos] + encode(prompt) + encode(completion) + [eos]      # length T
    prompt_len = 1 + len(encode(prompt))                                   # bos + prompt positions
    labels[t] = input_ids[t + 1]   for prompt_len - 1 <= t <= T - 2         # predicts completion and eos
    labels[t] = -100               otherwise (prompt positions but the last, and position T - 1)

So the logits at position ``t`` are scored against ``labels[t]`` directly: position ``prompt_len - 1``
(the last prompt token, or ``bos`` for an empty prompt) predicts the first completion token and position
``T - 2`` (the last completion token) predicts ``eos``. Prompt and completion are encoded separately, so no
token straddles their boundary.

Truncation policy (only with ``truncate=True``; otherwise :class:`SequenceTooLongError`): first drop tokens
from the left of the prompt, keeping ``bos`` and the prompt's end (the question usually sits last, after
instructions and few-shot examples); if the completion still does not fit once the prompt is gone, cut the
end of the sequence at ``max_length``. The labels are those of the full sequence cut to the window, so the
last kept position still targets the next completion token (or ``eos`` when only ``eos`` was cut off).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from training.data.errors import SequenceTooLongError
from training.data.schema import Example

IGNORE_INDEX = -100


class TokenizerLike(Protocol):
    """What the data pipeline needs of a tokenizer: ``encode`` adds no special tokens."""

    @property
    def bos_id(self) -> int: ...

    @property
    def eos_id(self) -> int: ...

    @property
    def pad_id(self) -> int: ...

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...


@dataclass(frozen=True, slots=True)
class EncodedExample:
    """One tokenized example; ``input_ids`` and ``labels`` are (T,) with ``T <= max_length``.

    ``prompt_len`` counts ``bos`` plus the prompt tokens kept after truncation; ``full_length`` is the
    length before truncation.
    """

    example_id: str
    input_ids: list[int]
    labels: list[int]
    prompt_len: int
    full_length: int

    @property
    def truncated(self) -> bool:
        return self.full_length > len(self.input_ids)

    @property
    def num_targets(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)

    @property
    def position_ids(self) -> list[int]:
        """(T,) positions ``0 .. T-1``."""
        return list(range(len(self.input_ids)))

    @property
    def sequence_ids(self) -> list[int]:
        """(T,) segment id 1 for every token (0 is reserved for padding)."""
        return [1] * len(self.input_ids)


def example_length(example: Example, tokenizer: TokenizerLike) -> int:
    """Untruncated token length of an example: ``bos + prompt + completion + eos``."""
    return len(tokenizer.encode(example.prompt)) + len(tokenizer.encode(example.completion)) + 2


def encode_example(example: Example, tokenizer: TokenizerLike, max_length: int,
                   truncate: bool) -> EncodedExample:
    """Tokenize an example and build its next-token labels (see the module docstring for the alignment).

    Raises:
        SequenceTooLongError: when the example is longer than ``max_length`` and ``truncate`` is False.
    """
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2 (bos and one token), got {max_length}")
    prompt = tokenizer.encode(example.prompt)
    completion = tokenizer.encode(example.completion)
    full_length = len(prompt) + len(completion) + 2
    excess = full_length - max_length
    if excess > 0:
        if not truncate:
            raise SequenceTooLongError(
                f"example {example.id!r} has {full_length} tokens, over max_length={max_length}; "
                "raise max_length or enable truncation")
        prompt = prompt[min(excess, len(prompt)):]
    sequence = [tokenizer.bos_id, *prompt, *completion, tokenizer.eos_id]
    prompt_len = 1 + len(prompt)
    labels = [IGNORE_INDEX] * (prompt_len - 1) + sequence[prompt_len:] + [IGNORE_INDEX]
    return EncodedExample(example_id=example.id, input_ids=sequence[:max_length], labels=labels[:max_length],
                          prompt_len=prompt_len, full_length=full_length)
