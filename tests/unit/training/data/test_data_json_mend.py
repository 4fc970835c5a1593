"""Mending almost-valid teacher JSON and counting the outcomes."""

from __future__ import annotations

import pytest

from training.data import JsonMendCounter, MendResult, mend_json


def test_valid_json_is_parsed_without_repair() -> None:
    assert mend_json('{"name": "set_timer", "arguments": {"minutes": 5}}') == MendResult(
        {"name": "set_timer", "arguments": {"minutes": 5}}, was_valid=True, was_repaired=False, error=None)


@pytest.mark.parametrize(("text", "value"), [
    ('{"a": 1,}', {"a": 1}),
    ("{'a': 1}", {"a": 1}),
    ('{"a": [1, 2', {"a": [1, 2]}),
    ('```json\n{"a": true}\n```', {"a": True}),
    ('Sure, here it is: {"x": 1} hope it helps', {"x": 1}),
])
def test_almost_valid_json_is_repaired(text: str, value: object) -> None:
    result = mend_json(text)
    assert (result.value, result.was_valid, result.was_repaired, result.error) == (value, False, True, None)


@pytest.mark.parametrize("text", ["", "no json here at all", "}}}"])
def test_text_without_json_fails_with_the_parse_error(text: str) -> None:
    result = mend_json(text)
    assert (result.value, result.was_valid, result.was_repaired, result.ok) == (None, False, False, False)
    assert "no JSON found to repair" in (result.error or "")


def test_a_value_of_the_wrong_type_fails_when_a_type_is_expected() -> None:
    assert mend_json("[1, 2]", expect=dict).error == "expected dict, got list"
    assert mend_json("[1, 2]", expect=(dict, list)).value == [1, 2]


def test_counter_tallies_valid_repaired_and_failed() -> None:
    counter = JsonMendCounter()
    for text in ['{"a": 1}', "[1]", "{'a': 1}", '{"b": 2', "nothing", "[3]"]:
        counter.mend(text, expect=dict)
    assert counter.as_dict() == {"valid": 1, "repaired": 2, "failed": 3, "total": 6}
