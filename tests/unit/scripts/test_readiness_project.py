"""Project layout: coverage config discovery and source package detection."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.readiness.errors import ReadinessError
from scripts.readiness.project import (
    detect_source_paths,
    find_coverage_config,
    project_name,
    read_coverage_config_file,
    resolve_source,
)


def _package(root: Path, name: str) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "__init__.py").write_text("")


@pytest.fixture(autouse=True)
def _no_rcfile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COVERAGE_RCFILE", raising=False)


def test_coverage_toml_is_passed_to_pytest(tmp_path: Path) -> None:
    (tmp_path / "coverage.toml").write_text('[run]\nbranch = true\nsource = ["a", "b"]\n')
    found = find_coverage_config(tmp_path)
    assert found.path == tmp_path / "coverage.toml"
    assert found.pass_to_pytest
    assert found.source == ("a", "b")
    assert found.branch is True


def test_standard_files_are_left_to_coverage_py(tmp_path: Path) -> None:
    (tmp_path / "setup.cfg").write_text("[metadata]\nname = x\n")
    (tmp_path / "tox.ini").write_text("[coverage:run]\nsource =\n    pkg\n    other, third\nbranch = yes\n")
    found = find_coverage_config(tmp_path)
    assert found.path == tmp_path / "tox.ini"  # setup.cfg has no coverage sections
    assert not found.pass_to_pytest
    assert found.source == ("pkg", "other", "third")
    assert found.branch is True


def test_pyproject_tool_coverage_and_rcfile(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.coverage.run]\nsource_pkgs = ["pkg"]\n')
    assert find_coverage_config(tmp_path).source == ("pkg",)
    (tmp_path / ".coveragerc").write_text("[run]\nsource = rc\n")
    assert find_coverage_config(tmp_path).source == ("rc",)


def test_explicit_and_missing_configs(tmp_path: Path) -> None:
    (tmp_path / "cov.ini").write_text("[run]\nbranch = false\n")
    found = find_coverage_config(tmp_path, Path("cov.ini"))
    assert found.pass_to_pytest and found.branch is False and found.source == ()
    with pytest.raises(ReadinessError, match="does not exist"):
        find_coverage_config(tmp_path, Path("missing.toml"))
    assert find_coverage_config(tmp_path).path is None  # cov.ini is not a standard name


def test_rcfile_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ci.toml").write_text('[tool.coverage.run]\nsource = ["x"]\n')
    monkeypatch.setenv("COVERAGE_RCFILE", str(tmp_path / "ci.toml"))
    found = find_coverage_config(tmp_path)
    assert found.pass_to_pytest and found.source == ("x",)


def test_pyproject_without_coverage_sections_is_not_a_config(tmp_path: Path) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text('[project]\nname = "x"\n')
    assert read_coverage_config_file(path, ours=False) is None
    assert read_coverage_config_file(path, ours=True) is not None


def test_broken_coverage_config_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "coverage.toml").write_text("[run\n")
    with pytest.raises(ReadinessError, match="cannot read coverage config"):
        find_coverage_config(tmp_path)


def test_detects_top_level_packages_and_modules(tmp_path: Path) -> None:
    for name in ("pkg", "tests", ".hidden", "docs"):
        _package(tmp_path, name)
    (tmp_path / "plain_dir").mkdir()
    for name in ("tool.py", "setup.py", "conftest.py", "test_x.py", "_private.py"):
        (tmp_path / name).write_text("")
    assert detect_source_paths(tmp_path) == ("pkg", "tool.py")


def test_detects_src_layout(tmp_path: Path) -> None:
    _package(tmp_path / "src", "pkg")
    _package(tmp_path, "other")
    assert detect_source_paths(tmp_path) == ("src/pkg",)


def test_detection_failure_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ReadinessError, match="could not detect source packages"):
        detect_source_paths(tmp_path)


def test_resolve_source_entries(tmp_path: Path) -> None:
    _package(tmp_path / "src", "pkg")
    (tmp_path / "src" / "pkg" / "sub").mkdir()
    assert resolve_source(tmp_path, "pkg") == tmp_path / "src" / "pkg"
    assert resolve_source(tmp_path, "pkg.sub") == tmp_path / "src" / "pkg" / "sub"
    assert resolve_source(tmp_path, "missing") is None


def test_project_name(tmp_path: Path) -> None:
    assert project_name(tmp_path) == tmp_path.name
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "tiny"\n')
    assert project_name(tmp_path) == "tiny"
