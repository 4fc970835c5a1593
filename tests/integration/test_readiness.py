"""End to end: scripts/assess_readiness.py run as a subprocess on tiny real projects built in a temp dir.

Each tiny project has its own pytest suite, run with this interpreter (it has pytest, pytest-cov and
mutmut). The figures in the readiness report are checked against pytest's own summary line and
coverage.py's own JSON report of the same run. The tiny projects' pytest runs load only pytest-cov
(plugin autoloading off): that keeps each run well under a second and changes nothing the script sees.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "assess_readiness.py"

FLAT_PYPROJECT = """
[project]
name = "tinyproj"
version = "0.0.1"

[tool.pytest.ini_options]
testpaths = ["tests"]

[tool.readiness.critical_modules]
"tinyproj/core.py" = { line = 80, branch = 60 }
"""

FLAT_CORE = '''"""Tiny module under assessment."""


def add(a, b):
    # TODO(blocker): reject non-numbers
    return a + b


def sign(x):
    if x >= 0:
        return 1
    return -1
'''

FLAT_UTIL = """def clamp(x, low, high):
    # FIXME: swap bounds when low > high
    if x < low:
        return low
    if x > high:
        return high
    return x
"""

FLAT_TESTS = """import pytest

from tinyproj.core import add, sign
from tinyproj.util import clamp


def test_add():
    assert add(2, 3) == 5


def test_sign_positive():
    assert sign(4) == 1


def test_add_is_wrong():
    assert add(2, 2) == 5


def test_clamp():
    assert clamp(5, 0, 10) == 5
    assert clamp(-1, 0, 10) == 0


@pytest.mark.skip(reason="not today")
def test_skipped():
    pass


@pytest.mark.xfail(reason="known bug")
def test_known_bug():
    assert clamp(20, 0, 10) == 20
"""

GREEN_PYPROJECT = """
[project]
name = "greenproj"
version = "0.0.1"

[tool.pytest.ini_options]
testpaths = ["tests"]

[tool.mutmut]
source_paths = ["greenlib"]

[tool.readiness]
fail_under = 50

[tool.readiness.critical_modules]
"greenlib/calc.py" = { line = 90, branch = 50, mutation = 10 }
"""

GREEN_COVERAGE = """
[run]
branch = true
source = ["greenlib"]
"""

GREEN_CALC = """def double(x):
    return x * 2


def parity(n):
    if n % 2 == 0:
        return "even"
    return "odd"
"""

GREEN_TESTS = """from greenlib.calc import double, parity


def test_double():
    assert double(3) == 6


def test_parity():
    assert parity(4) == "even"
    assert parity(3) == "odd"
"""

GREEN_SMOKE_TEST = """from greenlib.calc import double, parity


def test_runs():
    double(3)
    parity(4)
"""


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def _copy_flat(root: Path, target: Path) -> Path:
    """A fresh copy of the flat project's sources and tests (no reports, caches or mutants)."""
    files = {
        p.relative_to(root).as_posix(): p.read_text() for p in root.rglob("*.py") if "out" not in p.parts
    }
    return _write(target, {**files, "pyproject.toml": FLAT_PYPROJECT})


def _env() -> dict[str, str]:
    """This environment without outer coverage/pytest settings, loading only the pytest-cov plugin."""
    blocked = ("COV_CORE_", "COVERAGE_", "PYTEST_ADDOPTS", "PYTEST_XDIST")
    env = {k: v for k, v in os.environ.items() if not k.startswith(blocked)}
    env.update(PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", PYTEST_ADDOPTS="-p pytest_cov")
    return env


def _run(
    *args: str | Path, cwd: Path | None = None, python: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    command = [*(python or [sys.executable]), *map(str, args)]
    return subprocess.run(command, cwd=cwd or REPO, env=_env(), capture_output=True, text=True, timeout=300)


def _assess(project: Path, *args: str | Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out = project / "out"
    done = _run(SCRIPT, "--project", project, "--out-dir", out, *args)
    report_path = out / "readiness.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    return done, report


def _pytest_summary(log: str) -> dict[str, int]:
    """Counts from pytest's own final summary line, e.g. '1 failed, 3 passed, 1 skipped in 0.1s'."""
    line = [ln for ln in log.splitlines() if re.search(r"\d+ (passed|failed)", ln)][-1]
    found = {
        word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|xfailed|xpassed|errors?)", line)
    }
    found["errored"] = found.pop("errors", 0) + found.pop("error", 0)
    return found


@pytest.fixture(scope="module")
def flat(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str], dict[str, Any]]:
    root = _write(
        tmp_path_factory.mktemp("flat") / "tinyproj",
        {
            "pyproject.toml": FLAT_PYPROJECT,
            "tinyproj/__init__.py": "",
            "tinyproj/core.py": FLAT_CORE,
            "tinyproj/util.py": FLAT_UTIL,
            "tests/test_core.py": FLAT_TESTS,
        },
    )
    done, report = _assess(root)
    return root, done, report


@pytest.fixture(scope="module")
def green(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(
        tmp_path_factory.mktemp("green") / "greenproj",
        {
            "pyproject.toml": GREEN_PYPROJECT,
            "coverage.toml": GREEN_COVERAGE,
            "greenlib/__init__.py": "",
            "greenlib/calc.py": GREEN_CALC,
            "greenlib/consts.py": "ANSWER = 42\n",
            "tests/test_calc.py": GREEN_TESTS,
        },
    )


def test_failing_project_fails_the_gate_with_stable_keys(flat: tuple[Path, Any, dict[str, Any]]) -> None:
    _, done, report = flat
    assert done.returncode == 1, done.stderr
    assert "gate FAILED" in done.stdout
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
    assert report["band"] in ("not ready", "partial", "mostly ready", "production ready")
    assert report["verdict"]["exit_code"] == 1
    conditions = {h["condition"] for h in report["verdict"]["hard_failures"]}
    assert conditions == {"critical_test_failure", "critical_blocker_todo"}
    assert report["inputs"]["sources"] == ["tinyproj"]  # detected: no coverage config in the project
    markdown = (flat[0] / "out" / "readiness.md").read_text()
    assert markdown.startswith("# Readiness report: tinyproj")
    assert "- Test run: pytest exit code 1 in " in markdown


def test_test_counts_equal_pytest_own_summary(flat: tuple[Path, Any, dict[str, Any]]) -> None:
    root, _, report = flat
    tests = report["components"]["tests"]
    pytest_counts = _pytest_summary((root / "out" / "pytest.log").read_text())
    assert pytest_counts == {"passed": 3, "failed": 1, "skipped": 1, "xfailed": 1, "errored": 0}
    for outcome, count in pytest_counts.items():
        assert tests["counts"][outcome] == count, outcome
    assert tests["failing_tests"] == ["tests/test_core.py::test_add_is_wrong"]
    (category,) = tests["failures"]["top_categories"]
    assert category["category"] == "AssertionError: assert <n> == <n>"


def test_coverage_equals_coverage_py_own_numbers(flat: tuple[Path, Any, dict[str, Any]]) -> None:
    root, _, report = flat
    own = _run("-m", "coverage", "json", "-o", "-", "-q", cwd=root)
    assert own.returncode == 0, own.stderr
    totals = json.loads(own.stdout)["totals"]
    coverage = report["components"]["coverage"]
    assert coverage["line"]["total"] == totals["num_statements"]
    assert coverage["line"]["covered"] == totals["covered_lines"]
    assert coverage["branch"]["total"] == totals["num_branches"]
    assert coverage["branch"]["covered"] == totals["covered_branches"]
    assert coverage["line"]["percent"] == pytest.approx(totals["percent_statements_covered"])
    assert coverage["branch"]["percent"] == pytest.approx(totals["percent_branches_covered"])
    assert coverage["combined_percent"] == pytest.approx(totals["percent_covered"])
    assert coverage["branch"]["covered"] < coverage["branch"]["total"]  # the x < 0 branch is never taken
    (critical,) = coverage["critical_modules"]
    assert critical["path"] == "tinyproj/core.py" and critical["status"] == "fail"


def test_todos_and_critical_paths(flat: tuple[Path, Any, dict[str, Any]]) -> None:
    _, _, report = flat
    todos = report["components"]["todos"]
    locations = {(i["file"], i["line"], i["kind"], i["risk"]) for i in todos["items"]}
    assert locations == {("tinyproj/core.py", 5, "TODO", "blocker"), ("tinyproj/util.py", 2, "FIXME", "high")}
    assert todos["summary"]["blocker_ratio"] == 0.5
    (target,) = report["components"]["critical_paths"]["targets"]
    assert target["failing_tests"] == [
        {"test": "tests/test_core.py::test_add_is_wrong", "outcome": "failed", "via": "import"}
    ]
    assert {c["name"]: c["status"] for c in target["checks"]}["blocker_todos"] == "fail"


def test_compare_after_fixing_the_failing_test(
    flat: tuple[Path, Any, dict[str, Any]], tmp_path: Path
) -> None:
    root, _, first = flat
    previous = tmp_path / "previous.json"
    previous.write_text(json.dumps(first))
    fixed = _copy_flat(root, tmp_path / "fixed")
    _write(fixed, {"tests/test_core.py": FLAT_TESTS.replace("add(2, 2) == 5", "add(2, 2) == 4")})
    done, report = _assess(fixed, "--compare", previous, "--fail-under", "0")
    assert done.returncode == 1  # the blocking marker in a critical module still fails the gate
    comparison = report["comparison"]
    assert comparison["no_longer_failing_tests"] == ["tests/test_core.py::test_add_is_wrong"]
    assert comparison["tests"]["failed"]["delta"] == -1
    assert comparison["score"]["delta"] > 0
    assert "## Change since the last run" in (fixed / "out" / "readiness.md").read_text()


def test_reusing_reports_without_running_pytest(
    flat: tuple[Path, Any, dict[str, Any]], tmp_path: Path
) -> None:
    root, _, first = flat
    out = tmp_path / "reuse"
    done = _run(
        SCRIPT,
        "--project",
        root,
        "--out-dir",
        out,
        "--junit",
        root / "out" / "junit.xml",
        "--coverage-json",
        root / "out" / "coverage.json",
    )
    assert done.returncode == 1
    report = json.loads((out / "readiness.json").read_text())
    assert report["inputs"]["pytest_command"] is None
    assert not (out / "pytest.log").exists()
    assert report["score"] == first["score"]


@pytest.fixture
def tiny_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment of ``_env()`` for in-process runs of the script's ``main``."""
    for key in list(os.environ):
        if key.startswith(("COV_CORE_", "COVERAGE_", "PYTEST_XDIST")):
            monkeypatch.delenv(key)
    for key, value in _env().items():
        if key.startswith("PYTEST_"):
            monkeypatch.setenv(key, value)


def _main(project: Path, *args: str | Path) -> tuple[int, dict[str, Any]]:
    """Run the script's ``main`` in this process (so coverage sees it); the tiny project's pytest still forks."""
    from scripts.assess_readiness import main

    out = project / "out"
    code = main(["--project", str(project), "--out-dir", str(out), *map(str, args)])
    return code, json.loads((out / "readiness.json").read_text())


@pytest.mark.usefixtures("tiny_env")
def test_green_project_passes(green: Path) -> None:
    code, report = _main(green, "--pytest-args=tests")
    assert code == 0
    assert report["verdict"]["passed"]
    assert report["verdict"]["fail_under"] == 50.0
    command = report["inputs"]["pytest_command"]
    assert f"--cov-config={green / 'coverage.toml'}" in command and "--cov" in command
    assert report["components"]["tests"]["counts"]["passed"] == 2
    assert report["components"]["coverage"]["branch"]["percent"] == 100.0
    # the test path given to pytest is not mistaken for a coverage source
    assert {m["path"] for m in report["components"]["coverage"]["modules"]} == {
        "greenlib/__init__.py",
        "greenlib/calc.py",
        "greenlib/consts.py",
    }


@pytest.mark.usefixtures("tiny_env")
def test_no_tests_does_not_advise_branch_coverage_that_was_on(tmp_path: Path) -> None:
    project = _write(
        tmp_path / "notests",
        {"notests/__init__.py": "def f(x):\n    return 1 if x else 2\n", "tests/test_nothing.py": ""},
    )
    code, report = _main(project)
    assert code == 1 and report["inputs"]["pytest_exit_code"] == 5
    assert "--cov-branch" in report["inputs"]["pytest_command"]
    (warning,) = [w for w in report["warnings"] if "branch data" in w]
    assert "because no test ran" in warning
    assert "branch = true" not in warning


@pytest.mark.usefixtures("tiny_env")
def test_green_project_mutation_scores_from_mutmut_result_files(green: Path) -> None:
    pytest.importorskip("mutmut")
    from mutmut.stats import status_by_exit_code

    code, report = _main(green, "--mutation", "--mutation-budget", "120", "--mutation-workers", "2")
    assert code == 0, report["verdict"]
    mutation = report["components"]["mutation"]
    assert mutation["status"] == "measured"
    (module,) = mutation["modules"]
    meta = json.loads((green / "mutants" / "greenlib" / "calc.py.meta").read_text())
    statuses = Counter(status_by_exit_code[code] for code in meta["exit_code_by_key"].values())
    assert module["total"] == sum(statuses.values()) > 0
    assert module["detected"] == statuses["killed"] + statuses["timeout"]
    assert module["undetected"] == statuses["survived"] + statuses["no tests"] + statuses["suspicious"]
    assert module["score"] == pytest.approx(100.0 * module["detected"] / module["checked"])
    (target,) = report["components"]["critical_paths"]["targets"]
    assert target["mutation_score"] == module["score"]
    assert "## Mutation testing" in (green / "out" / "readiness.md").read_text()


@pytest.mark.usefixtures("tiny_env")
def test_mutation_sees_a_deleted_test_file(tmp_path: Path) -> None:
    """mutmut keeps its own copy of tests/ in mutants/; a test deleted from the project must stop counting."""
    pytest.importorskip("mutmut")
    project = _write(
        tmp_path / "greenproj",
        {
            "pyproject.toml": GREEN_PYPROJECT,
            "coverage.toml": GREEN_COVERAGE,
            "greenlib/__init__.py": "",
            "greenlib/calc.py": GREEN_CALC,
            "tests/test_calc.py": GREEN_TESTS,
            "tests/test_smoke.py": GREEN_SMOKE_TEST,
        },
    )
    args = ("--skip-tests", "--mutation", "--mutation-budget", "120", "--mutation-workers", "2")
    _, before = _main(project, *args)
    assert before["components"]["mutation"]["score"] == 100.0
    (project / "tests" / "test_calc.py").unlink()  # only the smoke test is left: it checks no result
    _, after = _main(project, *args)
    assert not (project / "mutants" / "tests" / "test_calc.py").exists()
    assert after["components"]["mutation"]["score"] < 50.0


@pytest.mark.usefixtures("tiny_env")
def test_mutation_that_checks_nothing_is_an_error(
    green: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("mutmut")
    config = tmp_path / "readiness.toml"
    config.write_text('[tool.readiness.critical_modules]\n"greenlib/consts.py" = {}\n')
    code, report = _main(green, "--config", config, "--mutation", "--mutation-budget", "120")
    assert code == 2
    assert "mutation testing checked no mutant" in capsys.readouterr().err
    assert report["components"]["mutation"]["status"] == "error"
    assert report["verdict"]["exit_code"] == 2 and not report["verdict"]["passed"]


@pytest.mark.usefixtures("tiny_env")
def test_mutation_budget_is_enforced(green: Path) -> None:
    pytest.importorskip("mutmut")
    code, report = _main(green, "--skip-tests", "--mutation", "--mutation-budget", "0.3")
    assert code == 2  # stopped before any mutant was checked
    assert report["components"]["mutation"]["budget_exhausted"]
    assert any("mutation budget" in warning for warning in report["warnings"])
    assert "ran out" in (green / "out" / "readiness.md").read_text()


def test_mutation_with_failing_critical_tests_is_an_error(
    flat: tuple[Path, Any, dict[str, Any]], tmp_path: Path
) -> None:
    pytest.importorskip("mutmut")
    project = _copy_flat(flat[0], tmp_path / "tinyproj")  # mutmut guesses source_paths from the dir name
    done, report = _assess(project, "--mutation", "--mutation-budget", "120")
    assert done.returncode == 2
    assert "mutmut needs the tests of the mutated code to pass" in done.stderr
    assert report["components"]["mutation"]["status"] == "error"
    assert report["verdict"]["hard_failures"]  # the gate's own findings are still reported


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--junit", "missing.xml"], "cannot read JUnit report"),
        (["--pytest-args=--no-such-flag"], "pytest did not complete (exit code 4"),
        (["--config", "missing.toml"], "config file"),
        (["--fail-under", "150"], "not between 0 and 100"),
    ],
)
def test_usage_and_tool_errors_exit_2(green: Path, tmp_path: Path, args: list[str], message: str) -> None:
    args = [str(tmp_path / a) if a.endswith((".xml", ".toml")) else a for a in args]
    done = _run(SCRIPT, "--project", green, "--out-dir", tmp_path / "out", *args)
    assert done.returncode == 2
    assert message in done.stderr


def test_runs_as_a_file_from_anywhere_and_as_a_module(tmp_path: Path) -> None:
    # -S: no site-packages, so only the script's own sys.path setup can make scripts.readiness importable
    as_file = _run(SCRIPT, "--help", cwd=tmp_path, python=[sys.executable, "-S"])
    assert as_file.returncode == 0, as_file.stderr
    assert "exit codes:" in as_file.stdout
    as_module = _run("-m", "scripts.assess_readiness", "--help", cwd=REPO)
    assert as_module.returncode == 0 and as_module.stdout == as_file.stdout
