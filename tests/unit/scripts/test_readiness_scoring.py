"""Scoring: component scores, weight renormalization, bands, hard conditions, verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.readiness.config import CriticalTarget, Thresholds
from scripts.readiness.coverage_json import parse_coverage_json
from scripts.readiness.critical import CriticalHealth, evaluate
from scripts.readiness.errors import ReadinessError
from scripts.readiness.junit import TestRun, parse_junit
from scripts.readiness.scoring import (
    DEFAULT_FAIL_UNDER,
    ERROR,
    SKIPPED,
    Component,
    band_of,
    combine,
    coverage_score,
    decide,
    hard_failures,
    measured,
    pass_rate_score,
    todo_score,
)
from scripts.readiness.todos import TodoItem, TodoScan

WEIGHTS = {"tests": 0.30, "coverage": 0.30, "todos": 0.25, "critical_paths": 0.15, "mutation": 0.0}


@pytest.mark.parametrize(
    ("score", "band"),
    [
        (0.0, "not ready"),
        (39.9, "not ready"),
        (40.0, "partial"),
        (59.9, "partial"),
        (60.0, "mostly ready"),
        (79.9, "mostly ready"),
        (80.0, "production ready"),
        (100.0, "production ready"),
    ],
)
def test_bands(score: float, band: str) -> None:
    assert band_of(score) == band


def test_tests_score_counts_only_tests_with_a_verdict() -> None:
    xml = (
        "<testsuite>"
        + '<testcase classname="t" name="a"/>' * 1
        + '<testcase classname="t" name="b"><failure message="x"/></testcase>'
        + '<testcase classname="t" name="c"><skipped message="s"/></testcase>'
        + '<testcase classname="t" name="d"><skipped type="pytest.xfail" message="s"/></testcase>'
        + "</testsuite>"
    )
    assert pass_rate_score(parse_junit(xml)) == 50.0
    assert pass_rate_score(parse_junit("<testsuite/>")) == 0.0


def test_coverage_score_is_mean_of_line_and_branch() -> None:
    summary = {"num_statements": 10, "covered_lines": 8, "num_branches": 4, "covered_branches": 1}
    text = json.dumps({"meta": {"branch_coverage": True}, "files": {}, "totals": summary})
    assert coverage_score(parse_coverage_json(text)) == (80.0 + 25.0) / 2
    text = json.dumps({"meta": {"branch_coverage": False}, "files": {}, "totals": summary})
    assert coverage_score(parse_coverage_json(text)) == (80.0 + 0.0) / 2  # no branch data: branch 0%


def test_todo_score_from_blocker_and_other_counts() -> None:
    def item(blocker: bool, confidence: float = 0.95) -> TodoItem:
        return TodoItem("f.py", 1, "TODO", "t", confidence, "low", blocker, False, False)

    assert todo_score(TodoScan()) == 100.0
    assert todo_score(TodoScan(items=[item(True), item(True)])) == 50.0
    assert todo_score(TodoScan(items=[item(False)] * 50)) == 50.0
    assert todo_score(TodoScan(items=[item(True), item(False), item(False), item(False)])) == pytest.approx(
        100.0 / (1 + 1 / 2 + 3 / 50)
    )
    # low-confidence phrasing does not count
    assert todo_score(TodoScan(items=[item(True), item(False, 0.35)])) == todo_score(
        TodoScan(items=[item(True)])
    )


def test_combine_renormalizes_over_measured_components() -> None:
    components = {
        "tests": measured("tests", 100.0),
        "coverage": Component("coverage", SKIPPED, None, "not run"),
        "todos": measured("todos", 50.0),
        "critical_paths": measured("critical_paths", 0.0),
        "mutation": Component("mutation", SKIPPED),
    }
    combined = combine(components, WEIGHTS)
    assert combined.effective_weights["tests"] == pytest.approx(0.30 / 0.70)
    assert combined.effective_weights["coverage"] == 0.0
    assert combined.score == round(100 * 0.30 / 0.70 + 50 * 0.25 / 0.70, 1)
    assert combined.skipped == ["coverage", "mutation"]
    assert combined.renormalized
    assert sum(combined.effective_weights.values()) == pytest.approx(1.0)


def test_combine_without_skips_is_not_renormalized_and_needs_weight() -> None:
    components = {name: measured(name, 80.0) for name in WEIGHTS}
    combined = combine(components, WEIGHTS)
    assert combined.score == 80.0 and not combined.renormalized
    only_mutation = {"mutation": measured("mutation", 10.0), "tests": Component("tests", ERROR)}
    with pytest.raises(ReadinessError, match="no measured component"):
        combine(only_mutation, WEIGHTS)


def test_measured_scores_are_clamped() -> None:
    assert measured("x", 140.0).score == 100.0
    assert measured("x", -3.0).score == 0.0


def _health(tmp_path: Path, with_failure: bool) -> tuple[TestRun, TodoScan, CriticalHealth]:
    (tmp_path / "tests").mkdir(exist_ok=True)
    (tmp_path / "tests" / "test_core.py").write_text("import pkg.core\n")
    outcome = '<failure message="x"/>' if with_failure else ""
    tests = parse_junit(
        f'<testsuite><testcase classname="tests.test_core" name="t">{outcome}</testcase></testsuite>',
        tmp_path,
    )
    target = CriticalTarget(
        "pkg/core.py", "module", "pkg.core", "pkg/core.py", None, Thresholds(90.0, None, None)
    )
    summary = {"num_statements": 10, "covered_lines": 5}
    coverage = parse_coverage_json(
        json.dumps({"files": {"pkg/core.py": {"summary": summary}}, "totals": summary})
    )
    blocker = TodoItem("pkg/core.py", 3, "TODO", "t", 0.95, "blocker", True, True, True)
    todos = TodoScan(items=[blocker])
    return tests, todos, evaluate((target,), tmp_path, tests, coverage, todos)


def test_hard_conditions_trigger_with_details(tmp_path: Path) -> None:
    tests, todos, health = _health(tmp_path, with_failure=True)
    conditions = [
        "critical_test_failure",
        "critical_blocker_todo",
        "blocker_todo",
        "any_test_failure",
        "no_tests",
        "critical_coverage",
        "mutation_below_threshold",
    ]
    found = {h.condition: h.detail for h in hard_failures(conditions, tests, todos, health)}
    assert set(found) == {
        "critical_test_failure",
        "critical_blocker_todo",
        "blocker_todo",
        "any_test_failure",
        "critical_coverage",
    }
    assert "tests/test_core.py::t" in found["critical_test_failure"]
    assert "pkg/core.py:3" in found["critical_blocker_todo"]
    assert "line_coverage" in found["critical_coverage"]


def test_hard_conditions_quiet_when_healthy(tmp_path: Path) -> None:
    tests, _, health = _health(tmp_path, with_failure=False)
    assert (
        hard_failures(["critical_test_failure", "any_test_failure", "no_tests"], tests, TodoScan(), health)
        == []
    )
    assert hard_failures(["any_test_failure", "no_tests"], None, TodoScan(), health) == []
    empty = parse_junit("<testsuite/>")
    assert [h.condition for h in hard_failures(["no_tests"], empty, TodoScan(), health)] == ["no_tests"]
    with pytest.raises(ReadinessError, match="unknown hard condition"):
        hard_failures(["bogus"], tests, TodoScan(), health)


def test_long_lists_are_shortened(tmp_path: Path) -> None:
    items = [TodoItem("f.py", n, "TODO", "t", 0.95, "blocker", True, False, False) for n in range(8)]
    _, _, health = _health(tmp_path, with_failure=False)
    (failure,) = hard_failures(["blocker_todo"], None, TodoScan(items=items), health)
    assert failure.detail.endswith("and 3 more")


def test_decide() -> None:
    passed = decide(65.0, DEFAULT_FAIL_UNDER, [], fail_under_label="the default fail-under 40")
    assert passed.passed and passed.exit_code == 0 and passed.band == "mostly ready"
    assert passed.reasons[0] == "score 65.0 meets the default fail-under 40"
    below = decide(30.0, 40.0, [])
    assert not below.passed and below.exit_code == 1
    assert below.reasons[0] == "score 30.0 is below --fail-under 40"
    hard = decide(
        95.0,
        40.0,
        hard_failures(
            ["no_tests"],
            parse_junit("<testsuite/>"),
            TodoScan(),
            evaluate((), Path("."), None, None, TodoScan()),
        ),
    )
    assert not hard.passed and any("no_tests" in r for r in hard.reasons)
    errored = decide(95.0, 40.0, [], ["mutation checked nothing\nlog tail"])
    assert errored.exit_code == 2 and not errored.passed
    assert errored.to_dict()["errors"] == ["mutation checked nothing\nlog tail"]
    assert errored.reasons[0] == "assessment error: mutation checked nothing"
