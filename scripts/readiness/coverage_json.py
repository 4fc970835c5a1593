"""Read coverage.py's JSON report and compute line and branch coverage from the raw counts.

coverage.py's ``percent_covered`` mixes statements and branches into one number; here the two
are kept apart (``line_percent``, ``branch_percent``) and the mixed figure is only reported as
``combined_percent``. Percentages follow coverage.py's convention: nothing to cover is 100%.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from scripts.readiness.errors import ReadinessError, not_text


def percent(covered: int, total: int) -> float:
    """``100 * covered / total`` as coverage.py computes it (100.0 when ``total`` is 0)."""
    if total > 0:
        return (100.0 * covered) / total
    return 100.0


@dataclass(frozen=True)
class Counts:
    """Statement and branch counts of a file, a function or the whole report."""

    statements: int
    covered_lines: int
    branches: int
    covered_branches: int

    @property
    def line_percent(self) -> float:
        """Covered statements over statements."""
        return percent(self.covered_lines, self.statements)

    @property
    def branch_percent(self) -> float:
        """Covered branches over branches."""
        return percent(self.covered_branches, self.branches)

    @property
    def combined_percent(self) -> float:
        """coverage.py's ``percent_covered``: statements and branches pooled."""
        return percent(self.covered_lines + self.covered_branches, self.statements + self.branches)

    def to_dict(self, branch_measured: bool) -> dict[str, Any]:
        """JSON form; branch figures are ``None`` when branch coverage was not measured."""
        return {
            "line": {"covered": self.covered_lines, "total": self.statements, "percent": self.line_percent},
            "branch": {
                "covered": self.covered_branches if branch_measured else None,
                "total": self.branches if branch_measured else None,
                "percent": self.branch_percent if branch_measured else None,
            },
            "combined_percent": self.combined_percent,
        }


@dataclass(frozen=True)
class FileCoverage:
    """Coverage of one source file."""

    path: str
    counts: Counts
    missing_lines: tuple[int, ...] = ()
    functions: dict[str, Counts] = field(default_factory=dict)


@dataclass(frozen=True)
class CoverageReport:
    """A parsed coverage JSON report."""

    totals: Counts
    files: dict[str, FileCoverage]
    branch_measured: bool
    coverage_version: str = ""

    def file(self, path: str) -> FileCoverage | None:
        """The coverage of ``path`` (relative to the project, POSIX separators), if measured."""
        return self.files.get(path)


def _int(summary: dict[str, Any], key: str, where: str) -> int:
    value = summary.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ReadinessError(f"coverage JSON: {where}: {key!r} is not a non-negative integer: {value!r}")
    return value


def _counts(summary: Any, where: str) -> Counts:
    if not isinstance(summary, dict):
        raise ReadinessError(f"coverage JSON: {where}: summary is missing")
    if "num_statements" not in summary or "covered_lines" not in summary:
        raise ReadinessError(f"coverage JSON: {where}: summary lacks num_statements/covered_lines")
    return Counts(
        statements=_int(summary, "num_statements", where),
        covered_lines=_int(summary, "covered_lines", where),
        branches=_int(summary, "num_branches", where),
        covered_branches=_int(summary, "covered_branches", where),
    )


def relative_path(path: str, root: Path | None) -> str:
    """``path`` relative to ``root`` with POSIX separators (unchanged when outside ``root``)."""
    posix = path.replace("\\", "/")
    if root is not None and PurePosixPath(posix).is_absolute():
        try:
            return Path(posix).resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            return posix
    return posix


def parse_coverage_json(text: str, root: Path | None = None, label: str = "coverage JSON") -> CoverageReport:
    """Parse coverage.py JSON report text; file keys are made relative to ``root`` when absolute.

    ``label`` names the report in error messages (``coverage JSON <file>`` when read from a file).
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReadinessError(f"{label} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict) or "totals" not in data:
        raise ReadinessError(f"{label} lacks 'files' and 'totals' (is it a coverage.py JSON report?)")
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    files: dict[str, FileCoverage] = {}
    for raw_path, entry in data["files"].items():
        if not isinstance(entry, dict):
            raise ReadinessError(f"coverage JSON: entry for {raw_path!r} is not an object")
        path = relative_path(str(raw_path), root)
        functions_raw = entry.get("functions")
        functions = {}
        if isinstance(functions_raw, dict):
            functions = {
                name: _counts(info.get("summary"), f"{path}:{name}")
                for name, info in functions_raw.items()
                if isinstance(info, dict)
            }
        missing = entry.get("missing_lines", [])
        files[path] = FileCoverage(
            path=path,
            counts=_counts(entry.get("summary"), path),
            missing_lines=tuple(int(line) for line in missing if isinstance(line, int)),
            functions=functions,
        )
    return CoverageReport(
        totals=_counts(data["totals"], "totals"),
        files=files,
        branch_measured=bool(meta.get("branch_coverage", False)),
        coverage_version=str(meta.get("version", "")),
    )


def load_coverage_json(path: Path, root: Path | None = None) -> CoverageReport:
    """Read and parse a coverage JSON file; a missing or unreadable file is a :class:`ReadinessError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ReadinessError(f"cannot read coverage JSON {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ReadinessError(
            f"cannot read coverage JSON {path}: {not_text(exc)}; pass the report of `coverage json` "
            "(or pytest --cov-report=json), not coverage.py's .coverage data file"
        ) from exc
    return parse_coverage_json(text, root, f"coverage JSON {path}")
