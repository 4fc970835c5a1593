"""Run the assessed project's test suite once, writing JUnit XML and coverage JSON.

Branch coverage is always switched on and pytest-cov's fail-under is forced to 0, so pytest's
exit code only speaks about tests; thresholds are applied by the readiness gate. Collection
errors do not stop the run (``--continue-on-collection-errors``): they are reported as errored
tests and the rest of the suite still runs and is measured.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from scripts.readiness.errors import ReadinessError
from scripts.readiness.project import CoverageConfig

EXIT_MEANINGS: dict[int, str] = {
    0: "all tests passed",
    1: "some tests failed",
    2: "test run interrupted",
    3: "internal pytest error",
    4: "pytest usage error",
    5: "no tests collected",
}
_TAIL_LINES = 25


@dataclass(frozen=True)
class PytestRun:
    """Outcome of the one pytest run."""

    command: tuple[str, ...]
    returncode: int
    duration_s: float
    junit: Path
    coverage_json: Path | None
    log: Path

    @property
    def meaning(self) -> str:
        """Human meaning of pytest's exit code."""
        return EXIT_MEANINGS.get(self.returncode, "unexpected exit code")


def build_command(
    python: str,
    root: Path,
    junit: Path,
    coverage_json: Path,
    coverage_config: CoverageConfig,
    cov_sources: Sequence[str],
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The pytest command line: JUnit XML, branch coverage as JSON, no coverage fail-under.

    ``cov_sources`` empty means "use the ``source`` of the coverage config" (a bare ``--cov``).
    """
    # A bare --cov takes an optional value, so it must be followed by another option: put it first.
    cov = [f"--cov={source}" for source in cov_sources] if cov_sources else ["--cov"]
    command = [
        python,
        "-m",
        "pytest",
        *cov,
        f"--junitxml={junit}",
        "--cov-branch",
        f"--cov-report=json:{coverage_json}",
        "--cov-fail-under=0",
        "--continue-on-collection-errors",
    ]
    if coverage_config.pass_to_pytest and coverage_config.path is not None:
        command.append(f"--cov-config={coverage_config.path}")
    if (root / "mutants").is_dir():
        # mutmut's working copy holds a second copy of the tests
        command.append("--ignore=mutants")
    command += list(extra_args)
    return command


def log_tail(log: Path, lines: int = _TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file ('' when it cannot be read)."""
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run_pytest(command: Sequence[str], root: Path, junit: Path, coverage_json: Path, log: Path) -> PytestRun:
    """Run ``command`` in ``root`` with output to ``log`` and check that both reports were written.

    Exit codes 0, 1 and 5 are test verdicts; anything else, or a missing JUnit report, raises
    :class:`ReadinessError` with the end of pytest's output. A missing coverage report after
    "no tests collected" is allowed (``coverage_json`` is then None).
    """
    for stale in (junit, coverage_json):
        stale.unlink(missing_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    junit.parent.mkdir(parents=True, exist_ok=True)
    coverage_json.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        with log.open("w", encoding="utf-8") as handle:
            completed = subprocess.run(
                list(command), cwd=root, stdout=handle, stderr=subprocess.STDOUT, check=False
            )
    except OSError as exc:
        raise ReadinessError(f"cannot start pytest ({command[0]}): {exc.strerror or exc}") from exc
    duration = time.perf_counter() - start
    result = PytestRun(tuple(command), completed.returncode, duration, junit, coverage_json, log)
    if completed.returncode not in (0, 1, 5):
        raise ReadinessError(
            f"pytest did not complete (exit code {completed.returncode}: {result.meaning}).\n"
            f"Last lines of its output ({log}):\n{log_tail(log)}"
        )
    if not junit.is_file():
        raise ReadinessError(
            f"pytest wrote no JUnit report at {junit}.\nLast lines of its output ({log}):\n{log_tail(log)}"
        )
    if not coverage_json.is_file():
        if completed.returncode == 5:
            return PytestRun(tuple(command), completed.returncode, duration, junit, None, log)
        raise ReadinessError(
            f"pytest wrote no coverage JSON at {coverage_json} (is pytest-cov installed, and no "
            f"--no-cov-on-fail/-p no:cov in the pytest config?).\nLast lines of its output ({log}):\n"
            f"{log_tail(log)}"
        )
    return result
