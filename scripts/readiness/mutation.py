"""Mutation testing of the critical modules with mutmut 3, scored from mutmut's own result files.

mutmut 3 keeps one ``mutants/<source path>.meta`` JSON file per mutated source file; its
``exit_code_by_key`` maps each mutant to the exit code of its test run (``null`` = not checked).
The exit-code meanings below are mutmut 3.8's ``mutmut.stats.status_by_exit_code``; unknown
codes are "suspicious", as in mutmut.

Score of a module = detected / (detected + undetected), where
detected = killed, timeout, caught by type check, segfault (the tests or checks noticed the
mutant); undetected = survived, no tests, suspicious; not counted = not checked, skipped,
interrupted. A run in which nothing was checked is an error, never a pass.

Before a run, the mutated copies and ``.meta`` files of the critical modules are removed, so
every result read afterwards comes from this run (mutmut keeps other files' caches). mutmut's
copies of the tests and other ``also_copy`` paths in ``mutants/`` are removed too: mutmut copies
them over the old ones and never deletes, so a deleted test file would otherwise keep killing
mutants.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scripts.readiness.config import module_name_of
from scripts.readiness.errors import ReadinessError, not_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

STATUS_BY_EXIT_CODE: dict[int | None, str] = {
    1: "killed",
    3: "killed",
    0: "survived",
    5: "no tests",
    2: "check was interrupted by user",
    None: "not checked",
    33: "no tests",
    34: "skipped",
    35: "suspicious",
    36: "timeout",
    37: "caught by type check",
    -24: "timeout",
    24: "timeout",
    152: "timeout",
    255: "timeout",
    -11: "segfault",
    -9: "segfault",
}
DETECTED: frozenset[str] = frozenset({"killed", "timeout", "caught by type check", "segfault"})
UNDETECTED: frozenset[str] = frozenset({"survived", "no tests", "suspicious"})
NOT_COUNTED: frozenset[str] = frozenset({"not checked", "skipped", "check was interrupted by user"})
STATUSES: tuple[str, ...] = (
    "killed",
    "timeout",
    "caught by type check",
    "segfault",
    "survived",
    "no tests",
    "suspicious",
    "not checked",
    "skipped",
    "check was interrupted by user",
)
# mutmut's separator between class and method in mangled names (``xǁClassǁmethod``)
_CLASS_SEPARATOR = "\u01c1"
# SIGINT may be ignored by inheritance (e.g. a background job in a shell script); mutmut must get
# a KeyboardInterrupt from it to stop cleanly and keep its results, so the handler is set here.
_MUTMUT_MAIN = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from mutmut.__main__ import cli; sys.exit(cli())"
)
_GRACE_S = 20.0
# What mutmut 3 always copies into mutants/ besides the sources (mutmut.configuration), plus test*.py.
DEFAULT_ALSO_COPY: tuple[str, ...] = (
    "tests",
    "test",
    "setup.cfg",
    "pyproject.toml",
    "uv.lock",
    "poetry.lock",
    "Pipfile.lock",
    "pdm.lock",
)


def status_of(exit_code: int | None) -> str:
    """mutmut's status name for a mutant's exit code."""
    return STATUS_BY_EXIT_CODE.get(exit_code, "suspicious")


@dataclass
class ModuleMutation:
    """Mutation results of one critical module."""

    path: str
    found: bool
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    undetected_mutants: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """All mutants of the module."""
        return sum(self.counts.values())

    @property
    def detected(self) -> int:
        """Mutants the tests noticed."""
        return sum(self.counts[s] for s in DETECTED)

    @property
    def undetected(self) -> int:
        """Checked mutants the tests did not notice."""
        return sum(self.counts[s] for s in UNDETECTED)

    @property
    def checked(self) -> int:
        """Mutants that count in the score."""
        return self.detected + self.undetected

    @property
    def score(self) -> float | None:
        """Detected over checked, in percent; None when nothing was checked."""
        return 100.0 * self.detected / self.checked if self.checked else None

    def to_dict(self) -> dict[str, object]:
        """JSON form."""
        return {
            "path": self.path,
            "found": self.found,
            "total": self.total,
            "checked": self.checked,
            "detected": self.detected,
            "undetected": self.undetected,
            "score": self.score,
            "counts": dict(self.counts),
            "undetected_mutants": list(self.undetected_mutants),
        }


def meta_path(root: Path, source: str) -> Path:
    """Where mutmut 3 keeps the results of ``source``."""
    return root / "mutants" / (source + ".meta")


def parse_meta(text: str, source: str) -> ModuleMutation:
    """Count the mutants of one ``.meta`` file by status."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReadinessError(f"mutmut result file for {source} is not valid JSON: {exc}") from exc
    codes = data.get("exit_code_by_key") if isinstance(data, dict) else None
    if not isinstance(codes, dict):
        raise ReadinessError(f"mutmut result file for {source} has no 'exit_code_by_key' object")
    module = ModuleMutation(path=source, found=True)
    for mutant, code in codes.items():
        if code is not None and (not isinstance(code, int) or isinstance(code, bool)):
            raise ReadinessError(f"mutmut result file for {source}: exit code of {mutant} is {code!r}")
        status = status_of(code)
        module.counts[status] += 1
        if status in UNDETECTED:
            module.undetected_mutants.append(mutant)
    return module


def read_module(root: Path, source: str) -> ModuleMutation:
    """Results of one module (``found`` is False when mutmut wrote none)."""
    path = meta_path(root, source)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ModuleMutation(path=source, found=False)
    except OSError as exc:
        raise ReadinessError(f"cannot read mutmut result file {path}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ReadinessError(f"cannot read mutmut result file {path}: {not_text(exc)}") from exc
    return parse_meta(text, source)


def mutant_glob(source: str) -> str:
    """The mutmut mutant-name pattern selecting the mutants of ``source`` (e.g. ``pkg.mod.x[_ǁ]*``)."""
    return f"{module_name_of(source)}.x[_{_CLASS_SEPARATOR}]*"


def clear_results(root: Path, sources: Sequence[str]) -> None:
    """Remove mutmut's mutated copies and results of ``sources`` so the next run starts them afresh."""
    for source in sources:
        for suffix in ("", ".meta", ".spans"):
            (root / "mutants" / (source + suffix)).unlink(missing_ok=True)


def also_copy(root: Path) -> list[str]:
    """mutmut's ``also_copy`` paths for ``root``, read the way mutmut 3 reads its config.

    ``[tool.mutmut]`` in pyproject.toml wins, else ``[mutmut]`` in setup.cfg; the defaults and
    top-level ``test*.py`` files are always included. An unreadable config adds nothing.
    """
    configured: list[str] = []
    section = None
    try:
        data = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
        tool = data.get("tool")
        section = tool.get("mutmut") if isinstance(tool, dict) else None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        pass
    if isinstance(section, dict):
        value = section.get("also_copy", [])
        configured = [str(v) for v in value] if isinstance(value, list) else []
    else:
        parser = configparser.RawConfigParser()
        try:
            parser.read(root / "setup.cfg", encoding="utf-8")
            if parser.has_option("mutmut", "also_copy"):
                configured = [v for v in parser.get("mutmut", "also_copy").split("\n") if v.strip()]
        except (OSError, UnicodeDecodeError, configparser.Error):
            pass
    top_level_tests = sorted(p.name for p in root.glob("test*.py"))
    return [*configured, *DEFAULT_ALSO_COPY, *top_level_tests]


def refresh_copies(root: Path) -> list[str]:
    """Remove mutmut's copies of the ``also_copy`` paths (tests, configs) so the next run copies them afresh.

    mutmut 3 copies those paths into ``mutants/`` over what is there and never deletes, so a test
    file deleted from the project would keep running (and killing mutants) from the stale copy.
    Returns the removed paths, relative to ``mutants/``.
    """
    mutants = (root / "mutants").resolve()
    removed = []
    for entry in also_copy(root):
        target = (mutants / entry.strip()).resolve()
        if target == mutants or not target.is_relative_to(mutants):
            continue  # "." or a path leading out of mutants/: never delete outside mutmut's copy
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        else:
            continue
        removed.append(target.relative_to(mutants).as_posix())
    for stale in sorted(mutants.glob("test*.py")) if mutants.is_dir() else []:
        if not (root / stale.name).exists():
            stale.unlink()  # a top-level test file deleted from the project
            removed.append(stale.name)
    return removed


@dataclass(frozen=True)
class MutmutRun:
    """How the mutmut process ended."""

    returncode: int | None
    elapsed_s: float
    budget_exhausted: bool
    log: Path


def stop_process_group(process: subprocess.Popen[bytes], grace_s: float = _GRACE_S) -> None:
    """Interrupt a process group (mutmut saves the results it has), then kill it if it outlives ``grace_s``."""
    try:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        process.wait()


def run_mutmut(
    root: Path, python: str, sources: Sequence[str], budget_s: float, workers: int, log: Path
) -> MutmutRun:
    """Run ``mutmut run`` on the mutants of ``sources`` in ``root``, stopping it after ``budget_s``.

    mutmut reads its own configuration (``[tool.mutmut]`` in pyproject.toml or ``[mutmut]`` in
    setup.cfg); ``source_paths`` there must include the critical modules.
    """
    clear_results(root, sources)
    refresh_copies(root)
    command = [python, "-c", _MUTMUT_MAIN, "run", "--max-children", str(workers)]
    command += [mutant_glob(source) for source in sources]
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    exhausted = False
    with log.open("w", encoding="utf-8") as handle:
        try:
            process = subprocess.Popen(
                command, cwd=root, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
            )
        except OSError as exc:
            raise ReadinessError(f"cannot start mutmut ({python}): {exc.strerror or exc}") from exc
        try:
            process.wait(timeout=budget_s)
        except subprocess.TimeoutExpired:
            exhausted = True
            stop_process_group(process)
    return MutmutRun(process.returncode, time.perf_counter() - start, exhausted, log)


@dataclass
class MutationResult:
    """Mutation results of all critical modules."""

    modules: list[ModuleMutation]
    run: MutmutRun | None = None

    @property
    def checked(self) -> int:
        """Mutants that count in the score, over all modules."""
        return sum(m.checked for m in self.modules)

    @property
    def score(self) -> float | None:
        """Detected over checked over all modules, in percent (None when nothing was checked)."""
        checked = self.checked
        return 100.0 * sum(m.detected for m in self.modules) / checked if checked else None


def collect(root: Path, sources: Sequence[str], run: MutmutRun | None = None) -> MutationResult:
    """Read the results of ``sources`` after a mutmut run."""
    return MutationResult(modules=[read_module(root, source) for source in sources], run=run)
