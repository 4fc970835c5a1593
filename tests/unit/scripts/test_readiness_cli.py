"""The command line of scripts/assess_readiness.py (in-process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.assess_readiness import build_parser, main, options_from_args
from scripts.readiness.errors import ReadinessError


def _project(tmp_path: Path, failing: bool) -> Path:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    outcome = '<failure message="assert 0">t.py:1: AssertionError</failure>' if failing else ""
    (tmp_path / "junit.xml").write_text(
        f'<testsuite><testcase classname="t" name="a">{outcome}</testcase></testsuite>'
    )
    summary = {"num_statements": 4, "covered_lines": 4, "num_branches": 2, "covered_branches": 2}
    (tmp_path / "cov.json").write_text(
        json.dumps(
            {
                "meta": {"branch_coverage": True},
                "files": {"pkg/__init__.py": {"summary": summary}},
                "totals": summary,
            }
        )
    )
    return tmp_path


def _argv(root: Path, *extra: str) -> list[str]:
    return [
        "--project",
        str(root),
        "--junit",
        str(root / "junit.xml"),
        "--coverage-json",
        str(root / "cov.json"),
        *extra,
    ]


def test_help_documents_scoring_exit_codes_and_config(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for needle in (
        "--fail-under",
        "--pytest-args",
        "--mutation-budget",
        "--compare",
        "exit codes:",
        "0-40 not ready",
        "[tool.readiness.critical_modules]",
        "critical_test_failure",
    ):
        assert needle in text


def test_options_from_args() -> None:
    args = build_parser().parse_args(
        [
            "--pytest-args=-m 'not slow'",
            "--pytest-args=-x",
            "--weight",
            "tests=0.5",
            "--source",
            "a",
            "--fail-under",
            "55",
            "--mutation",
            "--mutation-budget",
            "30",
        ]
    )
    options = options_from_args(args)
    assert options.pytest_args == ("-m", "not slow", "-x")
    assert options.weights == {"tests": 0.5}
    assert options.source == ("a",)
    assert options.fail_under == 55.0
    assert options.mutation and options.mutation_budget == 30.0


@pytest.mark.parametrize(
    "argv",
    [
        ["--fail-under", "120"],
        ["--fail-under", "x"],
        ["--weight", "tests"],
        ["--weight", "tests=x"],
        ["--mutation-budget", "0"],
        ["--mutation-budget", "soon"],
        ["--no-such-option"],
    ],
)
def test_bad_options_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(argv)
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_bad_values_after_parsing_are_readiness_errors() -> None:
    with pytest.raises(ReadinessError, match="--pytest-args"):
        options_from_args(build_parser().parse_args(["--pytest-args", "'unterminated"]))
    with pytest.raises(ReadinessError, match="--mutation-workers"):
        options_from_args(build_parser().parse_args(["--mutation-workers", "0"]))


def test_main_passes_and_fails_the_gate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _project(tmp_path, failing=False)
    assert main(_argv(root)) == 0
    out = capsys.readouterr().out
    assert "gate PASSED" in out and "readiness.md" in out
    assert main(_argv(root, "--fail-under", "100", "--weight", "todos=0")) == 0  # everything measured is 100
    _project_fail = tmp_path / "failing"
    _project_fail.mkdir()
    root = _project(_project_fail, failing=True)
    assert main(_argv(root, "--fail-under", "90")) == 1
    assert "gate FAILED" in capsys.readouterr().out


def test_main_reports_tool_errors_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--project", str(tmp_path), "--skip-tests"]) == 2
    assert "assess_readiness: error: could not detect source packages" in capsys.readouterr().err
    root = _project(tmp_path, failing=False)
    assert main(["--project", str(root), "--junit", str(root / "missing.xml")]) == 2
    assert "assess_readiness: error: cannot read JUnit report" in capsys.readouterr().err


SQLITE_BYTES = b"SQLite format 3\x00\xff\xfe\x10\x00\x01\x01\x00\x40\x20\x20"


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("assess_readiness: error: ")
    return err[0]


def test_binary_coverage_file_is_a_tool_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _project(tmp_path, failing=False)
    data_file = root / ".coverage"  # coverage.py's SQLite data file, not its JSON report
    data_file.write_bytes(SQLITE_BYTES)
    argv = ["--project", str(root), "--junit", str(root / "junit.xml"), "--coverage-json", str(data_file)]
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert str(data_file) in line and "not UTF-8 text" in line and "coverage json" in line


def test_latin1_setup_cfg_is_a_tool_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _project(tmp_path, failing=False)
    (root / "setup.cfg").write_bytes("[coverage:run]\nsource = pkg\n# auteur: Jos\xe9\n".encode("latin-1"))
    assert main(["--project", str(root), "--skip-tests"]) == 2
    line = _one_error_line(capsys)
    assert str(root / "setup.cfg") in line and "byte 0xe9" in line


def test_binary_compare_file_is_a_tool_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _project(tmp_path, failing=False)
    previous = root / "previous.bin"
    previous.write_bytes(SQLITE_BYTES)
    assert main([*_argv(root), "--compare", str(previous)]) == 2
    line = _one_error_line(capsys)
    assert str(previous) in line and "not UTF-8 text" in line


def test_invalid_junit_error_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _project(tmp_path, failing=False)
    bad = root / "bad.xml"
    bad.write_bytes(SQLITE_BYTES)
    assert main(["--project", str(root), "--junit", str(bad)]) == 2
    line = _one_error_line(capsys)
    assert f"JUnit report {bad} is not valid XML" in line


def test_project_that_is_a_file_is_not_a_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "pyproject.toml"
    file.write_text("")
    assert main(["--project", str(file), "--skip-tests"]) == 2
    line = _one_error_line(capsys)
    assert "is not a directory" in line and "does not exist" not in line


def test_unexpected_crash_is_a_tool_error_not_a_failed_gate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import scripts.assess_readiness as cli

    def crash(options: object) -> None:
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

    monkeypatch.setattr(cli, "assess", crash)
    assert main(["--project", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "assess_readiness: internal error: UnicodeDecodeError" in err
    assert "Traceback" in err  # the details a bug report needs
