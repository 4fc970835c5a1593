"""Find the assessed project's coverage.py configuration and its source packages.

coverage.py looks for its settings in ``.coveragerc``, ``.coveragerc.toml``, ``setup.cfg``,
``tox.ini`` and ``pyproject.toml`` (first one with coverage settings wins). A ``coverage.toml``
file is not found by coverage.py itself, so it is passed to pytest with ``--cov-config``.
Without a configured ``source``, the source packages are detected: the packages (and modules)
under ``src/`` if it exists, else the top-level packages and modules.
"""

from __future__ import annotations

import configparser
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.readiness.errors import ReadinessError, not_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

# Directories that never hold the project's own source code.
IGNORED_DIRS: frozenset[str] = frozenset(
    {
        "tests",
        "test",
        "docs",
        "doc",
        "examples",
        "build",
        "dist",
        "mutants",
        "node_modules",
        "site-packages",
        "__pycache__",
        "venv",
    }
)
_SECTIONS = ("run", "report", "paths", "json", "html", "xml", "lcov")
_IGNORED_MODULES: frozenset[str] = frozenset({"setup.py", "conftest.py", "noxfile.py", "fabfile.py"})


@dataclass(frozen=True)
class CoverageConfig:
    """Where coverage.py's settings come from and what they say about sources and branches.

    ``pass_to_pytest`` is True when pytest must be told the file (``--cov-config``) because
    coverage.py would not find it on its own.
    """

    path: Path | None
    pass_to_pytest: bool
    source: tuple[str, ...] = ()
    branch: bool | None = None


def _toml_section(data: dict[str, Any], dotted: str) -> dict[str, Any] | None:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node if isinstance(node, dict) else None


def _as_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(v.strip() for line in value.splitlines() for v in line.split(",") if v.strip())
    if isinstance(value, list):
        return tuple(str(v).strip() for v in value if str(v).strip())
    return ()


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return None


def _read_toml(path: Path, ours: bool) -> CoverageConfig | None:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ReadinessError(f"cannot read coverage config {path}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ReadinessError(f"cannot read coverage config {path}: {not_text(exc)}") from exc
    prefixes = ("tool.coverage.", "") if ours else ("tool.coverage.",)
    for prefix in prefixes:
        sections = {name: _toml_section(data, prefix + name) for name in _SECTIONS}
        if any(section is not None for section in sections.values()):
            run = sections["run"] or {}
            source = _as_list(run.get("source")) + _as_list(run.get("source_pkgs"))
            return CoverageConfig(
                path, pass_to_pytest=False, source=source, branch=_as_bool(run.get("branch"))
            )
    return CoverageConfig(path, pass_to_pytest=False) if ours else None


def _read_ini(path: Path, ours: bool) -> CoverageConfig | None:
    parser = configparser.RawConfigParser()
    try:
        parser.read(path, encoding="utf-8")
    except (OSError, configparser.Error) as exc:
        raise ReadinessError(f"cannot read coverage config {path}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ReadinessError(f"cannot read coverage config {path}: {not_text(exc)}") from exc
    prefix = "" if ours else "coverage:"
    sections = [s for s in parser.sections() if s.startswith(prefix)] if prefix else parser.sections()
    if not sections and not ours:
        return None
    run = f"{prefix}run"
    source: tuple[str, ...] = ()
    branch = None
    if parser.has_section(run):
        for option in ("source", "source_pkgs"):
            if parser.has_option(run, option):
                source += _as_list(parser.get(run, option))
        if parser.has_option(run, "branch"):
            branch = _as_bool(parser.get(run, "branch"))
    return CoverageConfig(path, pass_to_pytest=False, source=source, branch=branch)


def read_coverage_config_file(path: Path, ours: bool = True) -> CoverageConfig | None:
    """Read coverage settings from one file (TOML by extension, else INI); None if it has none."""
    if path.suffix == ".toml":
        return _read_toml(path, ours)
    return _read_ini(path, ours)


def find_coverage_config(root: Path, explicit: Path | None = None) -> CoverageConfig:
    """Locate the coverage.py config the way coverage.py does, plus ``coverage.toml`` and ``explicit``.

    An explicit file (or ``$COVERAGE_RCFILE``) and ``coverage.toml`` are passed to pytest with
    ``--cov-config``; the standard files are left for coverage.py to find.
    """
    rcfile = os.environ.get("COVERAGE_RCFILE")
    specified = explicit if explicit is not None else (Path(rcfile) if rcfile else None)
    if specified is not None:
        path = specified if specified.is_absolute() else root / specified
        if not path.is_file():
            raise ReadinessError(f"coverage config {path} does not exist")
        found = read_coverage_config_file(path, ours=True)
        assert found is not None  # an own file always yields a config
        return CoverageConfig(path, pass_to_pytest=True, source=found.source, branch=found.branch)
    custom = root / "coverage.toml"
    if custom.is_file():
        found = read_coverage_config_file(custom, ours=True)
        assert found is not None
        return CoverageConfig(custom, pass_to_pytest=True, source=found.source, branch=found.branch)
    for name, ours in (
        (".coveragerc", True),
        (".coveragerc.toml", True),
        ("setup.cfg", False),
        ("tox.ini", False),
        ("pyproject.toml", False),
    ):
        path = root / name
        if path.is_file():
            found = read_coverage_config_file(path, ours=ours)
            if found is not None:
                return found
    return CoverageConfig(None, pass_to_pytest=False)


def _is_candidate_dir(path: Path) -> bool:
    name = path.name
    return (
        path.is_dir()
        and not name.startswith((".", "_"))
        and name not in IGNORED_DIRS
        and not name.startswith("venv")
        and (path / "__init__.py").is_file()
    )


def _is_candidate_module(path: Path) -> bool:
    name = path.name
    return (
        path.is_file()
        and name.endswith(".py")
        and name not in _IGNORED_MODULES
        and not name.startswith(("test_", "_", "."))
        and not name.endswith("_test.py")
    )


def detect_source_paths(root: Path) -> tuple[str, ...]:
    """Detect source packages and modules: under ``src/`` when it exists, else at the top level.

    Returns paths relative to ``root`` (e.g. ``("src/pkg",)`` or ``("pkg", "tool.py")``).
    Raises :class:`ReadinessError` when nothing is found.
    """
    base = root / "src" if (root / "src").is_dir() else root
    found = sorted(
        path.relative_to(root).as_posix()
        for path in base.iterdir()
        if _is_candidate_dir(path) or _is_candidate_module(path)
    )
    if not found:
        raise ReadinessError(
            f"could not detect source packages in {root} (no top-level package or src/ layout); "
            "name them with --source or [tool.readiness] source"
        )
    return tuple(found)


def resolve_source(root: Path, entry: str) -> Path | None:
    """Map a coverage ``source`` entry (directory, file or dotted package name) to a path under ``root``."""
    candidates = [entry, f"src/{entry}"]
    if "/" not in entry and not entry.endswith(".py"):
        dotted = entry.replace(".", "/")
        candidates += [dotted, f"src/{dotted}", f"{dotted}.py", f"src/{dotted}.py"]
    for candidate in candidates:
        path = root / candidate
        if path.exists():
            return path
    return None


def project_name(root: Path) -> str:
    """``[project] name`` from pyproject.toml, else the directory name."""
    try:
        data = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return root.name
    project = data.get("project")
    name = project.get("name") if isinstance(project, dict) else None
    return name if isinstance(name, str) and name else root.name
