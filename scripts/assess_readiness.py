"""Readiness gate: is this project ready for a training or conversion run?

Run as ``python scripts/assess_readiness.py`` or ``python -m scripts.assess_readiness``.
See ``--help`` for the options, the scoring and the exit codes.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import traceback
from pathlib import Path

if __package__ in (None, ""):
    # Run as a file: make the repository root importable so ``scripts.readiness`` resolves.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.readiness.assess import DEFAULT_OUT_DIR, Options, assess  # noqa: E402
from scripts.readiness.config import (  # noqa: E402
    COMPONENTS,
    DEFAULT_HARD_CONDITIONS,
    DEFAULT_WEIGHTS,
    HARD_CONDITIONS,
)
from scripts.readiness.errors import ReadinessError  # noqa: E402

_EPILOG = f"""\
what it measures (one pytest run, or the reports you pass):
  tests           pass rate over tests that ran (passed+xpassed / passed+xpassed+failed+errored),
                  counted per <testcase> (deduplicated by classname+name; a test failing in its
                  call and erroring in teardown counts once, as failed; JUnit XML records a
                  non-strict XPASS as a pass); failures grouped by file and by exception type /
                  message pattern
  coverage        mean of line % and branch %, each from coverage.py's counts (its percent_covered
                  mixes both and is shown as "combined"); branch % counts as 0 in a report without
                  branch data; per module, critical modules first
  todos           TODO/FIXME/XXX/HACK comments (found with tokenize) and "for now"/"temporary"/
                  "placeholder" phrasing in comments; score = 100 / (1 + blockers/2 + other counted
                  findings/50), a blocker being a blocking tag such as "# TODO(blocker): ...";
                  every finding lowers it
  critical_paths  share of passing checks of the critical modules and entry points: the source (and
                  entry-point function) exists, no failing test touches them, coverage at/above
                  threshold, no blocking TODO, mutation score (if run)
  mutation        (--mutation) mutmut 3 on the critical modules: detected / checked mutants

the pytest run (one, in the project directory, with --python):
  python -m pytest --cov[=SOURCE ...] --junitxml=OUT/junit.xml --cov-branch
      --cov-report=json:OUT/coverage.json --cov-fail-under=0 --continue-on-collection-errors
      [--cov-config=FILE] [--ignore=mutants] [--pytest-args ...]
  Coverage thresholds are applied here, never inside pytest, so pytest's exit code only speaks
  about tests. Option paths are relative to the current directory.

mutation (--mutation):
  runs "mutmut run" (mutmut 3, configured by the project's [tool.mutmut]) on the mutants of the
  critical modules, after removing mutmut's cached results for those modules and its copies of
  the tests and other also_copy paths (so deleted tests stop counting); stops after
  --mutation-budget seconds and scores what was checked, from mutants/<module>.meta.

score and bands:
  default weights {", ".join(f"{k} {v:g}" for k, v in DEFAULT_WEIGHTS.items())};
  components that were not measured are marked skipped and the other weights renormalized.
  0-40 not ready, 40-60 partial, 60-80 mostly ready, 80-100 production ready.

gate:
  fails when the score is below --fail-under (else [tool.readiness] fail_under, else 40) or a hard
  condition holds. Hard conditions (default: {", ".join(DEFAULT_HARD_CONDITIONS)}):
{chr(10).join(f"    {name:26} {text}" for name, text in HARD_CONDITIONS.items())}

exit codes:
  0  gate passed
  1  gate failed (score below --fail-under, or a hard condition)
  2  usage or tool error: bad option, missing/unreadable report or config, pytest did not complete,
     mutation testing checked nothing, or an internal error of this script

configuration ([tool.readiness] in the project's pyproject.toml):
  fail_under = 40
  hard_conditions = ["critical_test_failure", "critical_blocker_todo", "no_tests"]
  source = ["pkg"]                       # when coverage.py has no source and detection is wrong
  todo_paths = ["pkg", "tools"]          # where to look for TODOs (default: the sources)
  critical_dirs = ["pkg/core"]           # TODOs here are in a critical path (default: parents of
                                         # the critical modules)
  blocker_tags = ["blocker"]             # "# TODO(blocker): ..." blocks (default: blocker,
                                         # blocking, release-blocker)
  todo_phrases = ["for now", "temporary"]  # interim phrasing to report (default: for now, temporary,
                                         # temporarily, placeholder, for the time being)
  [tool.readiness.thresholds]            # defaults for all critical targets (false = no check)
  line = 80
  branch = 70
  mutation = 50
  [tool.readiness.critical_modules]
  "pkg/core.py" = {{ line = 90 }}
  [tool.readiness.entry_points]
  "pkg.cli:main" = {{ line = 70 }}
  [tool.readiness.weights]
  tests = 30

outputs (in --out-dir, default <project>/{DEFAULT_OUT_DIR.as_posix()}/):
  readiness.json, readiness.md, plus junit.xml, coverage.json and pytest.log when pytest is run
  and mutmut.log with --mutation. JSON keys: score, band, weights, components.{{{",".join(COMPONENTS)}}}
  (each with status, score, weight, effective_weight, reason), verdict, recommendations, warnings,
  inputs, timings, comparison.
"""


def _weight(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name.strip(), float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"weight {name!r}: {value!r} is not a number") from exc


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from exc
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 100")
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from exc
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be positive")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = argparse.ArgumentParser(
        prog="assess_readiness",
        description="Assess whether a Python project is ready for a training or conversion run:\n"
        "run its test suite once (JUnit XML + branch coverage JSON), scan TODOs, check critical\n"
        "paths, optionally run mutation testing, and write a Markdown and a JSON report.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = parser.add_argument_group("project and outputs")
    where.add_argument(
        "--project",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="project to assess (default: current directory)",
    )
    where.add_argument(
        "--out-dir",
        type=Path,
        metavar="DIR",
        help=f"where reports go (default: <project>/{DEFAULT_OUT_DIR.as_posix()})",
    )
    where.add_argument(
        "--json-report",
        type=Path,
        metavar="FILE",
        help="JSON report path (default: <out-dir>/readiness.json)",
    )
    where.add_argument(
        "--md-report",
        type=Path,
        metavar="FILE",
        help="Markdown report path (default: <out-dir>/readiness.md)",
    )

    tests = parser.add_argument_group("test data (default: run pytest once in the project)")
    tests.add_argument(
        "--junit", type=Path, metavar="FILE", help="read this JUnit XML report instead of running pytest"
    )
    tests.add_argument(
        "--coverage-json",
        type=Path,
        metavar="FILE",
        help="read this coverage.py JSON report instead of running pytest (with --junit: "
        "reuse both reports of an earlier run)",
    )
    tests.add_argument(
        "--skip-tests", action="store_true", help="do not run pytest; tests and coverage are marked skipped"
    )
    tests.add_argument(
        "--pytest-args",
        action="append",
        default=[],
        metavar="ARGS",
        help="extra pytest arguments, shell-quoted; repeatable. Use the = form for "
        "arguments starting with '-': --pytest-args='-m \"not slow\"'",
    )
    tests.add_argument(
        "--python",
        default=sys.executable,
        metavar="EXE",
        help="interpreter that runs pytest and mutmut (default: this one)",
    )
    tests.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="PATH",
        help="source package/dir to measure and scan (repeatable; default: coverage.py's "
        "source, [tool.readiness] source, or detected top-level/src packages)",
    )
    tests.add_argument(
        "--coverage-config",
        type=Path,
        metavar="FILE",
        help="coverage.py config file (default: coverage.toml if present, else coverage.py's "
        "own search: .coveragerc, setup.cfg, tox.ini, pyproject.toml)",
    )

    gate = parser.add_argument_group("scoring and gate")
    gate.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML file with [tool.readiness] (default: <project>/pyproject.toml)",
    )
    gate.add_argument(
        "--fail-under",
        type=_percent,
        metavar="N",
        help="fail the gate when the score is below N (0-100; default: [tool.readiness] "
        "fail_under, else 40, the lower bound of 'partial')",
    )
    gate.add_argument(
        "--weight",
        type=_weight,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"override a component weight (repeatable); names: {', '.join(COMPONENTS)}",
    )
    gate.add_argument(
        "--compare",
        type=Path,
        metavar="FILE",
        help="previous readiness.json: report the change since that run",
    )

    mutation = parser.add_argument_group("mutation testing")
    mutation.add_argument(
        "--mutation",
        action="store_true",
        help="run mutmut 3 on the critical modules (needs mutmut's [tool.mutmut] "
        "source_paths to include them)",
    )
    mutation.add_argument(
        "--mutation-budget",
        type=_positive,
        default=600.0,
        metavar="SECONDS",
        help="stop mutmut after this long; unchecked mutants are not scored (default: 600)",
    )
    mutation.add_argument(
        "--mutation-workers",
        type=int,
        default=Options().mutation_workers,
        metavar="N",
        help="parallel mutmut workers (default: CPU count)",
    )
    return parser


def options_from_args(args: argparse.Namespace) -> Options:
    """Turn parsed arguments into :class:`Options`."""
    pytest_args: list[str] = []
    for chunk in args.pytest_args:
        try:
            pytest_args += shlex.split(chunk)
        except ValueError as exc:
            raise ReadinessError(f"--pytest-args {chunk!r}: {exc}") from exc
    if args.mutation_workers < 1:
        raise ReadinessError("--mutation-workers must be at least 1")
    return Options(
        project=args.project,
        out_dir=args.out_dir,
        json_report=args.json_report,
        md_report=args.md_report,
        junit=args.junit,
        coverage_json=args.coverage_json,
        skip_tests=args.skip_tests,
        pytest_args=tuple(pytest_args),
        python=args.python,
        source=tuple(args.source),
        coverage_config=args.coverage_config,
        config=args.config,
        fail_under=args.fail_under,
        weights=dict(args.weight),
        compare=args.compare,
        mutation=args.mutation,
        mutation_budget=args.mutation_budget,
        mutation_workers=args.mutation_workers,
    )


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, run the assessment, print a summary; return the exit code (0, 1 or 2)."""
    args = build_parser().parse_args(argv)
    try:
        outcome = assess(options_from_args(args))
    except ReadinessError as exc:
        print(f"assess_readiness: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - exit code 1 means "gate failed"; a crash must never read so
        traceback.print_exc()
        print(f"assess_readiness: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    report = outcome.report
    verdict = report["verdict"]
    state = {0: "PASSED", 1: "FAILED", 2: "ERROR"}[outcome.exit_code]
    print(f"Readiness: {report['score']:.1f}/100 ({report['band']}) - gate {state}")
    for reason in verdict["reasons"]:
        print(f"  - {reason}")
    print(f"Reports: {outcome.md_path} and {outcome.json_path}")
    for warning in report["warnings"]:
        print(f"assess_readiness: warning: {warning}", file=sys.stderr)
    for error in verdict["errors"]:
        print(f"assess_readiness: error: {error}", file=sys.stderr)
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
