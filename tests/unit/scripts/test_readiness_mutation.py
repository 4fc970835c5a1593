"""mutmut 3 result files: exit-code meanings, per-module scores, mutant selection."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.readiness.errors import ReadinessError
from scripts.readiness.mutation import (
    DETECTED,
    NOT_COUNTED,
    STATUS_BY_EXIT_CODE,
    STATUSES,
    UNDETECTED,
    MutationResult,
    clear_results,
    collect,
    meta_path,
    mutant_glob,
    parse_meta,
    read_module,
    run_mutmut,
    status_of,
    stop_process_group,
)


def _meta(codes: dict[str, int | None]) -> str:
    # the layout mutmut 3.8's SourceFileMutationData.save() writes
    return json.dumps(
        {
            "exit_code_by_key": codes,
            "hash_by_function_name": {},
            "type_check_error_by_key": {},
            "durations_by_key": {},
            "estimated_durations_by_key": {},
        }
    )


def test_exit_code_table_matches_installed_mutmut() -> None:
    stats = pytest.importorskip("mutmut.stats")
    table = stats.status_by_exit_code  # a defaultdict: looking up an unknown code adds it as "suspicious"
    assert {code: table[code] for code in STATUS_BY_EXIT_CODE} == STATUS_BY_EXIT_CODE
    assert all(status == "suspicious" for code, status in table.items() if code not in STATUS_BY_EXIT_CODE)
    assert table.default_factory() == status_of(12345) == "suspicious"


def test_every_status_is_classified_exactly_once() -> None:
    assert set(STATUS_BY_EXIT_CODE.values()) | {"suspicious"} == set(STATUSES)
    assert set(STATUSES) == DETECTED | UNDETECTED | NOT_COUNTED
    assert not (DETECTED & UNDETECTED) and not (DETECTED & NOT_COUNTED) and not (UNDETECTED & NOT_COUNTED)


def test_parse_meta_scores_checked_mutants_only() -> None:
    codes = {
        "pkg.core.x_f__mutmut_1": 1,  # killed
        "pkg.core.x_f__mutmut_2": 0,  # survived
        "pkg.core.x_f__mutmut_3": 36,  # timeout
        "pkg.core.x_f__mutmut_4": 33,  # no tests
        "pkg.core.x_f__mutmut_5": None,  # not checked
        "pkg.core.x_f__mutmut_6": 34,  # skipped
        "pkg.core.x_f__mutmut_7": 2,  # interrupted
        "pkg.core.x_f__mutmut_8": 99,  # suspicious
    }
    module = parse_meta(_meta(codes), "pkg/core.py")
    assert module.total == 8
    assert module.detected == 2
    assert module.undetected == 3
    assert module.checked == 5
    assert module.score == 40.0
    assert module.undetected_mutants == [
        "pkg.core.x_f__mutmut_2",
        "pkg.core.x_f__mutmut_4",
        "pkg.core.x_f__mutmut_8",
    ]
    assert module.to_dict()["counts"]["not checked"] == 1


def test_nothing_checked_has_no_score() -> None:
    module = parse_meta(_meta({"m.x_f__mutmut_1": None}), "m.py")
    assert module.checked == 0 and module.score is None
    assert MutationResult([module]).score is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not valid JSON"),
        ("{}", "no 'exit_code_by_key'"),
        (json.dumps({"exit_code_by_key": {"k": "1"}}), "exit code of k"),
    ],
)
def test_malformed_meta_is_an_error(text: str, message: str) -> None:
    with pytest.raises(ReadinessError, match=message):
        parse_meta(text, "m.py")


def test_read_and_collect_from_mutants_dir(tmp_path: Path) -> None:
    meta = meta_path(tmp_path, "pkg/core.py")
    assert meta == tmp_path / "mutants" / "pkg" / "core.py.meta"
    meta.parent.mkdir(parents=True)
    meta.write_text(_meta({"pkg.core.x_f__mutmut_1": 1, "pkg.core.x_f__mutmut_2": 0}))
    result = collect(tmp_path, ["pkg/core.py", "pkg/io.py"])
    core, io = result.modules
    assert core.found and core.score == 50.0
    assert not io.found and io.total == 0
    assert result.checked == 2 and result.score == 50.0
    assert read_module(tmp_path, "pkg/io.py").found is False


def test_binary_meta_file_is_an_error_naming_it(tmp_path: Path) -> None:
    meta = meta_path(tmp_path, "pkg/core.py")
    meta.parent.mkdir(parents=True)
    meta.write_bytes(b"\x80\x04\x95binary")
    with pytest.raises(ReadinessError, match=r"core\.py\.meta: not UTF-8 text \(byte 0x80"):
        read_module(tmp_path, "pkg/core.py")


def test_clear_results_removes_only_the_named_modules(tmp_path: Path) -> None:
    base = tmp_path / "mutants" / "pkg"
    base.mkdir(parents=True)
    for name in ("core.py", "core.py.meta", "core.py.spans", "io.py", "io.py.meta"):
        (base / name).write_text("x")
    clear_results(tmp_path, ["pkg/core.py", "pkg/absent.py"])
    assert sorted(p.name for p in base.iterdir()) == ["io.py", "io.py.meta"]


def _files(base: Path) -> list[str]:
    return sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())


def test_every_run_refreshes_mutmuts_copy_of_the_tests(tmp_path: Path) -> None:
    # the project today: one test file left, a configured also_copy dir; mutants/ from an older run
    (tmp_path / "pyproject.toml").write_text('[tool.mutmut]\nalso_copy = ["configs"]\n')
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_kept.py").write_text("def test_kept():\n    pass\n")
    mutants = tmp_path / "mutants"
    for name in (
        "tests/test_kept.py",
        "tests/test_deleted.py",  # deleted from the project since: must not run again
        "configs/old.yaml",
        "test_top_deleted.py",
        "pkg/core.py",
        "pkg/core.py.meta",
        "pkg/io.py",
        "pkg/io.py.meta",
    ):
        (mutants / name).parent.mkdir(parents=True, exist_ok=True)
        (mutants / name).write_text("stale")
    run = run_mutmut(tmp_path, "true", ["pkg/core.py"], 30.0, 1, tmp_path / "out" / "mutmut.log")
    assert run.returncode == 0
    # mutmut copies the tests and also_copy paths afresh; other modules' cached results stay
    assert _files(mutants) == ["pkg/io.py", "pkg/io.py.meta"]


def test_refresh_never_deletes_outside_mutants(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.mutmut]\nalso_copy = [".", "../outside", "/etc"]\n')
    (tmp_path / "mutants" / "pkg").mkdir(parents=True)
    (tmp_path / "mutants" / "pkg" / "a.py").write_text("x")
    (tmp_path / "outside").mkdir()
    run_mutmut(tmp_path, "true", [], 30.0, 1, tmp_path / "mutmut.log")
    assert (tmp_path / "outside").is_dir() and (tmp_path / "mutants" / "pkg" / "a.py").is_file()


def test_refresh_reads_also_copy_from_setup_cfg(tmp_path: Path) -> None:
    (tmp_path / "setup.cfg").write_text("[mutmut]\nalso_copy =\n    data\n    fixtures\n")
    for name in ("data/a.json", "fixtures/b.txt", "keep/c.txt"):
        (tmp_path / "mutants" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "mutants" / name).write_text("stale")
    run_mutmut(tmp_path, "true", [], 30.0, 1, tmp_path / "mutmut.log")
    assert _files(tmp_path / "mutants") == ["keep/c.txt"]


def test_mutant_glob_matches_mutmut_names() -> None:
    import fnmatch

    glob = mutant_glob("src/pkg/core.py")
    assert glob == "pkg.core.x[_\u01c1]*"
    assert fnmatch.fnmatch("pkg.core.x_add__mutmut_1", glob)
    assert fnmatch.fnmatch("pkg.core.x\u01c1Acc\u01c1push__mutmut_3", glob)
    assert not fnmatch.fnmatch("pkg.core_extra.x_add__mutmut_1", glob)
    assert mutant_glob("pkg/__init__.py") == "pkg.x[_\u01c1]*"


def _group(setup: str) -> subprocess.Popen[bytes]:
    """A child in its own process group: runs ``setup``, says it is ready, sleeps; exit code 7 on Ctrl-C."""
    code = (
        f"import signal, sys, time\n{setup}\n"
        "try:\n    print('ready', flush=True)\n    time.sleep(60)\nexcept KeyboardInterrupt:\n    sys.exit(7)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    return process


def test_stop_interrupts_the_process_group() -> None:
    # set explicitly: an ignored SIGINT is inherited (e.g. when this suite runs as a background job)
    process = _group("signal.signal(signal.SIGINT, signal.default_int_handler)")
    stop_process_group(process, grace_s=10)
    assert process.returncode == 7


def test_stop_kills_a_group_that_ignores_interrupts() -> None:
    process = _group("signal.signal(signal.SIGINT, signal.SIG_IGN)")
    stop_process_group(process, grace_s=0.2)
    assert process.returncode == -signal.SIGKILL


def test_stop_tolerates_a_finished_process() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    process.wait()
    stop_process_group(process, grace_s=0.2)
    assert process.returncode == 0
