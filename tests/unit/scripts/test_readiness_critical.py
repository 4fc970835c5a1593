"""Critical-path health: failing tests that touch targets, coverage thresholds, blockers, mutation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.readiness.config import CriticalTarget, Thresholds
from scripts.readiness.coverage_json import parse_coverage_json
from scripts.readiness.critical import (
    FAIL,
    NOT_MEASURED,
    PASS,
    Check,
    ImportIndex,
    TargetHealth,
    evaluate,
    missing_function,
    suggestion,
    touches,
)
from scripts.readiness.junit import TestCase, parse_junit
from scripts.readiness.mutation import MutationResult, parse_meta
from scripts.readiness.todos import TodoItem, TodoScan


def _target(
    path: str | None = "pkg/core.py",
    kind: str = "module",
    function: str | None = None,
    line: float | None = 80.0,
) -> CriticalTarget:
    module = "pkg.core"
    return CriticalTarget(path or module, kind, module, path, function, Thresholds(line, 50.0, 60.0))


def _coverage(branch: bool = True) -> str:
    def summary(s: int, c: int, b: int, cb: int) -> dict[str, int]:
        return {"num_statements": s, "covered_lines": c, "num_branches": b, "covered_branches": cb}

    return json.dumps(
        {
            "meta": {"branch_coverage": branch},
            "files": {
                "pkg/core.py": {
                    "summary": summary(10, 9, 4, 1),
                    "functions": {"main": {"summary": summary(4, 2, 0, 0)}},
                }
            },
            "totals": summary(10, 9, 4, 1),
        }
    )


JUNIT = """<testsuite>
<testcase classname="tests.test_core" name="test_import"><failure message="boom">tests/test_core.py:3: ValueError</failure></testcase>
<testcase classname="tests.test_other" name="test_tb"><failure message="x">pkg/core.py:12: KeyError</failure></testcase>
<testcase classname="tests.test_other" name="test_unrelated"><failure message="y">tests/test_other.py:9: AssertionError</failure></testcase>
<testcase classname="tests.test_other" name="test_ok"/>
</testsuite>"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_core.py").write_text("from pkg import core\n")
    (tmp_path / "tests" / "test_other.py").write_text("import os\nfrom pkg.util import *\n")
    return tmp_path


def _check(health: TargetHealth, name: str) -> Check:
    check = health.check(name)
    assert check is not None, name
    return check


def _blocker(file: str) -> TodoItem:
    return TodoItem(file, 7, "TODO", "fix", 0.95, "blocker", True, True, True, ("blocker",))


def test_touches_via_import_and_traceback(root: Path) -> None:
    run = parse_junit(JUNIT, root)
    index = ImportIndex(root)
    via = {case.name: touches(case, _target(), index) for case in run.problems}
    assert via == {"test_import": "import", "test_tb": "traceback", "test_unrelated": None}


def test_import_index_handles_all_import_forms(tmp_path: Path) -> None:
    (tmp_path / "t.py").write_text("import a.b\nfrom c import d, e\nfrom . import rel\nfrom f import *\n")
    (tmp_path / "bad.py").write_text("def (:\n")
    index = ImportIndex(tmp_path)
    assert index.imports("t.py") == {"a.b", "c", "c.d", "c.e", "f"}
    assert index.imports("bad.py") == frozenset()
    assert index.imports("missing.py") == frozenset()


def test_module_with_everything_measured(root: Path) -> None:
    tests = parse_junit(JUNIT, root)
    coverage = parse_coverage_json(_coverage())
    todos = TodoScan(items=[_blocker("pkg/core.py"), _blocker("pkg/other.py")])
    meta = {"pkg.core.x_f__mutmut_1": 1, "pkg.core.x_f__mutmut_2": 0, "pkg.core.x_f__mutmut_3": 0}
    mutation = MutationResult([parse_meta(json.dumps({"exit_code_by_key": meta}), "pkg/core.py")])
    health = evaluate((_target(),), root, tests, coverage, todos, mutation)
    (target,) = health.targets
    statuses = {c.name: c.status for c in target.checks}
    assert statuses == {
        "exists": PASS,
        "tests": FAIL,
        "line_coverage": PASS,
        "branch_coverage": FAIL,
        "blocker_todos": FAIL,
        "mutation": FAIL,
    }
    assert [f["via"] for f in target.failing_tests] == ["import", "traceback"]
    assert target.line_percent == 90.0 and target.branch_percent == 25.0
    assert target.mutation_score == pytest.approx(100 / 3)
    assert target.status == FAIL
    assert health.score == pytest.approx(100 * 1 / 5)  # line coverage; "exists" earns no credit
    as_dict = target.to_dict()
    assert as_dict["blocker_todos"][0]["line"] == 7
    assert target.check("nope") is None


def test_entry_point_uses_function_coverage(root: Path) -> None:
    coverage = parse_coverage_json(_coverage())
    ep = _target(kind="entry_point", function="main", line=60.0)
    (health,) = evaluate((ep,), root, None, coverage, TodoScan()).targets
    line = _check(health, "line_coverage")
    assert line.status == FAIL and line.value == 50.0
    assert _check(health, "tests").status == NOT_MEASURED
    missing = _target(kind="entry_point", function="run")
    (health,) = evaluate((missing,), root, None, coverage, TodoScan()).targets
    assert "function 'run' not found" in _check(health, "line_coverage").detail


def test_missing_target_fails_only_exists(root: Path) -> None:
    result = evaluate((_target(path=None),), root, None, None, TodoScan())
    assert [(c.name, c.status) for c in result.targets[0].checks] == [("exists", FAIL)]
    assert result.score == 0.0


def test_unmeasured_data_is_not_scored(root: Path) -> None:
    health = evaluate((_target(),), root, None, None, TodoScan())
    statuses = {c.name: c.status for c in health.targets[0].checks}
    assert statuses["line_coverage"] == statuses["branch_coverage"] == NOT_MEASURED
    assert health.score == 100.0  # blocker_todos only: "exists" earns no credit
    assert evaluate((), root, None, None, TodoScan()).score is None


def test_file_absent_from_coverage_fails(root: Path) -> None:
    coverage = parse_coverage_json(_coverage(branch=False))
    (health,) = evaluate((_target(path="pkg/other.py"),), root, None, coverage, TodoScan()).targets
    assert _check(health, "line_coverage").status == FAIL
    assert _check(health, "branch_coverage").status == FAIL  # no branch data cannot meet a branch threshold


def test_missing_branch_data_fails_a_branch_threshold_only(root: Path) -> None:
    """Dropping branch data from the report must never turn a failing branch check into an unscored one."""
    with_branches = parse_coverage_json(_coverage(branch=True))  # pkg/core.py: branch 25% < 50%
    without = parse_coverage_json(_coverage(branch=False))
    for coverage in (with_branches, without):
        (health,) = evaluate((_target(),), root, None, coverage, TodoScan()).targets
        assert _check(health, "branch_coverage").status == FAIL
    no_threshold = CriticalTarget(
        "pkg/core.py", "module", "pkg.core", "pkg/core.py", None, Thresholds(80, None)
    )
    (health,) = evaluate((no_threshold,), root, None, without, TodoScan()).targets
    assert _check(health, "branch_coverage").status == NOT_MEASURED


def test_mutation_check_variants(root: Path) -> None:
    def module(codes: dict[str, int | None]) -> MutationResult:
        return MutationResult([parse_meta(json.dumps({"exit_code_by_key": codes}), "pkg/core.py")])

    def status(mutation: MutationResult) -> str:
        (health,) = evaluate((_target(),), root, None, None, TodoScan(), mutation).targets
        return _check(health, "mutation").status

    assert status(module({})) == PASS
    assert status(module({"pkg.core.x_f__mutmut_1": None})) == NOT_MEASURED
    assert status(module({"pkg.core.x_f__mutmut_1": 1})) == PASS
    assert status(MutationResult([])) == NOT_MEASURED


def test_threshold_none_is_not_measured(root: Path) -> None:
    coverage = parse_coverage_json(_coverage())
    (health,) = evaluate((_target(line=None),), root, None, coverage, TodoScan()).targets
    assert _check(health, "line_coverage").status == NOT_MEASURED


def test_case_without_file_is_matched_by_traceback_only() -> None:
    case = TestCase("", "x", "failed", None, "call", "m", "pkg/core.py:1: E")
    assert touches(case, _target(), ImportIndex(Path("."))) == "traceback"
    case = TestCase("", "x", "failed", None, "call", "m", "")
    assert touches(case, _target(), ImportIndex(Path("."))) is None


def test_missing_function_knows_defs_classes_assignments_and_imports(tmp_path: Path) -> None:
    (tmp_path / "cli.py").write_text(
        "import argparse\nfrom os import path as p\nrun: int = 1\nalias = print\n"
        "def main():\n    pass\nasync def serve():\n    pass\n"
        "class App:\n    def start(self):\n        pass\n    Nested = int\n"
    )
    for name in ("main", "serve", "run", "alias", "p", "argparse", "App", "App.start", "App.Nested"):
        assert missing_function(tmp_path, "cli.py", name) is None, name
    assert missing_function(tmp_path, "cli.py", "mian") == "cli.py defines no 'mian' (did you mean 'main'?)"
    assert missing_function(tmp_path, "cli.py", "App.strat") == (
        "cli.py defines no 'App.strat' (did you mean 'App.start'?)"
    )
    assert missing_function(tmp_path, "cli.py", "zzz") == "cli.py defines no 'zzz'"
    (tmp_path / "broken.py").write_text("def (:\n")
    assert missing_function(tmp_path, "broken.py", "main") is None  # cannot tell
    assert missing_function(tmp_path, "absent.py", "main") is None


def test_suggestion_finds_the_closest_module(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    for name in ("pkg/__init__.py", "pkg/core.py", "pkg/sub/__init__.py", "tool.py"):
        (tmp_path / name).write_text("")

    def suggest(name: str, module: str) -> str | None:
        return suggestion(tmp_path, CriticalTarget(name, "module", module, None, None, Thresholds()))

    assert suggest("pkg/cor.py", "pkg.cor") == "pkg/core.py"
    assert suggest("pgk/core.py", "pgk.core") == "pkg/core.py"
    assert suggest("pkg/nope/deep/x.py", "pkg.nope.deep.x") is None
    assert suggest("pgk/cor.py", "pgk.cor") is None  # one misspelled part at most
    assert suggest("pkg.coer", "pkg.coer") == "pkg.core"
    assert suggest("pkg.sbu", "pkg.sbu") == "pkg.sub"
    assert suggest("tol.py", "tol") == "tool.py"
    assert suggest("../elsewhere/x.py", "..elsewhere.x") is None
