"""Load and validate the ``[tool.readiness]`` section of the assessed project's ``pyproject.toml``.

Example::

    [tool.readiness]
    fail_under = 40
    hard_conditions = ["critical_test_failure", "critical_blocker_todo", "no_tests"]

    [tool.readiness.thresholds]          # defaults for every critical target
    line = 80
    branch = 70
    mutation = 50

    [tool.readiness.critical_modules]    # file paths (or dotted module names)
    "pkg/core.py" = { line = 90 }
    "pkg/io.py" = {}

    [tool.readiness.entry_points]        # "module:function" (or a module)
    "pkg.cli:main" = { line = 70 }

    [tool.readiness.weights]             # relative weights, renormalized
    tests = 30
    coverage = 30
    todos = 25
    critical_paths = 15
    mutation = 0

Unknown keys are errors, so a typo cannot silently disable a check.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scripts.readiness.errors import ReadinessError, not_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

COMPONENTS: tuple[str, ...] = ("tests", "coverage", "todos", "critical_paths", "mutation")
DEFAULT_WEIGHTS: dict[str, float] = {
    "tests": 0.30,
    "coverage": 0.30,
    "todos": 0.25,
    "critical_paths": 0.15,
    "mutation": 0.0,
}
HARD_CONDITIONS: dict[str, str] = {
    "critical_test_failure": "a failing or erroring test touches a critical module",
    "critical_blocker_todo": "a blocking TODO sits in a critical module",
    "blocker_todo": "a blocking TODO exists anywhere in the scanned code",
    "any_test_failure": "any test fails or errors",
    "no_tests": "the test run executed no tests",
    "critical_coverage": "a critical target is below its coverage threshold",
    "mutation_below_threshold": "a critical module's mutation score is below its threshold",
    "missing_critical_target": "a critical module or entry point cannot be found (always on)",
}
DEFAULT_HARD_CONDITIONS: tuple[str, ...] = ("critical_test_failure", "critical_blocker_todo", "no_tests")
# Checked whatever hard_conditions says: a misspelled critical module must never pass silently.
ALWAYS_ON_CONDITIONS: tuple[str, ...] = ("missing_critical_target",)
DEFAULT_BLOCKER_TAGS: tuple[str, ...] = ("blocker", "blocking", "release-blocker")
DEFAULT_PHRASES: tuple[str, ...] = (
    "for now",
    "temporary",
    "temporarily",
    "placeholder",
    "for the time being",
)

_TOP_KEYS = frozenset(
    {
        "fail_under",
        "source",
        "todo_paths",
        "critical_dirs",
        "blocker_tags",
        "todo_phrases",
        "hard_conditions",
        "thresholds",
        "critical_modules",
        "entry_points",
        "weights",
    }
)
_THRESHOLD_KEYS = ("line", "branch", "mutation")


@dataclass(frozen=True)
class Thresholds:
    """Minimum percentages for a critical target; ``None`` disables that check."""

    line: float | None = 80.0
    branch: float | None = 70.0
    mutation: float | None = 50.0

    def to_dict(self) -> dict[str, float | None]:
        """JSON form."""
        return {"line": self.line, "branch": self.branch, "mutation": self.mutation}


@dataclass(frozen=True)
class CriticalTarget:
    """A critical module (``kind == "module"``) or entry point (``kind == "entry_point"``).

    ``path`` is the source file relative to the project root (``None`` when it cannot be found),
    ``module`` the dotted module name and ``function`` the entry point's function (qualified name).
    """

    name: str
    kind: str
    module: str
    path: str | None
    function: str | None
    thresholds: Thresholds


@dataclass(frozen=True)
class ReadinessConfig:
    """The validated ``[tool.readiness]`` settings."""

    targets: tuple[CriticalTarget, ...] = ()
    critical_dirs: tuple[str, ...] = ()
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    fail_under: float | None = None
    hard_conditions: tuple[str, ...] = DEFAULT_HARD_CONDITIONS
    blocker_tags: tuple[str, ...] = DEFAULT_BLOCKER_TAGS
    todo_phrases: tuple[str, ...] = DEFAULT_PHRASES
    source: tuple[str, ...] = ()
    todo_paths: tuple[str, ...] = ()
    path: Path | None = None

    @property
    def critical_files(self) -> dict[str, CriticalTarget]:
        """Critical module targets by file path (entry points excluded)."""
        return {t.path: t for t in self.targets if t.kind == "module" and t.path is not None}


def _fail(where: str, message: str) -> ReadinessError:
    return ReadinessError(f"invalid [tool.readiness] config ({where}): {message}")


def _number(value: Any, where: str, low: float = 0.0, high: float | None = 100.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise _fail(where, f"expected a number, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
        raise _fail(where, f"must be {bound}, got {value!r}")
    return float(value)


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise _fail(where, f"expected a list of non-empty strings, got {value!r}")
    return tuple(v.strip() for v in value)


def _thresholds(value: Any, base: Thresholds, where: str) -> Thresholds:
    if not isinstance(value, dict):
        raise _fail(where, f"expected a table of thresholds, got {value!r}")
    unknown = set(value) - set(_THRESHOLD_KEYS)
    if unknown:
        raise _fail(where, f"unknown threshold(s) {sorted(unknown)}; allowed: {list(_THRESHOLD_KEYS)}")
    merged = base.to_dict()
    for key, raw in value.items():
        # false switches a check off
        merged[key] = None if raw is False else _number(raw, f"{where}.{key}")
    return Thresholds(**merged)


def module_name_of(path: str) -> str:
    """Dotted module name of a source path (``src/`` prefix and ``__init__`` dropped)."""
    stem = path[:-3] if path.endswith(".py") else path
    parts = [p for p in stem.split("/") if p]
    if parts and parts[0] == "src":
        parts = parts[1:]
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def resolve_module(root: Path, module: str) -> str | None:
    """Find the file of a dotted module name under ``root`` (plain or ``src/`` layout)."""
    base = module.replace(".", "/")
    for candidate in (f"{base}.py", f"{base}/__init__.py", f"src/{base}.py", f"src/{base}/__init__.py"):
        if (root / candidate).is_file():
            return candidate
    return None


def _target(root: Path, name: str, kind: str, thresholds: Thresholds) -> CriticalTarget:
    function = None
    spec = name
    if kind == "entry_point" and ":" in name:
        spec, function = name.split(":", 1)
        if not spec or not function:
            raise _fail(f"entry_points.{name}", "expected 'module:function'")
    if spec.endswith(".py") or "/" in spec:
        path = spec.replace("\\", "/")
        path = path[2:] if path.startswith("./") else path
        resolved = path if (root / path).is_file() else None
        return CriticalTarget(name, kind, module_name_of(path), resolved, function, thresholds)
    return CriticalTarget(name, kind, spec, resolve_module(root, spec), function, thresholds)


def _targets(root: Path, value: Any, kind: str, base: Thresholds, where: str) -> list[CriticalTarget]:
    if isinstance(value, list):
        return [_target(root, name, kind, base) for name in _strings(value, where)]
    if not isinstance(value, dict):
        raise _fail(where, f"expected a table (name = {{ line = 80 }}) or a list of names, got {value!r}")
    return [
        _target(root, name, kind, _thresholds(spec, base, f"{where}.{name}")) for name, spec in value.items()
    ]


def _weights(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        raise _fail("weights", f"expected a table, got {value!r}")
    unknown = set(value) - set(COMPONENTS)
    if unknown:
        raise _fail("weights", f"unknown component(s) {sorted(unknown)}; allowed: {list(COMPONENTS)}")
    weights = dict(DEFAULT_WEIGHTS)
    for key, raw in value.items():
        weights[key] = _number(raw, f"weights.{key}", high=None)
    if not any(weights.values()):
        raise _fail("weights", "all weights are zero")
    return weights


def parse_config(section: dict[str, Any], root: Path, path: Path | None = None) -> ReadinessConfig:
    """Validate a ``[tool.readiness]`` table (already parsed from TOML) into a :class:`ReadinessConfig`."""
    unknown = set(section) - _TOP_KEYS
    if unknown:
        raise _fail("tool.readiness", f"unknown key(s) {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}")
    base = _thresholds(section.get("thresholds", {}), Thresholds(), "thresholds")
    targets = _targets(root, section.get("critical_modules", {}), "module", base, "critical_modules")
    targets += _targets(root, section.get("entry_points", {}), "entry_point", base, "entry_points")
    hard = _strings(section["hard_conditions"], "hard_conditions") if "hard_conditions" in section else None
    if hard is not None:
        bad = [h for h in hard if h not in HARD_CONDITIONS]
        if bad:
            raise _fail("hard_conditions", f"unknown condition(s) {bad}; allowed: {sorted(HARD_CONDITIONS)}")
    if "critical_dirs" in section:
        critical_dirs = tuple(d.rstrip("/") for d in _strings(section["critical_dirs"], "critical_dirs"))
    else:
        parents = {t.path.rsplit("/", 1)[0] for t in targets if t.path and "/" in t.path}
        critical_dirs = tuple(sorted(parents))
    fail_under = section.get("fail_under")
    return ReadinessConfig(
        targets=tuple(targets),
        critical_dirs=critical_dirs,
        weights=_weights(section["weights"]) if "weights" in section else dict(DEFAULT_WEIGHTS),
        fail_under=None if fail_under is None else _number(fail_under, "fail_under"),
        hard_conditions=DEFAULT_HARD_CONDITIONS if hard is None else hard,
        blocker_tags=tuple(
            t.lower()
            for t in _strings(section.get("blocker_tags", list(DEFAULT_BLOCKER_TAGS)), "blocker_tags")
        ),
        todo_phrases=tuple(
            p.lower() for p in _strings(section.get("todo_phrases", list(DEFAULT_PHRASES)), "todo_phrases")
        ),
        source=_strings(section["source"], "source") if "source" in section else (),
        todo_paths=_strings(section["todo_paths"], "todo_paths") if "todo_paths" in section else (),
        path=path,
    )


def load_config(root: Path, path: Path | None = None) -> ReadinessConfig:
    """Read ``[tool.readiness]`` from ``path`` (default: ``root/pyproject.toml``).

    A missing default file or section gives the defaults; an explicit file that is missing,
    invalid TOML or invalid settings raise :class:`ReadinessError`.
    """
    explicit = path is not None
    file = path if path is not None else root / "pyproject.toml"
    if not file.is_file():
        if explicit:
            raise ReadinessError(f"config file {file} does not exist")
        return ReadinessConfig()
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ReadinessError(f"cannot read config {file}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ReadinessError(f"cannot read config {file}: {not_text(exc)}") from exc
    tool = data.get("tool")
    section = tool.get("readiness") if isinstance(tool, dict) else None
    if section is None:
        return ReadinessConfig(path=file)
    if not isinstance(section, dict):
        raise _fail("tool.readiness", "expected a table")
    return parse_config(section, root, file)
