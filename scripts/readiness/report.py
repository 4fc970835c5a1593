"""Assemble the JSON readiness report (the Markdown report is rendered from it).

Every component entry has the same keys (``status``, ``score``, ``weight``,
``effective_weight``, ``reason``) plus its details when it was measured.
"""

from __future__ import annotations

from typing import Any

from scripts.readiness.config import ReadinessConfig
from scripts.readiness.coverage_json import CoverageReport
from scripts.readiness.critical import CriticalHealth
from scripts.readiness.junit import TestRun
from scripts.readiness.mutation import MutationResult
from scripts.readiness.scoring import Combined, Component
from scripts.readiness.todos import TodoScan
from scripts.readiness.triage import Triage

SCHEMA_VERSION = 1


def component_entry(component: Component, weights: dict[str, float], combined: Combined) -> dict[str, Any]:
    """The keys every component has."""
    return {
        "status": component.status,
        "score": None if component.score is None else round(component.score, 2),
        "weight": weights.get(component.name, 0.0),
        "effective_weight": round(combined.effective_weights.get(component.name, 0.0), 4),
        "reason": component.reason,
    }


def tests_details(tests: TestRun, triage: Triage, junit: str) -> dict[str, Any]:
    """Test counts, failing tests and their triage."""
    executed = tests.executed
    passed = tests.counts["passed"] + tests.counts["xpassed"]
    return {
        "counts": dict(tests.counts),
        "total": tests.total,
        "executed": executed,
        "testcase_elements": tests.elements,
        "teardown_errors": tests.teardown_errors,
        "pass_rate": round(100.0 * passed / executed, 2) if executed else None,
        "failing_tests": [case.test_id for case in tests.problems],
        "failures": triage.to_dict(),
        "source": {"junit": junit},
    }


def coverage_details(coverage: CoverageReport, config: ReadinessConfig, source: str) -> dict[str, Any]:
    """Overall and per-module line/branch coverage, critical modules first-class."""
    branch = coverage.branch_measured
    critical = config.critical_files
    modules = []
    for path in sorted(coverage.files):
        file = coverage.files[path]
        entry = {"path": path, **file.counts.to_dict(branch), "critical": path in critical}
        if path in critical:
            entry["missing_lines"] = list(file.missing_lines)
        modules.append(entry)
    critical_rows = []
    for path, target in critical.items():
        file = coverage.file(path)
        line = file.counts.line_percent if file else None
        branch_pc = file.counts.branch_percent if file and branch else None
        ok_line = target.thresholds.line is None or (line is not None and line >= target.thresholds.line)
        ok_branch = (
            not branch
            or target.thresholds.branch is None
            or (branch_pc is not None and branch_pc >= target.thresholds.branch)
        )
        critical_rows.append(
            {
                "path": path,
                "measured": file is not None,
                "line_percent": line,
                "line_threshold": target.thresholds.line,
                "branch_percent": branch_pc,
                "branch_threshold": target.thresholds.branch,
                "missing_lines": list(file.missing_lines) if file else [],
                "status": "pass" if ok_line and ok_branch else "fail",
            }
        )
    return {
        **coverage.totals.to_dict(branch),
        "branch_measured": branch,
        "modules": modules,
        "critical_modules": critical_rows,
        "source": {"coverage_json": source, "coverage_version": coverage.coverage_version},
    }


def todo_details(scan: TodoScan) -> dict[str, Any]:
    """TODO summary and every finding, highest risk first."""
    order = {"blocker": 0, "high": 1, "medium": 2, "low": 3}
    items = sorted(scan.items, key=lambda i: (order[i.risk], not i.critical_path, i.file, i.line))
    return {
        "summary": scan.summary(),
        "items": [item.to_dict() for item in items],
        "files_scanned": scan.files_scanned,
        "paths": list(scan.paths),
        "errors": list(scan.errors),
    }


def critical_details(health: CriticalHealth) -> dict[str, Any]:
    """Every critical target with its checks."""
    checks = health.measured_checks
    return {
        "targets": [target.to_dict() for target in health.targets],
        "checks": {"measured": len(checks), "passed": sum(1 for c in checks if c.status == "pass")},
    }


def mutation_details(result: MutationResult, budget_s: float) -> dict[str, Any]:
    """Per-module mutation results and how the mutmut run ended."""
    run = result.run
    return {
        "modules": [module.to_dict() for module in result.modules],
        "checked": result.checked,
        "mutation_score": result.score,
        "budget_s": budget_s,
        "elapsed_s": round(run.elapsed_s, 2) if run else None,
        "budget_exhausted": run.budget_exhausted if run else False,
        "mutmut_returncode": run.returncode if run else None,
        "log": str(run.log) if run else None,
    }
