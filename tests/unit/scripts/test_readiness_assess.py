"""Whole assessment from hand-written reports: JSON keys, Markdown, comparison, recommendations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scripts.readiness.assess import Options, assess
from scripts.readiness.compare import compare, delta, load_previous
from scripts.readiness.errors import ReadinessError
from scripts.readiness.recommend import recommendations
from scripts.readiness.render import line_ranges, render_markdown

PYPROJECT = """
[project]
name = "tiny"
[tool.readiness]
source = ["pkg"]
[tool.readiness.critical_modules]
"pkg/core.py" = { line = 80, branch = 50 }
[tool.readiness.entry_points]
"pkg.cli:main" = {}
"""

JUNIT = """<testsuites><testsuite tests="1">
<testcase classname="tests.test_core" name="test_ok"/>
<testcase classname="tests.test_core" name="test_bad"><failure message="assert 1 == 2">tests/test_core.py:5: AssertionError</failure></testcase>
<testcase classname="tests.test_util" name="test_skip"><skipped message="later"/></testcase>
</testsuite></testsuites>"""


def _summary(s: int, c: int, b: int, cb: int) -> dict[str, int]:
    return {"num_statements": s, "covered_lines": c, "num_branches": b, "covered_branches": cb}


COVERAGE = {
    "meta": {"branch_coverage": True, "version": "7.17.3"},
    "files": {
        "pkg/__init__.py": {"summary": _summary(0, 0, 0, 0)},
        "pkg/core.py": {"summary": _summary(10, 9, 4, 3), "missing_lines": [7]},
        "pkg/cli.py": {
            "summary": _summary(6, 0, 2, 0),
            "functions": {"main": {"summary": _summary(3, 0, 2, 0)}},
        },
    },
    "totals": _summary(16, 9, 6, 3),
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "tiny"
    (root / "pkg").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "core.py").write_text("def f():\n    return 1  # HACK: fixed value\n")
    (root / "pkg" / "cli.py").write_text("def main():\n    # TODO(blocker): parse args\n    return 0\n")
    (root / "tests" / "test_core.py").write_text("from pkg.core import f\n")
    (root / "junit.xml").write_text(JUNIT)
    (root / "coverage.json").write_text(json.dumps(COVERAGE))
    return root


def _options(root: Path, **kwargs: Any) -> Options:
    defaults: dict[str, Any] = {
        "project": root,
        "junit": root / "junit.xml",
        "coverage_json": root / "coverage.json",
    }
    defaults.update(kwargs)
    return Options(**defaults)


def test_report_from_existing_reports(project: Path) -> None:
    outcome = assess(_options(project))
    report = outcome.report
    assert outcome.json_path == project / "reports" / "readiness" / "readiness.json"
    assert json.loads(outcome.json_path.read_text()) == report
    assert set(report) >= {
        "score",
        "band",
        "components",
        "verdict",
        "weights",
        "recommendations",
        "comparison",
    }
    assert set(report["components"]) == {"tests", "coverage", "todos", "critical_paths", "mutation"}
    for entry in report["components"].values():
        assert set(entry) >= {"status", "score", "weight", "effective_weight", "reason"}
    tests = report["components"]["tests"]
    assert tests["counts"] == {
        "passed": 1,
        "failed": 1,
        "errored": 0,
        "skipped": 1,
        "xfailed": 0,
        "xpassed": 0,
    }
    assert tests["failing_tests"] == ["tests/test_core.py::test_bad"]
    coverage = report["components"]["coverage"]
    assert coverage["line"] == {"covered": 9, "total": 16, "percent": 56.25}
    assert coverage["branch"] == {"covered": 3, "total": 6, "percent": 50.0}
    assert coverage["critical_modules"] == [
        {
            "path": "pkg/core.py",
            "measured": True,
            "line_percent": 90.0,
            "line_threshold": 80.0,
            "branch_percent": 75.0,
            "branch_threshold": 50.0,
            "missing_lines": [7],
            "status": "pass",
        }
    ]
    todos = report["components"]["todos"]
    assert todos["summary"]["blockers"] == 1 and todos["summary"]["total"] == 2
    assert todos["items"][0]["risk"] == "blocker"
    assert report["components"]["mutation"]["status"] == "skipped"
    targets = {t["name"]: t for t in report["components"]["critical_paths"]["targets"]}
    assert targets["pkg/core.py"]["failing_tests"][0]["via"] == "import"
    assert targets["pkg.cli:main"]["line_percent"] == 0.0
    # tests 50, coverage (56.25+50)/2, todos 0 (1 blocker of 2), critical: see checks
    verdict = report["verdict"]
    assert not verdict["passed"] and outcome.exit_code == 1
    assert {h["condition"] for h in verdict["hard_failures"]} == {
        "critical_test_failure",
        "critical_blocker_todo",
    }
    assert report["weights"]["renormalized"] is False
    assert report["inputs"]["pytest_command"] is None
    markdown = outcome.md_path.read_text()
    assert markdown == render_markdown(report)
    assert (
        f"- Reports reused (pytest not run): `{project / 'junit.xml'}`, `{project / 'coverage.json'}`"
        in markdown
    )
    for heading in (
        "## Score breakdown",
        "## Tests",
        "### Top failure categories",
        "## Coverage",
        "### Critical modules",
        "## Critical paths",
        "## TODOs",
        "### Blockers",
        "## Recommendations",
        "## Verdict: FAILED",
    ):
        assert heading in markdown


def test_skipped_components_are_renormalized_and_explained(project: Path) -> None:
    outcome = assess(
        _options(
            project,
            coverage_json=None,
            fail_under=0.0,
            out_dir=project / "out",
            weights={"critical_paths": 0.0},
        )
    )
    report = outcome.report
    assert report["components"]["coverage"]["status"] == "skipped"
    assert "pytest was not run" in report["components"]["coverage"]["reason"]
    assert report["weights"]["renormalized"]
    assert report["weights"]["skipped_components"] == ["coverage", "mutation"]
    assert "The remaining weights were renormalized" in outcome.md_path.read_text()
    assert any("coverage component was not scored" in r for r in report["recommendations"])


def test_skip_tests_scores_todos_and_critical_only(project: Path) -> None:
    report = assess(Options(project=project, skip_tests=True, fail_under=0.0)).report
    assert report["components"]["tests"]["status"] == "skipped"
    assert report["components"]["tests"]["reason"] == "--skip-tests: pytest was not run"
    assert report["components"]["critical_paths"]["status"] == "measured"


def test_coverage_alone_and_warnings(project: Path) -> None:
    data = dict(COVERAGE, meta={"branch_coverage": False})
    (project / "nobranch.json").write_text(json.dumps(data))
    (project / "pkg" / "core.py").touch()  # newer than the report: looks stale
    import os

    os.utime(project / "nobranch.json", (1, 1))
    report = assess(_options(project, junit=None, coverage_json=project / "nobranch.json")).report
    assert report["components"]["tests"]["status"] == "skipped"
    assert any("no branch data" in w for w in report["warnings"])
    assert any("may be stale" in w for w in report["warnings"])


def test_compare_with_previous_run(project: Path) -> None:
    first = assess(_options(project, json_report=project / "first.json", md_report=project / "first.md"))
    (project / "junit.xml").write_text(
        JUNIT.replace('<failure message="assert 1 == 2">tests/test_core.py:5: AssertionError</failure>', "")
    )
    second = assess(_options(project, compare=first.json_path)).report
    comparison = second["comparison"]
    assert comparison["previous_report"] == str(first.json_path)
    assert comparison["no_longer_failing_tests"] == ["tests/test_core.py::test_bad"]
    assert comparison["newly_failing_tests"] == []
    assert comparison["tests"]["failed"] == {"before": 1, "after": 0, "delta": -1.0}
    assert comparison["score"]["delta"] == round(second["score"] - first.report["score"], 2)
    assert "## Change since the last run" in render_markdown(second)


def test_compare_input_errors(tmp_path: Path) -> None:
    with pytest.raises(ReadinessError, match="cannot read previous report"):
        load_previous(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ReadinessError, match="not valid JSON"):
        load_previous(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"a": 1}')
    with pytest.raises(ReadinessError, match="not a readiness JSON report"):
        load_previous(tmp_path / "other.json")
    assert delta(None, 3) == {"before": None, "after": 3, "delta": None}
    assert delta(True, 3)["delta"] is None
    minimal = {"score": 10, "components": {}}
    result = compare(minimal, {"score": 12.5, "components": {}}, "prev.json")
    assert result["score"]["delta"] == 2.5
    assert result["components"]["tests"]["delta"] is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"project": Path("/nonexistent/project")}, "does not exist"),
        ({"weights": {"speed": 1.0}}, "unknown component"),
        ({"weights": {"tests": -1.0}}, "must not be negative"),
        ({"junit": Path("/nonexistent/junit.xml")}, "cannot read JUnit report"),
        ({"compare": Path("/nonexistent/prev.json")}, "cannot read previous report"),
    ],
)
def test_usage_errors(project: Path, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ReadinessError, match=message):
        assess(_options(project, **options))


def test_mutation_needs_critical_modules(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    with pytest.raises(ReadinessError, match="--mutation needs critical modules"):
        assess(Options(project=tmp_path, skip_tests=True, mutation=True))


def test_recommendations_cover_findings() -> None:
    report: dict[str, Any] = {
        "verdict": {"hard_failures": [{"condition": "no_tests", "detail": "the test run executed no tests"}]},
        "weights": {"skipped_components": []},
        "components": {
            "tests": {
                "status": "measured",
                "executed": 0,
                "total": 4,
                "counts": {"skipped": 4},
                "failures": {"top_categories": []},
            },
            "coverage": {
                "status": "measured",
                "line": {"percent": 80.0},
                "branch": {"percent": 40.0},
                "critical_modules": [
                    {"path": "a.py", "status": "fail", "measured": False},
                    {
                        "path": "b.py",
                        "status": "fail",
                        "measured": True,
                        "line_percent": 50.0,
                        "line_threshold": 80.0,
                        "branch_percent": 10.0,
                        "branch_threshold": 50.0,
                    },
                ],
                "modules": [{"path": f"m{i}.py", "line": {"total": 3, "covered": 0}} for i in range(7)],
            },
            "todos": {
                "status": "measured",
                "items": [{"file": "a.py", "line": 1, "blocker": False, "risk": "high"}],
            },
            "critical_paths": {"targets": [{"path": "b.py", "thresholds": {"mutation": 60.0}}]},
            "mutation": {"status": "measured", "modules": [{"path": "b.py", "score": 30.0, "undetected": 7}]},
        },
    }
    text = "\n".join(recommendations(report))
    assert "Gate blocker (no_tests)" in text
    assert "No test ran to a verdict" in text
    assert "4 test(s) are skipped" in text
    assert "a.py is not in the coverage data" in text
    assert "b.py: line 50.0% < 80%, branch 10.0% < 50%" in text
    assert "7 module(s) are never executed" in text and "(+2 more)" in text
    assert "Branch coverage (40.0%) trails line coverage (80.0%)" in text
    assert "Review 1 FIXME/HACK/XXX" in text
    assert "mutation score 30.0% < 60%" in text
    report["weights"]["skipped_components"] = ["mutation"]
    report["components"]["mutation"] = {"status": "skipped", "reason": "not requested (--mutation)"}
    assert not any("mutation" in r for r in recommendations(report))
    report["components"]["mutation"] = {"status": "error", "reason": "checked nothing"}
    assert "The mutation component was not scored (checked nothing)." in recommendations(report)


def test_line_ranges() -> None:
    assert line_ranges([]) == "-"
    assert line_ranges([7]) == "7"
    assert line_ranges([3, 1, 2, 7, 9, 10]) == "1-3, 7, 9-10"
    assert line_ranges(list(range(0, 40, 2)), limit=3) == "0, 2, 4, ... (17 more)"


COLLECTION_ERROR = """<testsuites><testsuite>
<testcase classname="tests.test_core" name="test_ok"/>
<testcase classname="" name="tests.test_broken"><error message="collection failure">ImportError while importing test module 'tests/test_broken.py'.
E   ModuleNotFoundError: No module named 'nonexistent_mod'</error></testcase>
</testsuite></testsuites>"""
GREEN_JUNIT = '<testsuite><testcase classname="tests.test_core" name="test_ok"/></testsuite>'


def _fake_mutmut(tmp_path: Path, output: str) -> str:
    """An "interpreter" that prints mutmut-like output, writes no results and fails."""
    (tmp_path / "mutmut_output.txt").write_text(output)
    script = tmp_path / "fake_python"
    script.write_text(f"#!/bin/sh\ncat {tmp_path / 'mutmut_output.txt'}\nexit 1\n")
    script.chmod(0o755)
    return str(script)


@pytest.mark.parametrize(
    ("junit", "output", "expected", "unexpected"),
    [
        (
            COLLECTION_ERROR,
            "ERROR collecting tests/test_broken.py\nfailed to collect stats. runner returned 1\n",
            "1 test module(s) fail to import or collect: tests/test_broken.py (ModuleNotFoundError)",
            "tests of the mutated code to pass",
        ),
        (
            GREEN_JUNIT,
            "ImportError while importing test module '/p/mutants/tests/test_io.py'.\nERROR collecting x\n",
            "mutmut's copy of the project (mutants/)",
            "tests of the mutated code to pass",
        ),
        (
            JUNIT,
            "failed to collect stats. runner returned 1\n",
            "1 test(s) fail, e.g. tests/test_core.py",
            "",
        ),
        (
            GREEN_JUNIT,
            "1 passed in 0.02s\nFAILED: Unable to force test failures\n",
            "no test calls the mutated code",
            "tests of the mutated code to pass",
        ),
    ],
    ids=["import-error-in-suite", "import-error-in-mutants-copy", "failing-test", "no-test-calls-the-code"],
)
def test_mutation_errors_say_why_nothing_was_checked(
    project: Path, tmp_path: Path, junit: str, output: str, expected: str, unexpected: str
) -> None:
    (project / "junit.xml").write_text(junit)
    options = _options(project, mutation=True, python=_fake_mutmut(tmp_path, output), out_dir=tmp_path / "o")
    report = assess(options).report
    (error,) = report["verdict"]["errors"]
    first = error.splitlines()[0]
    assert first.startswith("mutation testing checked no mutant")
    assert expected in first
    if unexpected:
        assert unexpected not in first


@pytest.mark.parametrize(
    ("section", "name", "expected"),
    [
        (
            "critical_modules",
            '"pkg/cor.py"',
            "cannot find the source of pkg/cor.py (did you mean 'pkg/core.py'?)",
        ),
        ("critical_modules", '"pkg.coer"', "cannot find the source of pkg.coer (did you mean 'pkg.core'?)"),
        ("entry_points", '"pkg.cli:mian"', "pkg/cli.py defines no 'mian' (did you mean 'main'?)"),
    ],
    ids=["path", "dotted", "entry-point-function"],
)
def test_misspelled_critical_target_warns_and_fails_the_gate(
    project: Path, section: str, name: str, expected: str
) -> None:
    # hard_conditions = []: the check cannot be configured away
    (project / "pyproject.toml").write_text(
        f"[tool.readiness]\nsource = ['pkg']\nhard_conditions = []\n[tool.readiness.{section}]\n{name} = {{}}\n"
    )
    (project / "junit.xml").write_text(GREEN_JUNIT)
    report = assess(_options(project, fail_under=0.0)).report
    (warning,) = [w for w in report["warnings"] if "cannot find" in w]
    assert expected in warning and f"[tool.readiness.{section}]" in warning
    assert not report["verdict"]["passed"] and report["verdict"]["exit_code"] == 1
    (failure,) = report["verdict"]["hard_failures"]
    assert failure["condition"] == "missing_critical_target"
    assert report["components"]["critical_paths"]["score"] == 0.0
