"""JSON report pieces and the comparison of two reports, checked field by field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scripts.readiness.compare import compare
from scripts.readiness.mutation import MutationResult, MutmutRun, parse_meta
from scripts.readiness.report import component_entry, mutation_details, todo_details
from scripts.readiness.scoring import Combined, Component
from scripts.readiness.todos import TodoItem, TodoScan


def _report(
    score: float, passed: bool, failed: int, failing: list[str], line: float, blockers: int
) -> dict[str, Any]:
    return {
        "generated_at": "then",
        "score": score,
        "band": "partial" if score < 60 else "mostly ready",
        "verdict": {"passed": passed},
        "components": {
            "tests": {
                "score": 50.0 + score / 10,
                "counts": {
                    "passed": 4,
                    "failed": failed,
                    "errored": 0,
                    "skipped": 1,
                    "xfailed": 0,
                    "xpassed": 0,
                },
                "failing_tests": failing,
            },
            "coverage": {"score": line, "line": {"percent": line}, "branch": {"percent": None}},
            "todos": {"score": 90.0, "summary": {"total": 5, "blockers": blockers}},
            "critical_paths": {"score": None},
            "mutation": {"score": None},
        },
    }


def test_compare_reports_every_difference() -> None:
    before = _report(55.0, False, 2, ["t::a", "t::b"], 70.0, 1)
    after = _report(62.5, True, 1, ["t::b", "t::c"], 72.5, 0)
    assert compare(before, after, "prev.json") == {
        "previous_report": "prev.json",
        "previous_generated_at": "then",
        "score": {"before": 55.0, "after": 62.5, "delta": 7.5},
        "band": {"before": "partial", "after": "mostly ready"},
        "gate_passed": {"before": False, "after": True},
        "components": {
            "tests": {"before": 55.5, "after": 56.25, "delta": 0.75},
            "coverage": {"before": 70.0, "after": 72.5, "delta": 2.5},
            "todos": {"before": 90.0, "after": 90.0, "delta": 0.0},
            "critical_paths": {"before": None, "after": None, "delta": None},
            "mutation": {"before": None, "after": None, "delta": None},
        },
        "tests": {
            "passed": {"before": 4, "after": 4, "delta": 0.0},
            "failed": {"before": 2, "after": 1, "delta": -1.0},
            "errored": {"before": 0, "after": 0, "delta": 0.0},
            "skipped": {"before": 1, "after": 1, "delta": 0.0},
            "xfailed": {"before": 0, "after": 0, "delta": 0.0},
            "xpassed": {"before": 0, "after": 0, "delta": 0.0},
        },
        "coverage": {
            "line": {"before": 70.0, "after": 72.5, "delta": 2.5},
            "branch": {"before": None, "after": None, "delta": None},
        },
        "todos": {
            "total": {"before": 5, "after": 5, "delta": 0.0},
            "blockers": {"before": 1, "after": 0, "delta": -1.0},
        },
        "newly_failing_tests": ["t::c"],
        "no_longer_failing_tests": ["t::a"],
    }


def test_component_entry_rounds_and_reports_weights() -> None:
    combined = Combined(
        score=70.0, effective_weights={"tests": 0.428571, "mutation": 0.0}, skipped=[], renormalized=True
    )
    entry = component_entry(Component("tests", "measured", 66.666666, ""), {"tests": 0.3}, combined)
    assert entry == {
        "status": "measured",
        "score": 66.67,
        "weight": 0.3,
        "effective_weight": 0.4286,
        "reason": "",
    }
    skipped = component_entry(Component("mutation", "skipped", None, "not requested"), {}, combined)
    assert skipped == {
        "status": "skipped",
        "score": None,
        "weight": 0.0,
        "effective_weight": 0.0,
        "reason": "not requested",
    }


def test_todo_details_sorts_by_risk_then_critical_then_location() -> None:
    def item(file: str, line: int, risk: str, critical: bool) -> TodoItem:
        return TodoItem(file, line, "TODO", "t", 0.95, risk, risk == "blocker", critical, False)

    scan = TodoScan(
        items=[
            item("b.py", 1, "low", False),
            item("a.py", 9, "low", True),
            item("z.py", 3, "blocker", False),
            item("a.py", 2, "low", True),
            item("c.py", 1, "high", True),
        ],
        files_scanned=4,
        paths=("pkg",),
        errors=["x.py: TokenError"],
    )
    details = todo_details(scan)
    assert [(i["file"], i["line"]) for i in details["items"]] == [
        ("z.py", 3),
        ("c.py", 1),
        ("a.py", 2),
        ("a.py", 9),
        ("b.py", 1),
    ]
    assert (
        details["files_scanned"] == 4
        and details["paths"] == ["pkg"]
        and details["errors"] == ["x.py: TokenError"]
    )
    assert details["summary"]["by_risk"] == {"blocker": 1, "high": 1, "medium": 0, "low": 3}


def test_mutation_details() -> None:
    module = parse_meta('{"exit_code_by_key": {"m.x_f__mutmut_1": 1, "m.x_f__mutmut_2": 0}}', "m.py")
    run = MutmutRun(returncode=0, elapsed_s=12.3456, budget_exhausted=True, log=Path("/out/mutmut.log"))
    details = mutation_details(MutationResult([module], run), 60.0)
    assert details["checked"] == 2 and details["mutation_score"] == 50.0
    assert details["budget_s"] == 60.0 and details["elapsed_s"] == 12.35
    assert details["budget_exhausted"] is True and details["mutmut_returncode"] == 0
    assert details["log"] == "/out/mutmut.log"
    assert details["modules"][0]["undetected_mutants"] == ["m.x_f__mutmut_2"]
    without_run = mutation_details(MutationResult([module]), 60.0)
    assert without_run["elapsed_s"] is None and without_run["budget_exhausted"] is False
    assert without_run["mutmut_returncode"] is None and without_run["log"] is None
