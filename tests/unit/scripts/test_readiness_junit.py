"""JUnit XML parsing: per-test outcomes, deduplication, file resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.readiness.errors import ReadinessError
from scripts.readiness.junit import OUTCOMES, load_junit, parse_junit, resolve_test_file

# Shaped like pytest 9's --junitxml output; the suite attributes are deliberately wrong.
JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites name="pytest tests"><testsuite name="pytest" errors="9" failures="9" skipped="9" tests="99">
<testcase classname="tests.test_core" name="test_add" time="0.000" />
<testcase classname="tests.test_core" name="test_bad" time="0.001"><failure message="assert 2 == 3">def test_bad():
&gt;       assert add(1, 1) == 3
E       assert 2 == 3

tests/test_core.py:8: AssertionError</failure></testcase>
<testcase classname="tests.test_core" name="test_skip"><skipped type="pytest.skip" message="nah">x.py:13: nah</skipped></testcase>
<testcase classname="tests.test_core" name="test_xf"><skipped type="pytest.xfail" message="known" /></testcase>
<testcase classname="tests.test_core" name="test_xp_legacy"><skipped message="xfail-marked test passes unexpectedly" /></testcase>
<testcase classname="tests.test_core" name="test_fx"><error message="failed on setup with &quot;RuntimeError: fixture broke&quot;">
tests/test_core.py:27: RuntimeError</error></testcase>
<testcase classname="tests.test_core" name="test_td"><error message="failed on teardown with &quot;OSError: teardown broke&quot;">
tests/test_core.py:35: OSError</error></testcase>
<testcase classname="tests.test_core" name="test_td_fail"><failure message="assert 1 == 2">tests/test_core.py:41: AssertionError</failure></testcase>
<testcase classname="tests.test_core" name="test_td_fail"><error message="failed on teardown with &quot;OSError: teardown broke&quot;">tests/test_core.py:35: OSError</error></testcase>
<testcase classname="tests.test_core" name="test_p[1]" />
<testcase classname="tests.test_core" name="test_p[1]" />
<testcase classname="tests.test_core.TestK" name="test_m"><failure message="assert [1, 2] == [1, 3]">tests/test_core.py:49: AssertionError</failure></testcase>
<testcase classname="" name="tests.test_broken"><error message="collection failure">E   ModuleNotFoundError: No module named 'nope'</error></testcase>
</testsuite></testsuites>
"""


def test_counts_each_distinct_testcase_once_and_ignores_suite_attributes() -> None:
    run = parse_junit(JUNIT)
    assert run.elements == 13
    assert run.total == 11
    assert run.counts == {"passed": 2, "failed": 3, "errored": 3, "skipped": 1, "xfailed": 1, "xpassed": 1}
    assert set(run.counts) == set(OUTCOMES)
    assert run.executed == 2 + 1 + 3 + 3


def test_failure_plus_teardown_error_is_one_failed_test() -> None:
    run = parse_junit(JUNIT)
    case = next(c for c in run.cases if c.name == "test_td_fail")
    assert case.outcome == "failed"
    assert case.teardown_error
    assert run.teardown_errors == 1


def test_error_phases_are_recognised() -> None:
    phases = {c.name: c.phase for c in parse_junit(JUNIT).cases if c.outcome == "errored"}
    assert phases == {"test_fx": "setup", "test_td": "teardown", "tests.test_broken": "collection"}


def test_test_ids_use_files_and_classes() -> None:
    ids = [c.test_id for c in parse_junit(JUNIT).problems]
    assert "tests/test_core.py::TestK::test_m" in ids
    assert "tests/test_core.py::test_bad" in ids
    assert "tests/test_broken.py" in ids


def test_file_resolution_prefers_existing_files(tmp_path: Path) -> None:
    (tmp_path / "tests" / "unit").mkdir(parents=True)
    (tmp_path / "tests" / "unit" / "test_x.py").write_text("")
    assert resolve_test_file("tests.unit.test_x.TestY", "test_a", tmp_path) == "tests/unit/test_x.py"
    # without the file, trailing class-like parts are dropped
    assert resolve_test_file("tests.other.TestZ", "test_a", tmp_path) == "tests/other.py"
    assert resolve_test_file("", "", None) is None


def test_xunit1_file_attribute_is_used() -> None:
    xml = '<testsuite><testcase classname="a.b" name="t" file="tests\\b.py"><failure message="m"/></testcase></testsuite>'
    (case,) = parse_junit(xml).cases
    assert case.file == "tests/b.py"
    assert case.outcome == "failed"


def test_other_error_messages_have_a_generic_phase() -> None:
    xml = (
        '<testsuite><testcase classname="pytest" name="internal"><error message="internal error"/></testcase>'
        '<testcase classname="m" name="t"><error message="weird"/></testcase></testsuite>'
    )
    phases = sorted(c.phase for c in parse_junit(xml).cases)
    assert phases == ["error", "internal"]


@pytest.mark.parametrize(
    ("text", "message"),
    [("<not-xml", "not valid XML"), ("<html></html>", "expected <testsuites>")],
)
def test_invalid_reports_are_errors(text: str, message: str) -> None:
    with pytest.raises(ReadinessError, match=message):
        parse_junit(text)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ReadinessError, match="cannot read JUnit report"):
        load_junit(tmp_path / "missing.xml")


def test_load_reads_bytes_with_declared_encoding(tmp_path: Path) -> None:
    path = tmp_path / "j.xml"
    path.write_text(JUNIT, encoding="utf-8")
    assert load_junit(path).total == 11


def test_teardown_error_survives_further_merges() -> None:
    failure = '<testcase classname="m" name="t"><failure message="x"/></testcase>'
    teardown = (
        '<testcase classname="m" name="t"><error message="failed on teardown with &quot;E&quot;"/></testcase>'
    )
    (case,) = parse_junit(f"<testsuite>{failure}{teardown}{failure}</testsuite>").cases
    assert case.outcome == "failed" and case.teardown_error
