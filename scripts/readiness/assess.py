"""Run a whole readiness assessment: tests and coverage, TODOs, critical paths, mutation, score, reports."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from scripts.readiness import critical as critical_mod
from scripts.readiness import mutation as mutation_mod
from scripts.readiness.compare import compare, load_previous
from scripts.readiness.config import COMPONENTS, ReadinessConfig, load_config
from scripts.readiness.coverage_json import CoverageReport, load_coverage_json
from scripts.readiness.errors import ReadinessError
from scripts.readiness.junit import TestRun, load_junit
from scripts.readiness.project import (
    CoverageConfig,
    detect_source_paths,
    find_coverage_config,
    project_name,
    resolve_source,
)
from scripts.readiness.recommend import recommendations
from scripts.readiness.render import render_markdown
from scripts.readiness.report import (
    SCHEMA_VERSION,
    component_entry,
    coverage_details,
    critical_details,
    mutation_details,
    tests_details,
    todo_details,
)
from scripts.readiness.runner import PytestRun, build_command, log_tail, run_pytest
from scripts.readiness.scoring import (
    DEFAULT_FAIL_UNDER,
    ERROR,
    SKIPPED,
    Component,
    combine,
    coverage_score,
    decide,
    hard_failures,
    measured,
    pass_rate_score,
    todo_score,
)
from scripts.readiness.todos import ScanSettings, TodoScan, scan
from scripts.readiness.triage import exception_of, triage

DEFAULT_OUT_DIR = Path("reports") / "readiness"


@dataclass(frozen=True)
class Options:
    """Everything the command line can set. Relative paths are relative to the current directory."""

    project: Path = Path(".")
    out_dir: Path | None = None
    json_report: Path | None = None
    md_report: Path | None = None
    junit: Path | None = None
    coverage_json: Path | None = None
    skip_tests: bool = False
    pytest_args: tuple[str, ...] = ()
    python: str = sys.executable
    source: tuple[str, ...] = ()
    coverage_config: Path | None = None
    config: Path | None = None
    fail_under: float | None = None
    weights: dict[str, float] = field(default_factory=dict)
    compare: Path | None = None
    mutation: bool = False
    mutation_budget: float = 600.0
    mutation_workers: int = max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Outcome:
    """The report and where it was written."""

    report: dict[str, Any]
    json_path: Path
    md_path: Path

    @property
    def exit_code(self) -> int:
        """The process exit code: 0 passed, 1 failed, 2 assessment error."""
        return int(self.report["verdict"]["exit_code"])


@dataclass
class _Measurements:
    tests: TestRun | None = None
    coverage: CoverageReport | None = None
    pytest_run: PytestRun | None = None
    tests_reason: str = ""
    coverage_reason: str = ""
    warnings: list[str] = field(default_factory=list)


def _sources(
    options: Options, config: ReadinessConfig, coverage_config: CoverageConfig, root: Path
) -> tuple[tuple[str, ...], bool]:
    """Source entries and whether they must be passed to pytest as ``--cov=...``."""
    if options.source:
        return options.source, True
    if config.source:
        return config.source, True
    if coverage_config.source:
        return coverage_config.source, False
    return detect_source_paths(root), True


def _weights(config: ReadinessConfig, overrides: dict[str, float]) -> dict[str, float]:
    weights = dict(config.weights)
    for name, value in overrides.items():
        if name not in COMPONENTS:
            raise ReadinessError(f"--weight: unknown component {name!r}; allowed: {', '.join(COMPONENTS)}")
        if value < 0:
            raise ReadinessError(f"--weight: {name} must not be negative")
        weights[name] = value
    return weights


def _measure_tests(
    options: Options,
    root: Path,
    out_dir: Path,
    coverage_config: CoverageConfig,
    sources: tuple[str, ...],
    explicit: bool,
) -> _Measurements:
    m = _Measurements()
    if options.junit is not None or options.coverage_json is not None:
        if options.junit is not None:
            m.tests = load_junit(options.junit, root)
        else:
            m.tests_reason = "no JUnit report given (--coverage-json alone: pytest was not run)"
        if options.coverage_json is not None:
            m.coverage = load_coverage_json(options.coverage_json, root)
        else:
            m.coverage_reason = "no coverage JSON given (--junit alone: pytest was not run)"
        return m
    if options.skip_tests:
        m.tests_reason = m.coverage_reason = "--skip-tests: pytest was not run"
        return m
    junit, coverage_json = out_dir / "junit.xml", out_dir / "coverage.json"
    command = build_command(
        options.python,
        root,
        junit,
        coverage_json,
        coverage_config,
        sources if explicit else (),
        options.pytest_args,
    )
    m.pytest_run = run_pytest(command, root, junit, coverage_json, out_dir / "pytest.log")
    m.tests = load_junit(junit, root)
    if m.pytest_run.coverage_json is None:
        m.coverage_reason = "pytest collected no tests and wrote no coverage report"
    else:
        m.coverage = load_coverage_json(coverage_json, root)
    return m


def _no_branch_warning(m: _Measurements) -> str:
    """Why the coverage report has no branch data, and what to do about it."""
    if m.pytest_run is None:
        return "the coverage report has no branch data (run coverage with branch = true)"
    if m.tests is None or m.tests.executed == 0:
        return (
            "the coverage report has no branch data because no test ran (pytest was run with "
            "--cov-branch; coverage.py records branches only for code that ran): add or fix the tests"
        )
    return (
        "the coverage report has no branch data although pytest was run with --cov-branch: "
        "something in the project's pytest or coverage setup overrides it (see pytest.log)"
    )


def _staleness(options: Options, todos: TodoScan) -> list[str]:
    warnings = []
    for label, path in (("JUnit report", options.junit), ("coverage JSON", options.coverage_json)):
        if path is not None and todos.newest_mtime and path.stat().st_mtime < todos.newest_mtime:
            warnings.append(f"{label} {path} is older than the newest scanned source file; it may be stale")
    return warnings


def _run_mutation(
    options: Options, root: Path, out_dir: Path, config: ReadinessConfig, tests: TestRun | None
) -> tuple[mutation_mod.MutationResult, str | None]:
    sources = sorted(config.critical_files)
    run = mutation_mod.run_mutmut(
        root,
        options.python,
        sources,
        options.mutation_budget,
        options.mutation_workers,
        out_dir / "mutmut.log",
    )
    result = mutation_mod.collect(root, sources, run)
    if result.checked == 0:
        hint = _mutation_hint(tests, log_tail(run.log, 10_000))
        return result, (
            f"mutation testing checked no mutant (mutmut exit code {run.returncode}, "
            f"budget {'exhausted' if run.budget_exhausted else 'not exhausted'}).{hint} "
            f"See {run.log}:\n{log_tail(run.log, 15)}"
        )
    return result, None


def _mutation_hint(tests: TestRun | None, log: str) -> str:
    """Why mutmut may have checked nothing, from this run's test results and mutmut's output."""
    problems = tests.problems if tests is not None else []
    uncollected = [case for case in problems if case.phase == "collection"]
    if uncollected:
        shown = ", ".join(f"{c.file or c.test_id} ({exception_of(c)})" for c in uncollected[:3])
        more = f" and {len(uncollected) - 3} more" if len(uncollected) > 3 else ""
        return (
            f" mutmut needs every test module to import, and {len(uncollected)} test module(s) fail to "
            f"import or collect: {shown}{more}."
        )
    if "ERROR collecting" in log or "ImportError while importing" in log:
        return (
            " Tests fail to import or collect in mutmut's copy of the project (mutants/): a file the "
            "tests need may be missing there (add it to [tool.mutmut] also_copy)."
        )
    if problems:
        return (
            f" mutmut needs the tests of the mutated code to pass, and {len(problems)} test(s) fail, "
            f"e.g. {problems[0].test_id}."
        )
    if "Unable to force test failures" in log:
        return (
            " mutmut could not make any test fail by forcing a mutant: no test calls the mutated code "
            "(check [tool.mutmut] pytest_add_cli_args_test_selection)."
        )
    return ""


def _components(
    m: _Measurements,
    todos: TodoScan,
    health: critical_mod.CriticalHealth,
    config: ReadinessConfig,
    mutation: mutation_mod.MutationResult | None,
    mutation_error: str | None,
) -> dict[str, Component]:
    components = {
        "tests": measured("tests", pass_rate_score(m.tests))
        if m.tests is not None
        else Component("tests", SKIPPED, None, m.tests_reason),
        "coverage": measured("coverage", coverage_score(m.coverage), _coverage_note(m.coverage))
        if m.coverage is not None
        else Component("coverage", SKIPPED, None, m.coverage_reason),
        "todos": measured("todos", todo_score(todos)),
    }
    if health.score is not None:
        components["critical_paths"] = measured("critical_paths", health.score)
    else:
        reason = "no critical modules configured" if not config.targets else "no critical check had data"
        components["critical_paths"] = Component("critical_paths", SKIPPED, None, reason)
    if mutation_error is not None:
        components["mutation"] = Component("mutation", ERROR, None, mutation_error.splitlines()[0])
    elif mutation is not None and mutation.score is not None:
        components["mutation"] = measured("mutation", mutation.score)
    else:
        components["mutation"] = Component("mutation", SKIPPED, None, "not requested (--mutation)")
    return components


def _coverage_note(coverage: CoverageReport) -> str:
    if coverage.branch_measured:
        return "mean of line and branch %"
    return "mean of line % and branch 0% (the report has no branch data)"


def assess(options: Options) -> Outcome:
    """Run the assessment and write the JSON and Markdown reports.

    Raises :class:`ReadinessError` for usage and tool errors (no report is written then).
    """
    started = time.perf_counter()
    root = options.project.resolve()
    if not root.exists():
        raise ReadinessError(f"project directory {options.project} does not exist")
    if not root.is_dir():
        raise ReadinessError(f"--project {options.project} is not a directory (pass the project's directory)")
    config = load_config(root, options.config)
    previous = load_previous(options.compare) if options.compare is not None else None
    weights = _weights(config, options.weights)
    if options.mutation and not config.critical_files:
        raise ReadinessError("--mutation needs critical modules: add [tool.readiness.critical_modules]")
    out_dir = (options.out_dir or root / DEFAULT_OUT_DIR).resolve()
    coverage_config = find_coverage_config(root, options.coverage_config)
    sources, explicit = _sources(options, config, coverage_config, root)

    m = _measure_tests(options, root, out_dir, coverage_config, sources, explicit)
    critical_files = frozenset(config.critical_files) | {t.path for t in config.targets if t.path}
    settings = ScanSettings(config.blocker_tags, config.todo_phrases, critical_files, config.critical_dirs)
    scan_paths = config.todo_paths or tuple(
        path.relative_to(root).as_posix()
        for entry in sources
        if (path := resolve_source(root, entry)) is not None
    )
    todos = scan(root, (*scan_paths, *sorted(critical_files)), settings)
    m.warnings += _staleness(options, todos) + [f"could not fully tokenize {e}" for e in todos.errors]
    if m.coverage is not None and not m.coverage.branch_measured:
        m.warnings.append(_no_branch_warning(m))

    mutation_started = time.perf_counter()
    mutation, mutation_error = (None, None)
    if options.mutation:
        mutation, mutation_error = _run_mutation(options, root, out_dir, config, m.tests)
        if mutation.run is not None and mutation.run.budget_exhausted:
            m.warnings.append(f"the mutation budget of {options.mutation_budget:g} s ran out")
    mutation_s = time.perf_counter() - mutation_started if options.mutation else 0.0

    health = critical_mod.evaluate(config.targets, root, m.tests, m.coverage, todos, mutation)
    for target in health.missing:
        section = "critical_modules" if target.target.kind == "module" else "entry_points"
        check = target.check("exists")
        detail = check.detail if check is not None else ""
        m.warnings.append(f"{detail}: check its spelling in [tool.readiness.{section}]")
    components = _components(m, todos, health, config, mutation, mutation_error)
    combined = combine(components, weights)
    failures = hard_failures(config.hard_conditions, m.tests, todos, health)
    if options.fail_under is not None:
        fail_under, label = options.fail_under, f"--fail-under {options.fail_under:g}"
    elif config.fail_under is not None:
        fail_under, label = config.fail_under, f"[tool.readiness] fail_under {config.fail_under:g}"
    else:
        fail_under, label = DEFAULT_FAIL_UNDER, f"the default fail-under {DEFAULT_FAIL_UNDER:g}"
    errors = [mutation_error] if mutation_error else []
    verdict = decide(combined.score, fail_under, failures, errors, label)

    entries = {name: component_entry(c, weights, combined) for name, c in components.items()}
    if m.tests is not None:
        source = str(options.junit or out_dir / "junit.xml")
        entries["tests"].update(tests_details(m.tests, triage(m.tests.cases), source))
    if m.coverage is not None:
        source = str(options.coverage_json or out_dir / "coverage.json")
        entries["coverage"].update(coverage_details(m.coverage, config, source))
    entries["todos"].update(todo_details(todos))
    entries["critical_paths"].update(critical_details(health))
    if mutation is not None:
        entries["mutation"].update(mutation_details(mutation, options.mutation_budget))

    pytest_s = m.pytest_run.duration_s if m.pytest_run else 0.0
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "tool": "assess_readiness",
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "project": {"root": str(root), "name": project_name(root)},
        "score": combined.score,
        "band": verdict.band,
        "weights": {
            "configured": weights,
            "effective": {k: round(v, 4) for k, v in combined.effective_weights.items()},
            "renormalized": combined.renormalized,
            "skipped_components": combined.skipped,
        },
        "components": {name: entries[name] for name in COMPONENTS},
        "verdict": verdict.to_dict(),
        "recommendations": [],
        "warnings": m.warnings,
        "inputs": {
            "config": str(config.path) if config.path else None,
            "sources": list(sources),
            "pytest_command": list(m.pytest_run.command) if m.pytest_run else None,
            "pytest_exit_code": m.pytest_run.returncode if m.pytest_run else None,
            "pytest_log": str(m.pytest_run.log) if m.pytest_run else None,
            "junit": str(options.junit) if options.junit else None,
            "coverage_json": str(options.coverage_json) if options.coverage_json else None,
        },
        "timings": {},
        "comparison": None,
    }
    report["recommendations"] = recommendations(report)
    if previous is not None and options.compare is not None:
        report["comparison"] = compare(previous, report, str(options.compare))
    total_s = time.perf_counter() - started
    report["timings"] = {
        "pytest_s": round(pytest_s, 3),
        "mutation_s": round(mutation_s, 3),
        "analysis_s": round(total_s - pytest_s - mutation_s, 3),
        "total_s": round(total_s, 3),
    }
    return _write(report, options, out_dir)


def _write(report: dict[str, Any], options: Options, out_dir: Path) -> Outcome:
    json_path = options.json_report or out_dir / "readiness.json"
    md_path = options.md_report or out_dir / "readiness.md"
    for path in (json_path, md_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    md_path.write_text(render_markdown(report), encoding="utf-8")
    return Outcome(report, json_path, md_path)
