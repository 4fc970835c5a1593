"""Health of the critical modules and entry points.

Each target gets a list of checks, each passing, failing or "not measured" (when its data was
not collected in this run):

- ``exists``: the source file exists (and defines the entry point's function); a missing one
  is usually a misspelling, so it is also a warning and always fails the gate;
- ``tests``: no failed or errored test touches it. A test touches a target when its failure
  traceback names the target's file, or its test file imports the target's module
  (``import pkg.mod``, ``from pkg.mod import x``, ``from pkg import mod``);
- ``line_coverage`` / ``branch_coverage``: at or above the target's thresholds (entry points:
  the coverage of the entry-point function); a report without branch data fails a branch
  threshold (unmeasured is never better than measured);
- ``blocker_todos``: no blocking TODO in its file;
- ``mutation`` (modules only, when mutation testing ran): mutation score at or above threshold.

The component score is the share of measured checks that pass (a file that exists earns no credit;
a missing one is a failed check).
"""

from __future__ import annotations

import ast
import difflib
from dataclasses import dataclass, field
from pathlib import Path

from scripts.readiness.config import CriticalTarget
from scripts.readiness.coverage_json import Counts, CoverageReport
from scripts.readiness.junit import TestCase, TestRun
from scripts.readiness.mutation import MutationResult
from scripts.readiness.todos import TodoItem, TodoScan

PASS, FAIL, NOT_MEASURED = "pass", "fail", "not measured"


@dataclass(frozen=True)
class Check:
    """One check of a critical target."""

    name: str
    status: str
    detail: str
    value: float | None = None
    threshold: float | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON form."""
        return {
            "name": self.name,
            "status": self.status,
            "detail": self.detail,
            "value": self.value,
            "threshold": self.threshold,
        }


@dataclass
class TargetHealth:
    """All checks of one target plus the evidence behind them."""

    target: CriticalTarget
    checks: list[Check] = field(default_factory=list)
    failing_tests: list[dict[str, str]] = field(default_factory=list)
    blocker_todos: list[TodoItem] = field(default_factory=list)
    line_percent: float | None = None
    branch_percent: float | None = None
    mutation_score: float | None = None

    @property
    def status(self) -> str:
        """``fail`` if any check fails, ``pass`` if all measured checks pass, else ``not measured``."""
        statuses = {check.status for check in self.checks}
        if FAIL in statuses:
            return FAIL
        return PASS if PASS in statuses else NOT_MEASURED

    def check(self, name: str) -> Check | None:
        """The check called ``name``, if it was made."""
        return next((c for c in self.checks if c.name == name), None)

    def to_dict(self) -> dict[str, object]:
        """JSON form."""
        target = self.target
        return {
            "name": target.name,
            "kind": target.kind,
            "path": target.path,
            "module": target.module,
            "function": target.function,
            "thresholds": target.thresholds.to_dict(),
            "status": self.status,
            "line_percent": self.line_percent,
            "branch_percent": self.branch_percent,
            "mutation_score": self.mutation_score,
            "failing_tests": list(self.failing_tests),
            "blocker_todos": [item.to_dict() for item in self.blocker_todos],
            "checks": [check.to_dict() for check in self.checks],
        }


@dataclass
class CriticalHealth:
    """Health of all critical targets."""

    targets: list[TargetHealth]

    @property
    def measured_checks(self) -> list[Check]:
        """Checks that count in the score: made with data; ``exists`` only when it fails (no credit for it)."""
        return [
            c
            for t in self.targets
            for c in t.checks
            if c.status != NOT_MEASURED and not (c.name == "exists" and c.status == PASS)
        ]

    @property
    def missing(self) -> list[TargetHealth]:
        """Targets whose source (or entry-point function) cannot be found: misspelled config."""
        return [t for t in self.targets if (c := t.check("exists")) is not None and c.status == FAIL]

    @property
    def score(self) -> float | None:
        """Share of passing measured checks, in percent (None without targets or measured checks)."""
        checks = self.measured_checks
        if not checks:
            return None
        return 100.0 * sum(1 for c in checks if c.status == PASS) / len(checks)


class ImportIndex:
    """Modules imported by test files, parsed once per file with ``ast``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[str, frozenset[str]] = {}

    def imports(self, test_file: str) -> frozenset[str]:
        """Dotted names a test file imports (``from a import b`` yields ``a`` and ``a.b``)."""
        if test_file not in self._cache:
            self._cache[test_file] = self._parse(test_file)
        return self._cache[test_file]

    def _parse(self, test_file: str) -> frozenset[str]:
        try:
            tree = ast.parse((self.root / test_file).read_bytes(), filename=test_file)
        except (OSError, SyntaxError, ValueError):
            return frozenset()
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names if alias.name != "*")
        return frozenset(names)


def touches(case: TestCase, target: CriticalTarget, index: ImportIndex) -> str | None:
    """How a failing test touches ``target``: ``"traceback"``, ``"import"`` or None."""
    if target.path and target.path in case.details:
        return "traceback"
    if case.file and target.module:
        imported = index.imports(case.file)
        prefix = target.module + "."
        if target.module in imported or any(name.startswith(prefix) for name in imported):
            return "import"
    return None


def _coverage_counts(target: CriticalTarget, coverage: CoverageReport) -> tuple[Counts | None, str]:
    assert target.path is not None
    file = coverage.file(target.path)
    if file is None:
        return None, "not in the coverage data (outside the coverage source, or never measured)"
    if target.function is None:
        return file.counts, "module"
    if not file.functions:
        return file.counts, "module (this coverage.py reports no per-function data)"
    counts = file.functions.get(target.function)
    if counts is None:
        return None, f"function {target.function!r} not found in the coverage data of {target.path}"
    return counts, f"function {target.function}"


_SKIPPED_DIRS = frozenset({"mutants", "node_modules", "site-packages", "__pycache__", "build", "dist"})


def _entries(directory: Path, dotted: bool) -> list[str]:
    """Module and package names in ``directory`` (``core.py`` / ``core`` for dotted names)."""
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return []
    names = []
    for entry in entries:
        if entry.name.startswith(".") or entry.name in _SKIPPED_DIRS:
            continue
        if entry.is_dir() and (entry / "__init__.py").is_file():
            names.append(entry.name)
        elif entry.suffix == ".py" and entry.is_file():
            names.append(entry.stem if dotted else entry.name)
    return names


def _exists(root: Path, parts: list[str], dotted: bool) -> bool:
    path = root.joinpath(*parts)
    if dotted:
        return path.is_dir() or path.with_name(path.name + ".py").is_file()
    return path.is_file()


def suggestion(root: Path, target: CriticalTarget) -> str | None:
    """The existing module one misspelled part away from a target that cannot be found, if any.

    Spelled like the target: ``pkg/core.py`` for a path, ``pkg.core`` for a dotted name.
    """
    dotted = not (target.name.endswith(".py") or "/" in target.name)
    parts = target.module.split(".") if dotted else target.name.split(":", 1)[0].split("/")
    if any(part in ("", ".", "..") for part in parts):
        return None
    directory = root
    for index, part in enumerate(parts):
        if (directory / part).is_dir() and index < len(parts) - 1:
            directory = directory / part
            continue
        close = difflib.get_close_matches(part, _entries(directory, dotted), n=1, cutoff=0.6)
        fixed = [*parts[:index], *close, *parts[index + 1 :]]
        if close and _exists(root, fixed, dotted):
            return ".".join(fixed) if dotted else "/".join(fixed)
        return None
    return None


def _defined_names(body: list[ast.stmt]) -> dict[str, ast.stmt]:
    """Names bound at the top of a module or class body, with the statement that binds them."""
    names: dict[str, ast.stmt] = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update((t.id, node) for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update(((a.asname or a.name).split(".")[0], node) for a in node.names)
    return names


def missing_function(root: Path, path: str, function: str) -> str | None:
    """Why ``function`` (``name`` or ``Class.method``) is not defined in ``path``; None if it is (or unknown)."""
    try:
        tree = ast.parse((root / path).read_bytes(), filename=path)
    except (OSError, SyntaxError, ValueError):
        return None  # cannot tell: the other checks report on the file
    body: list[ast.stmt] = tree.body
    parts = function.split(".")
    for depth, part in enumerate(parts):
        names = _defined_names(body)
        if part not in names:
            close = difflib.get_close_matches(part, list(names), n=1)
            hint = f" (did you mean {'.'.join([*parts[:depth], close[0]])!r}?)" if close else ""
            return f"{path} defines no {function!r}{hint}"
        node = names[part]
        if not isinstance(node, ast.ClassDef):
            return None  # found: a function, or a name bound some other way (not looked into)
        body = node.body
    return None


def _threshold_check(name: str, value: float | None, threshold: float | None, what: str) -> Check:
    if threshold is None:
        return Check(name, NOT_MEASURED, "no threshold set")
    if value is None:
        return Check(name, FAIL, what, None, threshold)
    status = PASS if value >= threshold else FAIL
    return Check(name, status, f"{what}: {value:.1f}% (threshold {threshold:g}%)", value, threshold)


def _coverage_checks(health: TargetHealth, coverage: CoverageReport | None) -> None:
    target = health.target
    if coverage is None:
        health.checks.append(Check("line_coverage", NOT_MEASURED, "coverage was not measured"))
        health.checks.append(Check("branch_coverage", NOT_MEASURED, "coverage was not measured"))
        return
    counts, what = _coverage_counts(target, coverage)
    if counts is not None:
        health.line_percent = counts.line_percent
        health.branch_percent = counts.branch_percent if coverage.branch_measured else None
    health.checks.append(_threshold_check("line_coverage", health.line_percent, target.thresholds.line, what))
    if not coverage.branch_measured:
        if target.thresholds.branch is None:
            health.checks.append(Check("branch_coverage", NOT_MEASURED, "no threshold set"))
        else:
            detail = "the coverage report has no branch data, so the branch threshold cannot be met"
            health.checks.append(Check("branch_coverage", FAIL, detail, None, target.thresholds.branch))
    else:
        health.checks.append(
            _threshold_check("branch_coverage", health.branch_percent, target.thresholds.branch, what)
        )


def _mutation_check(health: TargetHealth, mutation: MutationResult | None) -> None:
    target = health.target
    if mutation is None or target.kind != "module":
        return
    module = next((m for m in mutation.modules if m.path == target.path), None)
    if module is None or not module.found:
        health.checks.append(Check("mutation", NOT_MEASURED, "mutmut wrote no results for this module"))
        return
    if module.total == 0:
        health.checks.append(Check("mutation", PASS, "mutmut generated no mutants for this module"))
        return
    if module.score is None:
        health.checks.append(Check("mutation", NOT_MEASURED, "no mutant of this module was checked"))
        return
    health.mutation_score = module.score
    detail = f"{module.detected}/{module.checked} mutants detected"
    health.checks.append(_threshold_check("mutation", module.score, target.thresholds.mutation, detail))


def evaluate_target(
    target: CriticalTarget,
    tests: TestRun | None,
    coverage: CoverageReport | None,
    todos: TodoScan,
    mutation: MutationResult | None,
    index: ImportIndex,
) -> TargetHealth:
    """Run every check of one target."""
    health = TargetHealth(target)
    if target.path is None:
        close = suggestion(index.root, target)
        hint = f" (did you mean {close!r}?)" if close else ""
        health.checks.append(Check("exists", FAIL, f"cannot find the source of {target.name}{hint}"))
        return health
    absent = missing_function(index.root, target.path, target.function) if target.function else None
    if absent is not None:
        health.checks.append(Check("exists", FAIL, f"cannot find entry point {target.name}: {absent}"))
        return health
    health.checks.append(Check("exists", PASS, target.path))
    if tests is None:
        health.checks.append(Check("tests", NOT_MEASURED, "tests were not run"))
    else:
        for case in tests.problems:
            via = touches(case, target, index)
            if via is not None:
                health.failing_tests.append({"test": case.test_id, "outcome": case.outcome, "via": via})
        count = len(health.failing_tests)
        detail = f"{count} failing test(s) touch it" if count else "no failing test touches it"
        health.checks.append(Check("tests", FAIL if count else PASS, detail, float(count)))
    _coverage_checks(health, coverage)
    health.blocker_todos = [item for item in todos.items if item.blocker and item.file == target.path]
    blockers = len(health.blocker_todos)
    health.checks.append(
        Check("blocker_todos", FAIL if blockers else PASS, f"{blockers} blocking TODO(s)", float(blockers))
    )
    _mutation_check(health, mutation)
    return health


def evaluate(
    targets: tuple[CriticalTarget, ...],
    root: Path,
    tests: TestRun | None,
    coverage: CoverageReport | None,
    todos: TodoScan,
    mutation: MutationResult | None = None,
) -> CriticalHealth:
    """Evaluate all critical targets."""
    index = ImportIndex(root)
    return CriticalHealth([evaluate_target(t, tests, coverage, todos, mutation, index) for t in targets])
