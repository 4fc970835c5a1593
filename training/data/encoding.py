"""Turning an :class:`Example` into token ids and next-token labels for the distillation loss.

Label alignment (labels are already shifted; the loss must NOT shift them again)::

    input_ids = [bos] + encode(prompt) + encode(completion) + [eos]      # length T
    prompt_len = 1 + len(encode(prompt))                                   # bos + prompt positions
    labels[t] = input_ids[t + 1]   for prompt_len - 1 <= t <= T - 2         # predicts completion and eos
    labels[t] = -100               otherwise (prompt positions but the last, and position T - 1)

``bos`` is there when the tokenizer starts sequences with one (``tokenizer.adds_bos``: always for Distillery's
own tokenizers); without it ``prompt_len = len(encode(prompt))`` and an empty prompt is an error.

So the logits at position ``t`` are scored against ``labels[t]`` directly: position ``prompt_len - 1``
(the last prompt token, or ``bos`` for an empty prompt) predicts the first completion token and position
``T - 2`` (the last completion token) predicts ``eos``. Prompt and completion are encoded separately, so no
token straddles their boundary.

Truncation policy (only with ``truncate=True``; otherwise :class:`SequenceTooLongError`): first drop tokens
from the left of the prompt, keeping ``bos`` and the prompt's end (the question usually sits last, after
instructions and few-shot examples); if the completion still does not fit once the prompt is gone, cut the
end of the sequence at ``max_length``. The labels are those of the full sequence cut to the window, so the
last kept position still targets the next completion token (or ``eos`` when only ``eos`` was cut off).

Chat records (``messages``) are rendered with the tokenizer's chat template (which writes its own start
tokens: no bos is added) and only the assistant turns are targets: for each assistant turn ``i`` its text is
what ``template(messages[:i+1])`` adds after ``template(messages[:i], add_generation_prompt=True)``, so the
role header stays context and the turn's end marker (e.g. ``<|im_end|>``) is a target. Tokens are mapped to
those character spans by the tokenizer's offsets; the whole conversation is tokenized once, as at inference.
Truncation of a chat record keeps its beginning and cuts the end at ``max_length``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from training.data.errors import SequenceTooLongError
from training.data.schema import Example

IGNORE_INDEX = -100


class TokenizerLike(Protocol):
    """What the data pipeline needs of a tokenizer: ``encode`` adds no special tokens."""

    @property
    def bos_id(self) -> int | None: ...

    @property
    def adds_bos(self) -> bool: ...

    @property
    def eos_id(self) -> int: ...

    @property
    def pad_id(self) -> int: ...

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]: ...

    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], *,
                            add_generation_prompt: bool = False) -> str: ...


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


def _start(tokenizer: TokenizerLike) -> list[int]:
    """The ids a sequence starts with: ``[bos]`` when the tokenizer adds one, else nothing."""
    adds = getattr(tokenizer, "adds_bos", True)
    return [tokenizer.bos_id] if adds and tokenizer.bos_id is not None else []


def example_length(example: Example, tokenizer: TokenizerLike) -> int:
    """Untruncated token length of an example: ``[bos] + prompt + completion + eos``, or the rendered chat."""
    if example.messages is not None:
        return len(tokenizer.encode_with_offsets(tokenizer.apply_chat_template(example.chat()))[0])
    return (len(_start(tokenizer)) + len(tokenizer.encode(example.prompt)) + len(tokenizer.encode(example.completion))
            + 1)


def encode_example(example: Example, tokenizer: TokenizerLike, max_length: int,
                   truncate: bool) -> EncodedExample:
    """Tokenize an example and build its next-token labels (see the module docstring for the alignment).

    Raises:
        SequenceTooLongError: when the example is longer than ``max_length`` and ``truncate`` is False.
        ValueError: an empty prompt with a tokenizer that has no bos (nothing to predict the first token from).
    """
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2 (bos and one token), got {max_length}")
    if example.messages is not None:
        return encode_chat_example(example, tokenizer, max_length, truncate)
    start = _start(tokenizer)
    prompt = tokenizer.encode(example.prompt)
    completion = tokenizer.encode(example.completion)
    full_length = len(start) + len(prompt) + len(completion) + 1
    excess = full_length - max_length
    if excess > 0:
        if not truncate:
            raise SequenceTooLongError(
                f"example {example.id!r} has {full_length} tokens, over max_length={max_length}; "
                "raise max_length or enable truncation")
        prompt = prompt[min(excess, len(prompt) - (0 if start else 1)):]
    if not start and not prompt:
        raise ValueError(f"example {example.id!r} has an empty prompt and the tokenizer has no bos token to "
                         "start from; give it a prompt")
    sequence = [*start, *prompt, *completion, tokenizer.eos_id]
    prompt_len = len(start) + len(prompt)
    labels = [IGNORE_INDEX] * (prompt_len - 1) + sequence[prompt_len:] + [IGNORE_INDEX]
    return EncodedExample(example_id=example.id, input_ids=sequence[:max_length], labels=labels[:max_length],
                          prompt_len=prompt_len, full_length=full_length)


def assistant_spans(messages: Sequence[Mapping[str, Any]], tokenizer: TokenizerLike) -> tuple[str, list[tuple[int, int]]]:
    """Render a conversation and find each assistant turn's ``(start, end)`` character span in the text.

    Raises ValueError when the template is not prefix-stable (rendering the first turns is not a prefix of
    rendering them all, e.g. templates that rewrite earlier turns), since the turns cannot then be located.
    """
    text = tokenizer.apply_chat_template(messages)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(messages[:i], add_generation_prompt=True) if i else ""
        through = tokenizer.apply_chat_template(messages[: i + 1])
        if not (text.startswith(before) and text.startswith(through) and len(through) > len(before)):
            raise ValueError(
                f"the chat template is not prefix-stable at turn {i} (rendering the conversation up to it is not "
                "a prefix of the whole): assistant turns cannot be located for the loss mask")
        spans.append((len(before), len(through)))
    return text, spans


def encode_chat_example(example: Example, tokenizer: TokenizerLike, max_length: int,
                        truncate: bool) -> EncodedExample:
    """A chat record -> ids of its rendered conversation, with labels on assistant-turn tokens only.

    A token is a target when its characters overlap an assistant span; ``labels[t] = input_ids[t + 1]`` when
    token ``t + 1`` is a target (module docstring). ``prompt_len`` is the position of the first target token.
    """
    text, spans = assistant_spans(example.chat(), tokenizer)
    ids, offsets = tokenizer.encode_with_offsets(text)
    is_target = [any(token_start < span_end and span_start < token_end for span_start, span_end in spans)
                 for token_start, token_end in offsets]
    if is_target and is_target[0]:
        raise ValueError(f"example {example.id!r}: the conversation starts with an assistant token; "
                         "nothing precedes it to predict it from")
    labels = [ids[t + 1] if is_target[t + 1] else IGNORE_INDEX for t in range(len(ids) - 1)] + [IGNORE_INDEX]
    full_length = len(ids)
    if full_length > max_length and not truncate:
        raise SequenceTooLongError(
            f"example {example.id!r} has {full_length} tokens, over max_length={max_length}; "
            "raise max_length or enable truncation")
    first_target = next((t for t, flag in enumerate(is_target) if flag), full_length)
    return EncodedExample(example_id=example.id, input_ids=ids[:max_length], labels=labels[:max_length],
                          prompt_len=first_target, full_length=full_length)
