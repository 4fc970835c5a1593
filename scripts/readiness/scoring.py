"""Component scores, weighting, bands, hard conditions and the gate verdict.

Component scores (0-100):

- tests: passed (including xpassed) over tests that ran to a verdict (passed, xpassed, failed,
  errored); skipped and xfailed tests do not count; no test at all scores 0;
- coverage: mean of line % and branch %; a report without branch data counts branch % as 0,
  so dropping branch data never scores above measuring it;
- todos: ``100 / (1 + blockers / 2 + other counted findings / 50)``: 100 without findings, halved
  by 2 blockers or 50 other findings; every added finding lowers it (a ratio would not: adding
  ordinary TODOs would dilute the blockers and raise the score);
- critical_paths: share of passing measured checks of the critical targets;
- mutation: detected over checked mutants of the critical modules.

The overall score is the weighted mean over the measured components; components that were not
measured (or failed) are skipped and the remaining weights renormalized to sum to 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from scripts.readiness.config import ALWAYS_ON_CONDITIONS
from scripts.readiness.coverage_json import CoverageReport
from scripts.readiness.critical import FAIL, CriticalHealth
from scripts.readiness.errors import ReadinessError
from scripts.readiness.junit import TestRun
from scripts.readiness.todos import TodoScan

MEASURED, SKIPPED, ERROR = "measured", "skipped", "error"
BANDS: tuple[tuple[float, str], ...] = (
    (80.0, "production ready"),
    (60.0, "mostly ready"),
    (40.0, "partial"),
    (0.0, "not ready"),
)
# Without --fail-under or a configured fail_under, a "not ready" score fails the gate.
DEFAULT_FAIL_UNDER = 40.0


def band_of(score: float) -> str:
    """Band of a 0-100 score: <40 not ready, <60 partial, <80 mostly ready, else production ready."""
    for lower, name in BANDS:
        if score >= lower:
            return name
    return BANDS[-1][1]


@dataclass(frozen=True)
class Component:
    """One component's score; ``score`` is None unless ``status`` is ``measured``."""

    name: str
    status: str
    score: float | None = None
    reason: str = ""


def measured(name: str, score: float, reason: str = "") -> Component:
    """A measured component, score clamped to 0-100."""
    return Component(name, MEASURED, max(0.0, min(100.0, score)), reason)


def pass_rate_score(tests: TestRun) -> float:
    """Pass rate over tests that ran to a verdict, in percent (0 when none ran)."""
    executed = tests.executed
    if executed == 0:
        return 0.0
    return 100.0 * (tests.counts["passed"] + tests.counts["xpassed"]) / executed


def coverage_score(coverage: CoverageReport) -> float:
    """Mean of line and branch coverage; branch coverage counts as 0 when it was not measured.

    Unmeasured branches cannot be assumed covered: with the same line coverage, a report without
    branch data must never score above one with it (a report could otherwise drop branch data to
    gain points).
    """
    totals = coverage.totals
    branch = totals.branch_percent if coverage.branch_measured else 0.0
    return (totals.line_percent + branch) / 2.0


# Findings that halve the TODO score on their own: 2 blockers, or 50 other counted findings.
BLOCKERS_TO_HALVE = 2.0
OTHERS_TO_HALVE = 50.0


def todo_score(scan: TodoScan) -> float:
    """``100 / (1 + blockers / 2 + other counted findings / 50)``: never raised by another finding."""
    blockers = len(scan.blockers)
    others = sum(1 for item in scan.counted if not item.blocker)
    return 100.0 / (1.0 + blockers / BLOCKERS_TO_HALVE + others / OTHERS_TO_HALVE)


@dataclass(frozen=True)
class Combined:
    """The weighted overall score."""

    score: float
    effective_weights: dict[str, float]
    skipped: list[str]
    renormalized: bool


def combine(components: dict[str, Component], weights: dict[str, float]) -> Combined:
    """Weighted mean of the measured components, weights renormalized over them.

    Raises :class:`ReadinessError` when no measured component carries any weight.
    """
    skipped = sorted(name for name, c in components.items() if c.status != MEASURED)
    active = {
        name: weights.get(name, 0.0)
        for name, c in components.items()
        if c.status == MEASURED and weights.get(name, 0.0) > 0
    }
    total = sum(active.values())
    if total <= 0:
        raise ReadinessError("no measured component carries any weight; nothing to score")
    effective = {name: (active.get(name, 0.0) / total) for name in components}
    score = sum(effective[name] * (components[name].score or 0.0) for name in active)
    renormalized = any(weights.get(name, 0.0) > 0 for name in skipped)
    return Combined(round(score, 1), effective, skipped, renormalized)


@dataclass(frozen=True)
class HardFailure:
    """A triggered hard condition."""

    condition: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        """JSON form."""
        return {"condition": self.condition, "detail": self.detail}


def _list(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def hard_failures(
    conditions: Sequence[str],
    tests: TestRun | None,
    todos: TodoScan,
    critical: CriticalHealth,
) -> list[HardFailure]:
    """The configured (and always-on) hard conditions that hold (conditions without data cannot trigger)."""
    found: list[HardFailure] = []
    for condition in (*conditions, *(c for c in ALWAYS_ON_CONDITIONS if c not in conditions)):
        detail = _condition_detail(condition, tests, todos, critical)
        if detail:
            found.append(HardFailure(condition, detail))
    return found


def _failing_checks(critical: CriticalHealth, names: Sequence[str]) -> list[str]:
    return [
        f"{t.target.name} ({c.name}: {c.detail})"
        for t in critical.targets
        for c in t.checks
        if c.name in names and c.status == FAIL
    ]


def _condition_detail(
    condition: str, tests: TestRun | None, todos: TodoScan, critical: CriticalHealth
) -> str:
    if condition == "critical_test_failure":
        failing = sorted({f["test"] for t in critical.targets for f in t.failing_tests})
        return f"{len(failing)} failing test(s) touch critical code: {_list(failing)}" if failing else ""
    if condition == "critical_blocker_todo":
        items = [f"{i.file}:{i.line}" for t in critical.targets for i in t.blocker_todos]
        return f"blocking TODO(s) in critical modules: {_list(sorted(set(items)))}" if items else ""
    if condition == "blocker_todo":
        items = [f"{i.file}:{i.line}" for i in todos.blockers]
        return f"{len(items)} blocking TODO(s): {_list(items)}" if items else ""
    if condition == "any_test_failure":
        problems = [c.test_id for c in tests.problems] if tests is not None else []
        return f"{len(problems)} failing test(s): {_list(problems)}" if problems else ""
    if condition == "no_tests":
        return "the test run executed no tests" if tests is not None and tests.executed == 0 else ""
    if condition == "critical_coverage":
        failing = _failing_checks(critical, ("line_coverage", "branch_coverage"))
        return f"critical coverage below threshold: {_list(failing)}" if failing else ""
    if condition == "mutation_below_threshold":
        failing = _failing_checks(critical, ("mutation",))
        return f"mutation score below threshold: {_list(failing)}" if failing else ""
    if condition == "missing_critical_target":
        missing = [t.target.name for t in critical.missing]
        return (
            f"critical target(s) not found (misspelled in [tool.readiness]?): {_list(missing)}"
            if missing
            else ""
        )
    raise ReadinessError(f"unknown hard condition {condition!r}")


@dataclass(frozen=True)
class Verdict:
    """Whether the gate passes, and why."""

    passed: bool
    score: float
    band: str
    fail_under: float
    hard_failures: list[HardFailure] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 when the gate passes, 1 when it fails, 2 when part of the assessment could not be made."""
        if self.errors:
            return 2
        return 0 if self.passed else 1

    def to_dict(self) -> dict[str, object]:
        """JSON form."""
        return {
            "passed": self.passed,
            "exit_code": self.exit_code,
            "score": self.score,
            "band": self.band,
            "fail_under": self.fail_under,
            "hard_failures": [h.to_dict() for h in self.hard_failures],
            "reasons": list(self.reasons),
            "errors": list(self.errors),
        }


def decide(
    score: float,
    fail_under: float,
    failures: list[HardFailure],
    errors: Sequence[str] = (),
    fail_under_label: str = "",
) -> Verdict:
    """The gate: fails when ``score < fail_under``, any hard condition holds, or an assessment error occurred.

    ``fail_under_label`` names where the threshold came from (default: ``--fail-under N``).
    """
    reasons: list[str] = [f"assessment error: {error.splitlines()[0]}" for error in errors]
    below = score < fail_under
    threshold = fail_under_label or f"--fail-under {fail_under:g}"
    if below:
        reasons.append(f"score {score:.1f} is below {threshold}")
    else:
        reasons.append(f"score {score:.1f} meets {threshold}")
    for failure in failures:
        reasons.append(f"hard condition {failure.condition}: {failure.detail}")
    if not failures:
        reasons.append("no hard condition triggered")
    passed = not below and not failures and not errors
    return Verdict(passed, score, band_of(score), fail_under, failures, reasons, list(errors))
