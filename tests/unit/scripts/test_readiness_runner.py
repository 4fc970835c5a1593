"""The pytest command line and the handling of how a run ended."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from scripts.readiness.errors import ReadinessError
from scripts.readiness.project import CoverageConfig
from scripts.readiness.runner import build_command, log_tail, run_pytest


def test_command_with_coverage_toml_and_config_source(tmp_path: Path) -> None:
    config = CoverageConfig(tmp_path / "coverage.toml", pass_to_pytest=True, source=("pkg",))
    command = build_command("py", tmp_path, tmp_path / "j.xml", tmp_path / "c.json", config, (), ["-x", "-q"])
    assert command[:3] == ["py", "-m", "pytest"]
    assert f"--junitxml={tmp_path / 'j.xml'}" in command
    assert f"--cov-report=json:{tmp_path / 'c.json'}" in command
    assert "--cov-branch" in command
    assert "--cov-fail-under=0" in command
    assert f"--cov-config={tmp_path / 'coverage.toml'}" in command
    assert "--cov" in command  # bare: coverage.py's own source
    # a bare --cov takes an optional value: what follows it must be an option, never a test path
    assert command[command.index("--cov") + 1].startswith("--")
    assert command[-2:] == ["-x", "-q"]
    assert "--ignore=mutants" not in command


def test_command_with_detected_sources_and_mutants_dir(tmp_path: Path) -> None:
    (tmp_path / "mutants").mkdir()
    config = CoverageConfig(None, pass_to_pytest=False)
    command = build_command("py", tmp_path, tmp_path / "j.xml", tmp_path / "c.json", config, ("a", "src/b"))
    assert "--cov=a" in command and "--cov=src/b" in command
    assert "--cov" not in command
    assert not any(arg.startswith("--cov-config") for arg in command)
    assert "--ignore=mutants" in command


def _fake(tmp_path: Path, code: str) -> list[str]:
    """A stand-in for a pytest process that writes what ``code`` writes and exits with its code."""
    return [sys.executable, "-c", code]


def _write(path: Path, exit_code: int, *, junit: bool = True, cov: bool = True) -> str:
    lines = ["import pathlib, sys", "print('line one'); print('last line')"]
    if junit:
        lines.append(f"pathlib.Path({str(path / 'j.xml')!r}).write_text('<testsuite/>')")
    if cov:
        lines.append(f"pathlib.Path({str(path / 'c.json')!r}).write_text('{{}}')")
    lines.append(f"sys.exit({exit_code})")
    return "; ".join(lines)


def test_verdict_exit_codes_are_accepted(tmp_path: Path) -> None:
    run = run_pytest(
        _fake(tmp_path, _write(tmp_path, 1)),
        tmp_path,
        tmp_path / "j.xml",
        tmp_path / "c.json",
        tmp_path / "log" / "pytest.log",
    )
    assert run.returncode == 1 and run.meaning == "some tests failed"
    assert run.coverage_json == tmp_path / "c.json"
    assert "last line" in log_tail(run.log)
    assert run.duration_s > 0


def test_no_tests_collected_may_lack_coverage(tmp_path: Path) -> None:
    run = run_pytest(
        _fake(tmp_path, _write(tmp_path, 5, cov=False)),
        tmp_path,
        tmp_path / "j.xml",
        tmp_path / "c.json",
        tmp_path / "pytest.log",
    )
    assert run.coverage_json is None


@pytest.mark.parametrize(
    ("exit_code", "junit", "cov", "message"),
    [
        (4, True, True, "exit code 4: pytest usage error"),
        (3, True, True, "internal pytest error"),
        (0, False, True, "wrote no JUnit report"),
        (1, True, False, "wrote no coverage JSON"),
    ],
)
def test_broken_runs_are_errors_with_output_tail(
    tmp_path: Path, exit_code: int, junit: bool, cov: bool, message: str
) -> None:
    with pytest.raises(ReadinessError, match=message) as info:
        run_pytest(
            _fake(tmp_path, _write(tmp_path, exit_code, junit=junit, cov=cov)),
            tmp_path,
            tmp_path / "j.xml",
            tmp_path / "c.json",
            tmp_path / "pytest.log",
        )
    assert "last line" in str(info.value)


def test_stale_reports_are_removed_first(tmp_path: Path) -> None:
    (tmp_path / "j.xml").write_text("<testsuite/>")
    (tmp_path / "c.json").write_text("{}")
    with pytest.raises(ReadinessError, match="wrote no JUnit report"):
        run_pytest(
            _fake(tmp_path, "pass"),
            tmp_path,
            tmp_path / "j.xml",
            tmp_path / "c.json",
            tmp_path / "pytest.log",
        )


def test_missing_interpreter_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ReadinessError, match="cannot start pytest"):
        run_pytest(
            [str(tmp_path / "no-python")],
            tmp_path,
            tmp_path / "j.xml",
            tmp_path / "c.json",
            tmp_path / "pytest.log",
        )
    assert log_tail(tmp_path / "absent.log") == ""
