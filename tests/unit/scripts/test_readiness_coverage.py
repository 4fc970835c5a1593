"""coverage.py JSON parsing: line and branch figures from the raw counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.readiness.coverage_json import (
    Counts,
    load_coverage_json,
    parse_coverage_json,
    percent,
    relative_path,
)
from scripts.readiness.errors import ReadinessError


def _summary(
    statements: int, covered: int, branches: int = 0, covered_branches: int = 0
) -> dict[str, object]:
    return {
        "covered_lines": covered,
        "num_statements": statements,
        "num_branches": branches,
        "covered_branches": covered_branches,
        "percent_covered": 123.0,  # never used: the figures are recomputed from the counts
    }


def _report(branch: bool = True) -> str:
    return json.dumps(
        {
            "meta": {"version": "7.17.3", "branch_coverage": branch},
            "files": {
                "pkg/core.py": {
                    "summary": _summary(11, 7, 4, 1),
                    "missing_lines": [9, 14, 15, 16],
                    "functions": {"sign": {"summary": _summary(3, 2, 2, 1)}, "": {"summary": _summary(8, 7)}},
                },
                "/abs/project/pkg/io.py": {"summary": _summary(5, 0)},
            },
            "totals": _summary(16, 7, 4, 1),
        }
    )


def test_percentages_follow_coverage_py() -> None:
    assert percent(0, 0) == 100.0
    assert percent(1, 3) == 100.0 / 3
    counts = Counts(statements=11, covered_lines=7, branches=4, covered_branches=1)
    assert counts.line_percent == pytest.approx(63.6363636)
    assert counts.branch_percent == 25.0
    assert counts.combined_percent == pytest.approx(100.0 * 8 / 15)


def test_parse_keeps_line_and_branch_apart() -> None:
    report = parse_coverage_json(_report())
    assert report.branch_measured
    assert report.coverage_version == "7.17.3"
    assert report.totals == Counts(16, 7, 4, 1)
    core = report.file("pkg/core.py")
    assert core is not None
    assert core.missing_lines == (9, 14, 15, 16)
    assert core.functions["sign"] == Counts(3, 2, 2, 1)
    as_dict = report.totals.to_dict(branch_measured=True)
    assert as_dict["line"] == {"covered": 7, "total": 16, "percent": 43.75}
    assert as_dict["branch"] == {"covered": 1, "total": 4, "percent": 25.0}


def test_branch_figures_are_none_without_branch_data() -> None:
    report = parse_coverage_json(_report(branch=False))
    assert not report.branch_measured
    assert report.totals.to_dict(branch_measured=False)["branch"] == {
        "covered": None,
        "total": None,
        "percent": None,
    }


def test_absolute_paths_become_relative_to_the_root(tmp_path: Path) -> None:
    inside = tmp_path / "pkg" / "io.py"
    assert relative_path(str(inside), tmp_path) == "pkg/io.py"
    assert relative_path("/elsewhere/x.py", tmp_path) == "/elsewhere/x.py"
    assert relative_path("pkg\\win.py", tmp_path) == "pkg/win.py"
    text = _report().replace("/abs/project", str(tmp_path))
    assert "pkg/io.py" in parse_coverage_json(text, tmp_path).files


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not valid JSON"),
        ("[]", "lacks 'files'"),
        ('{"files": {"a.py": 3}, "totals": {}}', "not an object"),
        ('{"files": {}, "totals": {"num_statements": 1}}', "lacks num_statements/covered_lines"),
        ('{"files": {}, "totals": {"num_statements": -1, "covered_lines": 0}}', "non-negative integer"),
        (
            '{"files": {"a.py": {}}, "totals": {"num_statements": 1, "covered_lines": 0}}',
            "summary is missing",
        ),
    ],
)
def test_malformed_reports_are_errors(text: str, message: str) -> None:
    with pytest.raises(ReadinessError, match=message):
        parse_coverage_json(text)


def test_load_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ReadinessError, match="cannot read coverage JSON"):
        load_coverage_json(tmp_path / "nope.json")
    path = tmp_path / "c.json"
    path.write_text(_report())
    assert load_coverage_json(path).totals.statements == 16
