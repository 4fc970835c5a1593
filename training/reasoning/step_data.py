"""Step-structured encoding for process supervision: token spans of reasoning steps, answers and tool calls.

An example is tokenized exactly as :func:`training.data.encode_example` does (same ``input_ids``, same
already-shifted ``labels``), and the parts of its completion are kept as token spans::

    input_ids = [bos] + encode(prompt) + encode(completion) + [eos]
    labels[t] = input_ids[t + 1] on completion positions, -100 elsewhere

    a span [s, e) of input_ids (the tokens of one step) is predicted by the label positions [s - 1, e - 1):
    labels[s - 1 : e - 1] == input_ids[s : e]

Spans (character spans of the completion mapped to tokens through the tokenizer's offsets; a token belongs
to a span when its characters overlap it):

* ``steps[k]``: the content of the k-th ``<step>...</step>`` (tags excluded, surrounding whitespace
  stripped); its score is ``step_labels[k]`` (1.0 correct, 0.0 wrong; 1.0 when the example has none), or
  the judge's score when a ``step_scorer`` is given;
* ``answer``: the content of ``<answer>...</answer>``; its score is the smallest step score (an answer is
  only as right as the weakest step leading to it; 1.0 without steps);
* ``tool_name`` / ``tool_arguments``: the tool name (without quotes) and the arguments object of a
  ``<tool_call>`` (see :func:`training.tasks.toolcall.spans`); ``tool_structure``: the tokens of the call
  that overlap a JSON structure character (:func:`training.reasoning.toolcall_supervision.json_structure_chars`:
  ``{ } [ ] : ,``, quotes and keys), tool-name tokens excluded.

Truncation (``truncate=True``) follows :func:`~training.data.encode_example`: the prompt is cut from the left
(spans shift with it) and, if that is not enough, the end of the sequence is cut. Token spans are in the
coordinates of ``input_ids``; a span cut by the window keeps only the tokens whose label position is in
the window (its ``end`` may then be ``len(input_ids) + 1``: the last kept position still predicts the next
token), and spans wholly beyond the window are dropped (steps stay a prefix, so step ``k`` is still
``steps[k]``).

:func:`collate_steps` adds per-position annotations to the usual batch tensors (see its docstring);
:class:`StepExampleStream` is the resumable, shuffled training stream of such batches.

The command that writes step-labelled data is ``python -m training.step_data``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from training.data import (
    IGNORE_INDEX,
    EncodedExample,
    Example,
    ExampleStream,
    QuarantineLog,
    StreamConfig,
    collate,
    encode_example,
)
from training.data.batching import ItemRows
from training.reasoning.toolcall_supervision import json_structure_chars
from training.tasks import arithmetic
from training.tasks import toolcall as toolcall_task
from training.tasks.markup import ANSWER_CLOSE, ANSWER_OPEN, STEP_CLOSE, STEP_OPEN
from training.tokenizer import DistilleryTokenizer

__all__ = [
    "KIND_ANSWER",
    "KIND_NONE",
    "KIND_OTHER",
    "KIND_STEP",
    "KIND_TOOL_NAME",
    "KIND_TOOL_STRUCTURE",
    "StepAlignmentError",
    "StepEncoded",
    "StepExampleStream",
    "StepScorer",
    "TokenSpan",
    "collate_steps",
    "encode_steps",
    "mix_corrupted",
]

# Per-position span kinds (``span_kind`` in a collated batch).
KIND_NONE = 0  # no target: prompt, the eos position, padding
KIND_OTHER = 1  # a completion target outside the spans below (markup tags, eos, tool-call values)
KIND_STEP = 2
KIND_ANSWER = 3
KIND_TOOL_NAME = 4
KIND_TOOL_STRUCTURE = 5

StepScorer = Callable[[str, list[str]], list[float]]
"""``(prompt, steps) -> one score in [0, 1] per step`` (e.g. a judge bound to its ``step_weights``)."""

# Innermost <step>...</step> (as in training.tasks.markup).
_STEP_RE = re.compile(r"<step>((?:(?!<step>|</step>).)*)</step>", re.DOTALL)


class StepAlignmentError(ValueError):
    """An example's ``steps`` do not match the ``<step>`` spans of its completion."""


@dataclass(frozen=True, slots=True)
class TokenSpan:
    """Tokens ``[start, end)`` of ``input_ids``; predicted by the label positions ``[start - 1, end - 1)``."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not 1 <= self.start <= self.end:
            raise ValueError(f"a token span needs 1 <= start <= end, got [{self.start}, {self.end})")

    @property
    def label_positions(self) -> range:
        """Positions whose labels (and logits) predict this span's tokens (the next-token shift)."""
        return range(self.start - 1, self.end - 1)

    def __len__(self) -> int:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class StepEncoded(EncodedExample):
    """An :class:`~training.data.EncodedExample` with its step, answer and tool-call spans.

    ``step_scores[k]`` in ``[0, 1]`` belongs to ``steps[k]``; ``answer_score`` to ``answer``;
    ``tool_structure`` lists token indices (each predicted by the label position one before it).
    """

    steps: tuple[TokenSpan, ...] = ()
    step_scores: tuple[float, ...] = ()
    answer: TokenSpan | None = None
    answer_score: float = 1.0
    tool_name: TokenSpan | None = None
    tool_arguments: TokenSpan | None = None
    tool_structure: tuple[int, ...] = ()

    def annotations(self) -> tuple[list[int], list[float], list[int]]:
        """Per position ``t`` of ``input_ids`` (all lists have length ``T``):

        * ``step_index[t]``: ``k`` if ``labels[t]`` is a token of step ``k``, else -1;
        * ``step_weight[t]``: the score of the step or answer that ``labels[t]`` belongs to, 1.0 on other
          targets, 0.0 where there is no target;
        * ``span_kind[t]``: one of the ``KIND_*`` constants (tool name wins over structure).
        """
        length = len(self.input_ids)
        step_index = [-1] * length
        kind = [KIND_OTHER if label != IGNORE_INDEX else KIND_NONE for label in self.labels]
        weight = [1.0 if label != IGNORE_INDEX else 0.0 for label in self.labels]
        for k, (span, score) in enumerate(zip(self.steps, self.step_scores, strict=True)):
            for t in span.label_positions:
                step_index[t], kind[t], weight[t] = k, KIND_STEP, score
        if self.answer is not None:
            for t in self.answer.label_positions:
                kind[t], weight[t] = KIND_ANSWER, self.answer_score
        for token in self.tool_structure:
            kind[token - 1] = KIND_TOOL_STRUCTURE
        if self.tool_name is not None:
            for t in self.tool_name.label_positions:
                kind[t] = KIND_TOOL_NAME
        return step_index, weight, kind


# ---------------------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------------------


def _strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    """``[start, end)`` of ``text`` without leading and trailing whitespace."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def step_char_spans(completion: str, steps: Sequence[str] | None) -> list[tuple[int, int]]:
    """Character spans of the step contents in ``completion`` (before the first ``<answer>``).

    Raises:
        StepAlignmentError: when ``steps`` is given and differs from the (stripped) step contents.
    """
    answer_at = completion.find(ANSWER_OPEN)
    reasoning_end = len(completion) if answer_at < 0 else answer_at
    spans = [_strip_span(completion, m.start(1), m.end(1)) for m in _STEP_RE.finditer(completion, 0, reasoning_end)]
    if steps is not None:
        found = [completion[a:b] for a, b in spans]
        if found != list(steps):
            raise StepAlignmentError(
                f"steps {list(steps)!r} do not match the {STEP_OPEN}...{STEP_CLOSE} spans of the completion {found!r}")
    return spans


def answer_char_span(completion: str) -> tuple[int, int] | None:
    """Character span of the (stripped) ``<answer>`` content, or None without a closed answer tag."""
    opening = completion.find(ANSWER_OPEN)
    if opening < 0:
        return None
    start = opening + len(ANSWER_OPEN)
    end = completion.find(ANSWER_CLOSE, start)
    if end < 0:
        return None
    return _strip_span(completion, start, end)


def _tokens_overlapping(offsets: Sequence[tuple[int, int]], start: int, end: int) -> list[int]:
    """Indices of the tokens whose character range overlaps ``[start, end)``."""
    return [i for i, (a, b) in enumerate(offsets) if a < end and b > start and b > a]


def _check_score(value: float, where: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{where}: step scores must be numbers in [0, 1], got {value!r}")
    return float(value)


def _as_example(example: Example | Mapping[str, Any]) -> Example:
    return example if isinstance(example, Example) else Example.model_validate(dict(example))


def encode_steps(
    example: Example | Mapping[str, Any],
    tokenizer: DistilleryTokenizer,
    max_length: int,
    truncate: bool = False,
    step_scorer: StepScorer | None = None,
) -> StepEncoded:
    """Tokenize an example like :func:`~training.data.encode_example` and keep its spans (module docstring).

    Args:
        example: a :class:`~training.data.Example` or a task dict (validated here).
        tokenizer: the run's tokenizer (its ``backend`` gives character offsets).
        max_length: the window ``T``.
        truncate: as in :func:`~training.data.encode_example` (otherwise too long raises).
        step_scorer: when given, replaces ``step_labels`` with ``step_scorer(prompt, steps)``.

    Returns:
        A :class:`StepEncoded`.

    Raises:
        StepAlignmentError: the example's ``steps`` differ from its completion's ``<step>`` spans.
        ValueError: a score outside ``[0, 1]`` or a scorer returning the wrong number of scores.
        SequenceTooLongError: over ``max_length`` without ``truncate``.
    """
    ex = _as_example(example)
    base = encode_example(ex, tokenizer, max_length, truncate)
    completion = ex.completion
    encoding = tokenizer.backend.encode(completion, add_special_tokens=False)
    offsets: list[tuple[int, int]] = list(encoding.offsets)
    window = len(base.input_ids)

    def token_span(char_start: int, char_end: int) -> TokenSpan | None:
        tokens = _tokens_overlapping(offsets, char_start, char_end)
        if tokens:
            first, after = tokens[0], tokens[-1] + 1
        else:  # an empty span sits before the first token that starts at or after it
            first = next((i for i, (a, _) in enumerate(offsets) if a >= char_start), len(offsets))
            after = first
        start, end = base.prompt_len + first, base.prompt_len + after
        if start > window or (start == end and start >= window):  # no label position inside the window
            return None
        return TokenSpan(start, min(end, window + 1))

    char_steps = step_char_spans(completion, ex.steps)
    texts = [completion[a:b] for a, b in char_steps]
    if step_scorer is not None and texts:
        scores = list(step_scorer(ex.prompt, texts))
        if len(scores) != len(texts):
            raise ValueError(f"example {ex.id!r}: the step scorer gave {len(scores)} scores for {len(texts)} steps")
    elif ex.step_labels is not None:
        scores = list(ex.step_labels)
    else:
        scores = [1.0] * len(texts)
    scores = [_check_score(s, f"example {ex.id!r}") for s in scores]

    steps: list[TokenSpan] = []
    kept_scores: list[float] = []
    for (a, b), score in zip(char_steps, scores, strict=True):
        span = token_span(a, b)
        if span is None:
            break
        steps.append(span)
        kept_scores.append(score)
    answer_chars = answer_char_span(completion)
    answer = token_span(*answer_chars) if answer_chars is not None else None
    answer_score = min(scores) if scores else 1.0

    tool_name = tool_arguments = None
    structure: list[int] = []
    if toolcall_task.CALL_OPEN in completion:
        try:
            call_spans = toolcall_task.spans(completion)
        except ValueError:
            call_spans = None
        if call_spans is not None:
            tool_name = token_span(*call_spans["name"])
            tool_arguments = token_span(*call_spans["arguments"])
            call_start, call_end = call_spans["call"]
            flags = json_structure_chars(completion[call_start:call_end])
            name_tokens = set(_tokens_overlapping(offsets, *call_spans["name"]))
            for i in _tokens_overlapping(offsets, call_start, call_end):
                a, b = offsets[i]
                lo, hi = max(a, call_start) - call_start, min(b, call_end) - call_start
                if i not in name_tokens and any(flags[lo:hi]) and base.prompt_len + i <= window:
                    structure.append(base.prompt_len + i)
    return StepEncoded(
        example_id=base.example_id, input_ids=base.input_ids, labels=base.labels, prompt_len=base.prompt_len,
        full_length=base.full_length, steps=tuple(steps), step_scores=tuple(kept_scores), answer=answer,
        answer_score=answer_score, tool_name=tool_name, tool_arguments=tool_arguments,
        tool_structure=tuple(structure),
    )


def collate_steps(batch: Sequence[StepEncoded], pad_id: int) -> dict[str, Tensor]:
    """Right-pad step-encoded examples (one a row) into tensors.

    Returns:
        Everything :func:`training.data.collate` returns (``input_ids``, ``labels``, ``attention_mask``,
        ``position_ids``, ``sequence_ids`` (B, T) long and ``num_target_tokens`` () long), plus, per label
        position (see :meth:`StepEncoded.annotations`): ``step_index`` (B, T) long, -1 outside steps and on
        padding; ``step_weight`` (B, T) float32, the step/answer score, 1.0 on other targets, 0.0 where
        there is no target; ``span_kind`` (B, T) long, a ``KIND_*`` constant (``KIND_NONE`` on padding).
    """
    out = collate(batch, pad_id)
    shape = out["input_ids"].shape
    step_index = torch.full(shape, -1, dtype=torch.long)
    step_weight = torch.zeros(shape, dtype=torch.float32)
    span_kind = torch.full(shape, KIND_NONE, dtype=torch.long)
    for i, row in enumerate(batch):
        index, weight, kind = row.annotations()
        length = len(row.input_ids)
        step_index[i, :length] = torch.tensor(index, dtype=torch.long)
        step_weight[i, :length] = torch.tensor(weight, dtype=torch.float32)
        span_kind[i, :length] = torch.tensor(kind, dtype=torch.long)
    out.update(step_index=step_index, step_weight=step_weight, span_kind=span_kind)
    return out


# ---------------------------------------------------------------------------------------------------------
# Streaming
# ---------------------------------------------------------------------------------------------------------

class StepExampleStream(ExampleStream):
    """:class:`~training.data.ExampleStream` (same shuffling, sharding, bucketing and exact resume) whose
    items are :class:`StepEncoded` (:meth:`encode`) and whose batches come from :func:`collate_steps`
    (:meth:`collate_rows`). Packing is not supported (one example a row).

    Args:
        paths, tokenizer, config, rank, world_size, quarantine: as for :class:`~training.data.ExampleStream`.
        step_scorer: optional judge scores replacing ``step_labels`` (cached per example id).
    """

    def __init__(self, paths: Sequence[str | Path], tokenizer: DistilleryTokenizer, config: StreamConfig, *,
                 rank: int = 0, world_size: int = 1, quarantine: QuarantineLog | None = None,
                 step_scorer: StepScorer | None = None) -> None:
        if config.batching != "bucket":
            raise ValueError("StepExampleStream supports batching='bucket' only (one example a row)")
        super().__init__(paths, tokenizer, config, rank=rank, world_size=world_size, quarantine=quarantine)
        self._step_tokenizer = tokenizer
        self.step_scorer = step_scorer
        self._score_cache: dict[tuple[str, tuple[str, ...]], list[float]] = {}

    def _cached_scorer(self, prompt: str, steps: list[str]) -> list[float]:
        assert self.step_scorer is not None
        key = (prompt, tuple(steps))
        if key not in self._score_cache:
            self._score_cache[key] = list(self.step_scorer(prompt, steps))
        return self._score_cache[key]

    def encode(self, example: Example) -> StepEncoded:
        """Encode one example with this stream's settings."""
        return encode_steps(example, self._step_tokenizer, self.config.max_length, self.config.truncate,
                            self._cached_scorer if self.step_scorer is not None else None)

    def collate_rows(self, rows: ItemRows) -> dict[str, Tensor]:
        """One batch (one :class:`StepEncoded` a row) as :func:`collate_steps` tensors."""
        items: list[StepEncoded] = []
        for row in rows:
            (item,) = row
            assert isinstance(item.example, StepEncoded)
            items.append(item.example)
        return collate_steps(items, self.tokenizer.pad_id)


# ---------------------------------------------------------------------------------------------------------
# Step-labelled data
# ---------------------------------------------------------------------------------------------------------


def mix_corrupted(examples: Sequence[Mapping[str, Any]], fraction: float, seed: int,
                  mode: Literal["add", "replace"] = "add") -> list[dict[str, Any]]:
    """Arithmetic examples with a share of corrupted solutions (``step_labels`` 0 at the wrong step only:
    the later steps are right given it, see :func:`training.tasks.arithmetic.corrupt`).

    Each example is picked with probability ``fraction`` (deterministic for ``seed``); a picked example
    gets a corrupted copy (:func:`training.tasks.arithmetic.corrupt`) right after it (``'add'``) or in its
    place (``'replace'``). Examples that cannot be corrupted are kept unchanged.

    Args:
        examples: arithmetic examples (dicts).
        fraction: in ``[0, 1]``.
        seed: seed of the picks and of the mistakes.
        mode: ``'add'`` or ``'replace'``.

    Returns:
        A new list of example dicts.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    if mode not in ("add", "replace"):
        raise ValueError(f"mode must be 'add' or 'replace', got {mode!r}")
    rng = random.Random(f"process:{seed}")
    out: list[dict[str, Any]] = []
    for example in examples:
        record = dict(example)
        picked = rng.random() < fraction
        corrupted = None
        if picked:
            try:
                corrupted = dict(arithmetic.corrupt(record, rng))  # type: ignore[arg-type]
            except ValueError:
                corrupted = None
        if corrupted is None or mode == "add":
            out.append(record)
        if corrupted is not None:
            out.append(corrupted)
    return out
