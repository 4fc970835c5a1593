"""JSON tool calls: natural-language requests mapped to one call from a small fixed catalogue.

Prompt ``User: What's the weather in Paris in celsius?\\n``, completion
``<tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}</tool_call>``.

Canonical JSON: top-level keys ``name`` then ``arguments``; argument keys in the tool's declared
parameter order (see :mod:`training.tasks.toolcall_catalogue`, *not* sorted); separators ``", "`` and
``": "``; ASCII only. The ``answer`` field holds that JSON text.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

import json_repair
from pydantic import field_validator

from training.config_base import FrozenStrictModel
from training.tasks.markup import extract_tagged
from training.tasks.schema import Example, make_id
from training.tasks.toolcall_catalogue import CATALOGUE, ArgumentValue

TASK_NAME = "toolcall"
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
_JSON_WHITESPACE = " \t\n\r"


class ToolCallConfig(FrozenStrictModel):
    """Which catalogue tools to draw requests for (uniformly)."""

    tools: tuple[str, ...] = tuple(CATALOGUE)

    @field_validator("tools")
    @classmethod
    def _known_tools(cls, tools: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in tools if name not in CATALOGUE]
        if not tools or unknown:
            raise ValueError(f"tools must be a non-empty subset of {sorted(CATALOGUE)}, got {tools}")
        return tools


@dataclass(frozen=True)
class ToolCallScore:
    """How well a generated call matches the expected one.

    ``valid_json``: the text between ``<tool_call>`` and ``</tool_call>`` (or ``<eos>``/end when the
    closing marker is missing) is a JSON object for ``json.loads``. ``repaired``: it is not, but
    ``json_repair.loads`` turns it into a non-empty object. ``name_match`` / ``arguments_match``: the
    strictly or repaired parsed object has the expected ``name`` / ``arguments`` (JSON types must match:
    ``5`` is not ``"5"``). ``exact_match``: strictly valid and equal to the expected call as a whole.
    """

    valid_json: bool
    repaired: bool
    name_match: bool
    arguments_match: bool
    exact_match: bool

    def as_metrics(self) -> dict[str, float]:
        """The score as 1.0/0.0 metrics, with ``accuracy`` = ``exact_match``."""
        return {
            "accuracy": float(self.exact_match),
            "valid_json": float(self.valid_json),
            "repaired": float(self.repaired),
            "name_match": float(self.name_match),
            "arguments_match": float(self.arguments_match),
            "exact_match": float(self.exact_match),
        }


def canonical_json(name: str, arguments: dict[str, ArgumentValue]) -> str:
    """The canonical JSON text of a call (key order as given: callers pass catalogue order)."""
    return json.dumps({"name": name, "arguments": arguments}, separators=(", ", ": "), ensure_ascii=True)


def format_completion(name: str, arguments: dict[str, ArgumentValue]) -> str:
    """The completion for a call: canonical JSON between the tool-call markers."""
    return f"{CALL_OPEN}{canonical_json(name, arguments)}{CALL_CLOSE}"


def generate(n: int, seed: int, config: ToolCallConfig | None = None) -> list[Example]:
    """Generate ``n`` request/call pairs, deterministically for ``seed`` and ``config``.

    The tool, its arguments and the request template are drawn uniformly. Prompts may repeat (the
    vocabularies are small on purpose). The first ``k`` examples do not depend on ``n``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    config = config or ToolCallConfig()
    rng = random.Random(f"{TASK_NAME}:{seed}")
    examples: list[Example] = []
    for index in range(n):
        tool = CATALOGUE[rng.choice(config.tools)]
        arguments = tool.sample_arguments(rng)
        request = tool.request(arguments, rng.randrange(len(tool.templates)))
        examples.append(
            {
                "id": make_id(TASK_NAME, seed, index),
                "task": TASK_NAME,
                "prompt": f"User: {request}\n",
                "completion": format_completion(tool.name, arguments),
                "answer": canonical_json(tool.name, arguments),
            }
        )
    return examples


def _same_json(a: Any, b: Any) -> bool:
    """Structural equality that also requires equal JSON types (``1``, ``1.0``, ``True`` all differ)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_json(a[key], b[key]) for key in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _repair(payload: str) -> Any:
    """``json_repair``'s reading of ``payload``; ``None`` if the library gives up with an error."""
    try:
        return json_repair.loads(payload)
    except (ValueError, TypeError, RecursionError):
        return None


def _expected_call(example: Example) -> dict[str, Any]:
    payload = extract_tagged(example["completion"], CALL_OPEN, CALL_CLOSE)
    call = json.loads(example.get("answer") or payload or "null")
    if not isinstance(call, dict):
        raise ValueError(f"example {example['id']!r} has no tool call")
    return call


def verify(example: Example, generated_text: str) -> ToolCallScore:
    """Score ``generated_text`` against the example's call (see :class:`ToolCallScore`)."""
    expected = _expected_call(example)
    payload = extract_tagged(generated_text, CALL_OPEN, CALL_CLOSE)
    if payload is None:
        return ToolCallScore(False, False, False, False, False)
    try:
        call: Any = json.loads(payload)
    except json.JSONDecodeError:
        call = None
    valid = isinstance(call, dict)
    if not valid:
        call = _repair(payload)
    repaired = not valid and isinstance(call, dict) and bool(call)
    parsed = call if valid or repaired else {}
    name_match = "name" in parsed and _same_json(parsed["name"], expected["name"])
    arguments_match = "arguments" in parsed and _same_json(parsed["arguments"], expected["arguments"])
    return ToolCallScore(
        valid_json=valid,
        repaired=repaired,
        name_match=name_match,
        arguments_match=arguments_match,
        exact_match=valid and _same_json(parsed, expected),
    )


def score(example: Example, generated_text: str) -> dict[str, float]:
    """:func:`verify` as 1.0/0.0 metrics (``accuracy`` is ``exact_match``)."""
    return verify(example, generated_text).as_metrics()


def _skip_whitespace(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _JSON_WHITESPACE:
        pos += 1
    return pos


def _expect(text: str, pos: int, char: str) -> int:
    if pos >= len(text) or text[pos] != char:
        raise ValueError(f"expected {char!r} at offset {pos} of {text!r}")
    return pos + 1


def _member_spans(text: str, start: int) -> dict[str, tuple[int, int]]:
    """Spans ``[start, end)`` of the values of the JSON object at ``text[start:]``, by top-level key."""
    decoder = json.JSONDecoder()
    spans: dict[str, tuple[int, int]] = {}
    pos = _skip_whitespace(text, _expect(text, _skip_whitespace(text, start), "{"))
    if text.startswith("}", pos):
        return spans
    while True:
        if not text.startswith('"', pos):
            raise ValueError(f"expected a key at offset {pos} of {text!r}")
        key, pos = decoder.raw_decode(text, pos)
        pos = _skip_whitespace(text, _expect(text, _skip_whitespace(text, pos), ":"))
        _, end = decoder.raw_decode(text, pos)
        spans[key] = (pos, end)
        pos = _skip_whitespace(text, end)
        if text.startswith("}", pos):
            return spans
        pos = _skip_whitespace(text, _expect(text, pos, ","))


def spans(completion: str) -> dict[str, tuple[int, int]]:
    """Character spans ``[start, end)`` within ``completion``, for span losses.

    ``call``: the JSON object between the markers; ``name``: the tool name's characters without the
    quotes; ``arguments``: the arguments object from ``{`` to ``}`` inclusive. Raises ``ValueError`` when
    the completion holds no well-formed call with a string ``name`` and an object ``arguments``.
    """
    opening = completion.find(CALL_OPEN)
    payload = extract_tagged(completion, CALL_OPEN, CALL_CLOSE)
    if payload is None:
        raise ValueError(f"no {CALL_OPEN} in {completion!r}")
    start = opening + len(CALL_OPEN)
    call = json.loads(payload)
    if not (isinstance(call, dict) and isinstance(call.get("name"), str)):
        raise ValueError(f"tool call without a string name: {payload!r}")
    if not isinstance(call.get("arguments"), dict):
        raise ValueError(f"tool call without an arguments object: {payload!r}")
    members = _member_spans(completion, start)
    name_start, name_end = members["name"]
    call_start = _skip_whitespace(completion, start)
    call_end = start + len(payload.rstrip(_JSON_WHITESPACE))
    return {
        "call": (call_start, call_end),
        "name": (name_start + 1, name_end - 1),
        "arguments": members["arguments"],
    }
