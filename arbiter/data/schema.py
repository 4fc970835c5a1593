"""Pairwise preference records (JSON Lines) for judge training, validated line by line.

One line is one pair::

    {"prompt": "Q: 6+1*5=?\\n", "a": "<think>...</think><answer>11</answer>", "b": "...", "winner": "a",
     "clauses_a": {"answer_correct": 1, "steps_valid": 1, "format_ok": 1}, "clauses_b": {...},
     "steps_a": ["1*5=5", "6+5=11"], "step_labels_a": [1.0, 1.0], "steps_b": [...], "step_labels_b": [...]}

``winner`` is ``"a"``, ``"b"`` or ``"tie"``. Clause labels (``clauses_a`` / ``clauses_b``: clause name ->
0 or 1) and step labels (``steps_a`` with ``step_labels_a`` in [0, 1], likewise for ``b``) are optional and
independent per side. Steps must be the ``<step>...</step>`` spans of their response, in order (compared
after stripping whitespace), because the judge's step head reads the hidden state at each ``</step>``
token. ``id`` and ``kind`` are optional provenance fields; any other key is an error.

:func:`read_pairs` validates a whole file and raises :class:`PairDataError` naming every bad line as
``file:line: reason``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Side = Literal["a", "b"]
Winner = Literal["a", "b", "tie"]
STEP_OPEN, STEP_CLOSE = "<step>", "</step>"
_STEP_SPAN = re.compile(r"<step>(.*?)</step>", re.DOTALL)
_CLAUSE_NAME = re.compile(r"[a-z][a-z0-9_]*")
MAX_REPORTED_LINES = 20


class PairDataError(ValueError):
    """A preference file has bad lines; ``problems`` holds one ``file:line: reason`` string per bad line."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        shown = problems[:MAX_REPORTED_LINES]
        more = len(problems) - len(shown)
        tail = f"\n... and {more} more bad lines" if more > 0 else ""
        super().__init__(f"{path}: {len(problems)} bad line(s)\n" + "\n".join(shown) + tail)


def step_spans(response: str) -> list[str]:
    """The stripped contents of the ``<step>...</step>`` spans of ``response``, in order."""
    return [span.strip() for span in _STEP_SPAN.findall(response)]


class PreferencePair(BaseModel):
    """One judged pair of responses to the same prompt (see the module docstring for the format)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = Field(min_length=1)
    a: str = Field(min_length=1)
    b: str = Field(min_length=1)
    winner: Winner
    clauses_a: dict[str, Literal[0, 1]] | None = None
    clauses_b: dict[str, Literal[0, 1]] | None = None
    steps_a: list[str] | None = None
    steps_b: list[str] | None = None
    step_labels_a: list[float] | None = None
    step_labels_b: list[float] | None = None
    id: str | None = None
    kind: str | None = None

    @field_validator("clauses_a", "clauses_b")
    @classmethod
    def _clause_names(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        for name in value or {}:
            if _CLAUSE_NAME.fullmatch(name) is None:
                raise ValueError(f"clause name {name!r} must be lower_snake_case")
        return value

    @field_validator("step_labels_a", "step_labels_b")
    @classmethod
    def _labels_in_range(cls, value: list[float] | None) -> list[float] | None:
        for label in value or []:
            if not 0.0 <= label <= 1.0:
                raise ValueError(f"step labels must lie in [0, 1], got {label}")
        return value

    @model_validator(mode="after")
    def _steps_match_responses(self) -> PreferencePair:
        for side in ("a", "b"):
            steps: list[str] | None = getattr(self, f"steps_{side}")
            labels: list[float] | None = getattr(self, f"step_labels_{side}")
            if (steps is None) != (labels is None):
                raise ValueError(f"steps_{side} and step_labels_{side} must be given together")
            if steps is None or labels is None:
                continue
            if len(steps) != len(labels):
                raise ValueError(f"steps_{side} has {len(steps)} steps but step_labels_{side} has {len(labels)}")
            response: str = getattr(self, side)
            spans = step_spans(response)
            if response.count(STEP_CLOSE) != len(spans):
                raise ValueError(f"response {side} has a {STEP_CLOSE} outside a complete {STEP_OPEN} span")
            if spans != [step.strip() for step in steps]:
                raise ValueError(
                    f"steps_{side} must be the {STEP_OPEN}...{STEP_CLOSE} spans of response {side} in order: "
                    f"the response has {spans!r}, steps_{side} is {steps!r}"
                )
        return self

    def response(self, side: Side) -> str:
        """Response ``a`` or ``b``."""
        return self.a if side == "a" else self.b

    def clauses(self, side: Side) -> dict[str, int] | None:
        """Clause labels of one side (``None`` when not annotated)."""
        return self.clauses_a if side == "a" else self.clauses_b

    def step_labels(self, side: Side) -> list[float] | None:
        """Step labels of one side (``None`` when not annotated)."""
        return self.step_labels_a if side == "a" else self.step_labels_b


def _reason(error: ValidationError) -> str:
    """One line per pydantic error: ``field: message`` (``Value error, `` prefixes dropped)."""
    parts = []
    for item in error.errors():
        loc = ".".join(str(part) for part in item["loc"])
        message = str(item["msg"]).removeprefix("Value error, ")
        parts.append(f"{loc}: {message}" if loc else message)
    return "; ".join(parts)


def parse_pair_line(line: str) -> PreferencePair:
    """Validate one JSONL line; raises ``ValueError`` whose message is the reason (no location)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    try:
        return PreferencePair.model_validate(record)
    except ValidationError as exc:
        raise ValueError(_reason(exc)) from exc


def read_pairs(path: str | Path) -> list[PreferencePair]:
    """Every pair of a JSONL file (blank lines skipped); :class:`PairDataError` lists all bad lines."""
    path = Path(path)
    pairs: list[PreferencePair] = []
    problems: list[str] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                pairs.append(parse_pair_line(line))
            except ValueError as exc:
                problems.append(f"{path}:{number}: {exc}")
    if problems:
        raise PairDataError(path, problems)
    return pairs


def write_pairs(path: str | Path, pairs: Iterable[PreferencePair]) -> int:
    """Write pairs one JSON object a line (unset optional fields omitted); returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for pair in pairs:
            handle.write(json.dumps(pair.model_dump(exclude_none=True), ensure_ascii=False) + "\n")
            count += 1
    return count
