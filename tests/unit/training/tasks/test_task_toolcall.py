"""Tests for the tool-call task: generation, canonical JSON, verification tiers and spans."""

from __future__ import annotations

import functools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from training.tasks.toolcall import (
    ToolCallConfig,
    ToolCallScore,
    canonical_json,
    format_completion,
    generate,
    score,
    spans,
    verify,
)
from training.tasks.toolcall_catalogue import CATALOGUE

OPEN, CLOSE = "<tool_call>", "</tool_call>"


def _payload(completion: str) -> str:
    assert completion.startswith(OPEN) and completion.endswith(CLOSE)
    return completion[len(OPEN) : -len(CLOSE)]


@functools.cache
def _weather_example() -> dict:
    for example in generate(200, seed=0):
        if '"get_weather"' in example["completion"]:
            return example
    raise AssertionError("no get_weather example in 200 draws")


def test_generate_deterministic_prefix_stable_and_unique_ids() -> None:
    examples = generate(100, seed=1)
    assert examples == generate(100, seed=1)
    assert generate(10, seed=1) == examples[:10]
    assert examples != generate(100, seed=2)
    assert len({e["id"] for e in examples}) == 100


def test_completions_are_canonical_and_copy_the_request() -> None:
    examples = generate(400, seed=0)
    assert {json.loads(_payload(e["completion"]))["name"] for e in examples} == set(CATALOGUE)
    for example in examples:
        payload = _payload(example["completion"])
        call = json.loads(payload)
        assert list(call) == ["name", "arguments"]
        tool = CATALOGUE[call["name"]]
        assert list(call["arguments"]) == [p.name for p in tool.parameters]
        for parameter in tool.parameters:
            value = call["arguments"][parameter.name]
            assert value in parameter.values
            assert str(value) in example["prompt"]
        assert payload == canonical_json(call["name"], call["arguments"]) == example["answer"]
        assert example["prompt"].startswith("User: ") and example["prompt"].endswith("\n")
        if call["name"] == "convert_currency":
            assert call["arguments"]["from"] != call["arguments"]["to"]


def test_completion_format_matches_spec() -> None:
    completion = format_completion("get_weather", {"city": "Paris", "unit": "celsius"})
    assert completion == (
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}</tool_call>'
    )


def test_config_restricts_tools() -> None:
    examples = generate(50, seed=0, config=ToolCallConfig(tools=("set_timer",)))
    assert all('"set_timer"' in e["completion"] for e in examples)
    with pytest.raises(ValidationError):
        ToolCallConfig(tools=("launch_rocket",))
    with pytest.raises(ValidationError):
        ToolCallConfig(tools=())


# --- verify ---------------------------------------------------------------------------------------


def test_verify_exact() -> None:
    example = _weather_example()
    assert verify(example, example["completion"]) == ToolCallScore(True, False, True, True, True)
    assert verify(example, example["completion"] + "<eos><pad>").exact_match
    reordered = json.dumps({"arguments": json.loads(example["answer"])["arguments"], "name": "get_weather"})
    assert verify(example, f"{OPEN}{reordered}{CLOSE}").exact_match


def test_verify_missing_closing_brace_is_repaired() -> None:
    example = _weather_example()
    broken = example["completion"].replace(f"}}}}{CLOSE}", f"}}{CLOSE}")
    assert broken != example["completion"]
    assert verify(example, broken) == ToolCallScore(
        valid_json=False, repaired=True, name_match=True, arguments_match=True, exact_match=False
    )


def test_verify_missing_closing_marker_still_extracts() -> None:
    example = _weather_example()
    unterminated = example["completion"].removesuffix(CLOSE) + "<eos>"
    assert verify(example, unterminated).exact_match


def test_verify_garbage_and_missing_marker() -> None:
    example = _weather_example()
    nothing = ToolCallScore(False, False, False, False, False)
    assert verify(example, f"{OPEN}the weather is nice{CLOSE}") == nothing
    assert verify(example, _payload(example["completion"])) == nothing
    assert verify(example, "") == nothing
    assert verify(example, f"{OPEN}[1, 2, 3]{CLOSE}") == nothing


def test_verify_partial_matches() -> None:
    example = _weather_example()
    call = json.loads(example["answer"])
    city = call["arguments"]["city"]
    other_city = "Oslo" if city != "Oslo" else "Rome"
    wrong_city = format_completion("get_weather", {**call["arguments"], "city": other_city})
    assert verify(example, wrong_city) == ToolCallScore(True, False, True, False, False)
    wrong_name = format_completion("search", call["arguments"])
    assert verify(example, wrong_name) == ToolCallScore(True, False, False, True, False)
    extra_key = f"{OPEN}{json.dumps({**call, 'id': 1})}{CLOSE}"
    assert verify(example, extra_key) == ToolCallScore(True, False, True, True, False)


def test_verify_is_type_strict() -> None:
    example = generate(1, seed=0, config=ToolCallConfig(tools=("set_timer",)))[0]
    minutes = json.loads(example["answer"])["arguments"]["minutes"]
    assert isinstance(minutes, int)
    for wrong in (str(minutes), float(minutes)):
        text = format_completion("set_timer", {"minutes": wrong})
        assert verify(example, text) == ToolCallScore(True, False, True, False, False)


def test_score_metrics() -> None:
    example = _weather_example()
    assert score(example, example["completion"]) == {
        "accuracy": 1.0,
        "valid_json": 1.0,
        "repaired": 0.0,
        "name_match": 1.0,
        "arguments_match": 1.0,
        "exact_match": 1.0,
    }
    broken = score(example, example["completion"][: -len(f"}}{CLOSE}")])
    assert broken["accuracy"] == 0.0 and broken["valid_json"] == 0.0 and broken["repaired"] == 1.0


@settings(max_examples=80, deadline=None)
@given(text=st.text(max_size=60))
def test_property_verify_never_raises(text: str) -> None:
    example = _weather_example()
    result = verify(example, f"{OPEN}{text}")
    assert not (result.valid_json and result.repaired)
    assert not result.exact_match or result.valid_json


# --- spans ----------------------------------------------------------------------------------------


def test_spans_point_at_name_and_arguments() -> None:
    for example in generate(100, seed=3):
        completion = example["completion"]
        call = json.loads(example["answer"])
        found = spans(completion)
        start, end = found["name"]
        assert completion[start:end] == call["name"]
        start, end = found["arguments"]
        assert completion[start] == "{" and completion[end - 1] == "}"
        assert json.loads(completion[start:end]) == call["arguments"]
        start, end = found["call"]
        assert completion[start:end] == example["answer"]


def test_spans_handle_other_layouts() -> None:
    payload = '\n { "arguments" : {"query": "a } b"} ,\n "name":"search" }  '
    completion = OPEN + payload + CLOSE + "<eos>"
    found = spans(completion)
    assert completion[slice(*found["name"])] == "search"
    assert completion[slice(*found["arguments"])] == '{"query": "a } b"}'
    assert completion[slice(*found["call"])] == payload.strip()


@pytest.mark.parametrize(
    "completion",
    [
        "no call here",
        f'{OPEN}{{"name": "search", "arguments": {{"query": "x"}}{CLOSE}',
        f'{OPEN}{{"name": 3, "arguments": {{}}}}{CLOSE}',
        f'{OPEN}{{"name": "search", "arguments": []}}{CLOSE}',
    ],
)
def test_spans_reject_malformed(completion: str) -> None:
    with pytest.raises(ValueError):
        spans(completion)
