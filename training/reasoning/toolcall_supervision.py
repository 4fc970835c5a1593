"""Tool-call supervision helpers: which characters of a JSON call are *structure*, and JSON validity metrics.

Structure characters (upweighted by process supervision, see :mod:`training.reasoning.process_losses`):

* the punctuation ``{ } [ ] : ,``;
* the double quotes that open and close every string;
* the characters of every object *key* (a string followed, after optional whitespace, by ``:``).

Everything else (string values, numbers, ``true``/``false``/``null``, whitespace) is not structure. The scan
is lexical and never raises, so it also classifies malformed text (a generated call) character by
character; on well-formed JSON it agrees with the grammar.

Validity of generated calls (:func:`json_validity`): the text between ``<tool_call>`` and ``</tool_call>``
(or ``<eos>`` / the end when the closing marker is missing) is ``valid`` when ``json.loads`` gives an
object, ``repaired`` when it does not but ``json_repair.loads`` turns it into a non-empty object, and
``invalid`` otherwise (including outputs without a ``<tool_call>`` marker). These are the definitions of
:func:`training.tasks.toolcall.verify`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import json_repair

from training.tasks.markup import extract_tagged
from training.tasks.toolcall import CALL_CLOSE, CALL_OPEN

__all__ = [
    "STRUCTURE_PUNCTUATION",
    "call_payload",
    "json_structure_chars",
    "json_validity",
    "payload_validity",
]

STRUCTURE_PUNCTUATION = frozenset("{}[]:,")
_WHITESPACE = " \t\n\r"


def _string_end(text: str, start: int) -> tuple[int, bool]:
    """For the string opening at ``text[start] == '"'``: (index just past it, whether a closing quote ends it)."""
    pos = start + 1
    while pos < len(text):
        char = text[pos]
        if char == "\\":
            pos += 2
            continue
        if char == '"':
            return pos + 1, True
        pos += 1
    return len(text), False


def json_structure_chars(text: str) -> list[bool]:
    """Per character of ``text``: whether it is JSON structure (see the module docstring).

    Args:
        text: JSON text (well-formed or not).

    Returns:
        A list of ``len(text)`` booleans.
    """
    flags = [False] * len(text)
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char in STRUCTURE_PUNCTUATION:
            flags[pos] = True
            pos += 1
        elif char == '"':
            end, closed = _string_end(text, pos)
            after = end
            while after < len(text) and text[after] in _WHITESPACE:
                after += 1
            is_key = after < len(text) and text[after] == ":"
            flags[pos] = True
            if closed:
                flags[end - 1] = True
            if is_key:
                for i in range(pos, end):
                    flags[i] = True
            pos = end
        else:
            pos += 1
    return flags


def call_payload(text: str) -> str | None:
    """The text of the first tool call in ``text`` (between the markers, see the module docstring), or None."""
    return extract_tagged(text, CALL_OPEN, CALL_CLOSE)


def payload_validity(payload: str | None) -> str:
    """``'valid'``, ``'repaired'`` or ``'invalid'`` for one call payload (``None``: no call was produced)."""
    if payload is None:
        return "invalid"
    try:
        value: Any = json.loads(payload)
    except json.JSONDecodeError:
        value = None
    if isinstance(value, dict):
        return "valid"
    try:
        repaired = json_repair.loads(payload)
    except (ValueError, TypeError, RecursionError):
        repaired = None
    return "repaired" if isinstance(repaired, dict) and repaired else "invalid"


def json_validity(texts: Sequence[str]) -> dict[str, float]:
    """JSON validity of generated completions, as shares in ``[0, 1]`` that sum to 1.

    Args:
        texts: generated completions (the text after the prompt).

    Returns:
        ``{'json_valid', 'json_repaired', 'json_invalid'}`` shares, and ``'json_examples'`` (the count);
        all shares are 0.0 for an empty input.
    """
    counts = {"valid": 0, "repaired": 0, "invalid": 0}
    for text in texts:
        counts[payload_validity(call_payload(text))] += 1
    n = len(texts)
    return {f"json_{key}": (value / n if n else 0.0) for key, value in counts.items()} | {"json_examples": float(n)}
