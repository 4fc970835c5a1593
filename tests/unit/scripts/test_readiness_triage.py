"""Failure triage: exception types, message patterns, grouping by file and category."""

from __future__ import annotations

from scripts.readiness.junit import TestCase, parse_junit
from scripts.readiness.triage import exception_of, normalize_message, to_failure, triage


def _case(
    message: str,
    details: str = "",
    phase: str = "call",
    outcome: str = "failed",
    file: str = "tests/test_a.py",
    name: str = "test_x",
) -> TestCase:
    return TestCase("tests.test_a", name, outcome, file, phase, message, details)


def test_normalize_replaces_variable_parts() -> None:
    assert normalize_message("assert 2 == 3\n + where 2 = f(1)") == "assert <n> == <n>"
    assert normalize_message("KeyError: 'abc' at 0x7f00ab") == "KeyError: <str> at <addr>"
    assert normalize_message("shape (4, 16) != (4, 32)") == "shape (<n>, <n>) != (<n>, <n>)"
    assert normalize_message("layer2 failed") == "layer2 failed"
    assert normalize_message("") == ""
    assert len(normalize_message("x" * 500)) == 100


def test_exception_from_location_line_then_message() -> None:
    assert (
        exception_of(_case("assert 1", "E  assert 1\n\ntests/test_a.py:3: AssertionError\n"))
        == "AssertionError"
    )
    assert exception_of(_case("boom", "E   torch.OutOfMemoryError: boom")) == "torch.OutOfMemoryError"
    assert exception_of(_case("ValueError: bad shape")) == "ValueError"
    assert exception_of(_case("assert x")) == "AssertionError"
    assert (
        exception_of(_case("collection failure", phase="collection", outcome="errored")) == "CollectionError"
    )
    assert exception_of(_case("something odd")) == "UnknownError"


def test_setup_error_message_is_unwrapped() -> None:
    failure = to_failure(
        _case(
            'failed on setup with "RuntimeError: fixture 3 broke"',
            "x.py:1: RuntimeError",
            phase="setup",
            outcome="errored",
        )
    )
    assert failure.exception == "RuntimeError"
    assert failure.pattern == "fixture <n> broke"
    assert failure.category == "RuntimeError: fixture <n> broke (during setup)"


def test_collection_error_pattern_comes_from_last_e_line() -> None:
    failure = to_failure(
        _case(
            "collection failure",
            "Traceback:\nE   ModuleNotFoundError: No module named 'nope'",
            phase="collection",
            outcome="errored",
        )
    )
    assert failure.exception == "ModuleNotFoundError"
    assert failure.pattern == "No module named <str>"


def test_groups_by_category_overall_and_per_file() -> None:
    cases = [
        _case("assert 2 == 3", "tests/test_a.py:3: AssertionError", name="t1"),
        _case("assert 5 == 7", "tests/test_b.py:9: AssertionError", name="t2", file="tests/test_b.py"),
        _case("assert 9 == 1", "tests/test_a.py:5: AssertionError", name="t3"),
        _case("ValueError: bad", "src/m.py:2: ValueError", name="t4"),
        _case("", outcome="passed", phase="", name="ok"),
    ]
    result = triage(cases)
    assert [(g.category, g.count) for g in result.top] == [
        ("AssertionError: assert <n> == <n>", 3),
        ("ValueError: bad", 1),
    ]
    assert result.top[0].files == ["tests/test_a.py", "tests/test_b.py"]
    assert list(result.by_file) == ["tests/test_a.py", "tests/test_b.py"]
    assert [g.count for g in result.by_file["tests/test_a.py"]] == [2, 1]
    as_dict = result.to_dict()
    assert as_dict["top_categories"][0]["tests"] == [
        "tests/test_a.py::t1",
        "tests/test_b.py::t2",
        "tests/test_a.py::t3",
    ]


def test_triage_of_a_real_shaped_report() -> None:
    xml = (
        '<testsuite><testcase classname="tests.test_m" name="t"><failure message="KeyError: &apos;x&apos;">'
        "E   KeyError: 'x'\n\ntests/test_m.py:11: KeyError</failure></testcase></testsuite>"
    )
    (group,) = triage(parse_junit(xml).cases).top
    assert group.category == "KeyError: <str>"
