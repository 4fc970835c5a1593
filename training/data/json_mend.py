"""Mending almost-valid JSON from teacher outputs with ``json-repair``, counting what was mended."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from json_repair import repair_json


@dataclass(frozen=True, slots=True)
class MendResult:
    """``value`` is the parsed JSON (None on failure); exactly one of valid / repaired / failed holds."""

    value: Any
    was_valid: bool
    was_repaired: bool
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


def mend_json(text: str, expect: type | tuple[type, ...] | None = None) -> MendResult:
    """Parse ``text`` as JSON, repairing it (trailing commas, single quotes, missing brackets, code fences,
    prose around the object) when strict parsing fails.

    A repair that yields nothing (``json-repair`` returns ``""`` for text with no JSON in it) is a failure,
    as is a value that is not an instance of ``expect`` when given (e.g. ``expect=dict``).
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        strict_error = f"{error.msg} at line {error.lineno} column {error.colno}"
        try:
            value = repair_json(text, return_objects=True, skip_json_loads=True)
        except Exception as repair_error:  # json-repair documents no exception types; any is a failure
            return MendResult(None, False, False, f"{strict_error}; repair failed: {repair_error}")
        if value == "":
            return MendResult(None, False, False, f"{strict_error}; no JSON found to repair")
        was_valid = False
    else:
        was_valid = True
    if expect is not None and not isinstance(value, expect):
        return MendResult(None, False, False, f"expected {_type_names(expect)}, got {type(value).__name__}")
    return MendResult(value, was_valid, not was_valid, None)


def _type_names(expect: type | tuple[type, ...]) -> str:
    types = expect if isinstance(expect, tuple) else (expect,)
    return " or ".join(t.__name__ for t in types)


class JsonMendCounter:
    """Tallies :class:`MendResult` outcomes for a run report."""

    def __init__(self) -> None:
        self.valid = 0
        self.repaired = 0
        self.failed = 0

    def add(self, result: MendResult) -> MendResult:
        if not result.ok:
            self.failed += 1
        elif result.was_repaired:
            self.repaired += 1
        else:
            self.valid += 1
        return result

    def mend(self, text: str, expect: type | tuple[type, ...] | None = None) -> MendResult:
        """:func:`mend_json` and count the outcome."""
        return self.add(mend_json(text, expect))

    @property
    def total(self) -> int:
        return self.valid + self.repaired + self.failed

    def as_dict(self) -> dict[str, int]:
        return {"valid": self.valid, "repaired": self.repaired, "failed": self.failed, "total": self.total}
