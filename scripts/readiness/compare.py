"""The change between a previous JSON readiness report and the current one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scripts.readiness.config import COMPONENTS
from scripts.readiness.errors import ReadinessError, not_text
from scripts.readiness.junit import OUTCOMES


def load_previous(path: Path) -> dict[str, Any]:
    """Read a previous readiness JSON report; anything else is a :class:`ReadinessError`."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ReadinessError(f"cannot read previous report {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ReadinessError(f"cannot read previous report {path}: {not_text(exc)}") from exc
    except json.JSONDecodeError as exc:
        raise ReadinessError(f"previous report {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or "score" not in data or not isinstance(data.get("components"), dict):
        raise ReadinessError(f"{path} is not a readiness JSON report (no 'score'/'components')")
    return data


def _get(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def delta(before: Any, after: Any) -> dict[str, Any]:
    """``{"before", "after", "delta"}``; delta is None unless both sides are numbers."""
    b, a = _number(before), _number(after)
    return {"before": before, "after": after, "delta": None if a is None or b is None else round(a - b, 2)}


def compare(previous: dict[str, Any], current: dict[str, Any], previous_path: str) -> dict[str, Any]:
    """Differences in score, band, verdict, components, test counts, coverage and TODOs."""
    before_failing = set(_get(previous, "components", "tests", "failing_tests") or [])
    after_failing = set(_get(current, "components", "tests", "failing_tests") or [])
    return {
        "previous_report": previous_path,
        "previous_generated_at": previous.get("generated_at"),
        "score": delta(previous.get("score"), current.get("score")),
        "band": {"before": previous.get("band"), "after": current.get("band")},
        "gate_passed": {
            "before": _get(previous, "verdict", "passed"),
            "after": _get(current, "verdict", "passed"),
        },
        "components": {
            name: delta(
                _get(previous, "components", name, "score"), _get(current, "components", name, "score")
            )
            for name in COMPONENTS
        },
        "tests": {
            outcome: delta(
                _get(previous, "components", "tests", "counts", outcome),
                _get(current, "components", "tests", "counts", outcome),
            )
            for outcome in OUTCOMES
        },
        "coverage": {
            kind: delta(
                _get(previous, "components", "coverage", kind, "percent"),
                _get(current, "components", "coverage", kind, "percent"),
            )
            for kind in ("line", "branch")
        },
        "todos": {
            key: delta(
                _get(previous, "components", "todos", "summary", key),
                _get(current, "components", "todos", "summary", key),
            )
            for key in ("total", "blockers")
        },
        "newly_failing_tests": sorted(after_failing - before_failing),
        "no_longer_failing_tests": sorted(before_failing - after_failing),
    }
