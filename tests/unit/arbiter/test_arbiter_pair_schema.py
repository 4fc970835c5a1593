"""The preference-pair JSONL format: what validates, and a file:line reason for every bad line."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from arbiter.data.schema import MAX_REPORTED_LINES, PairDataError, PreferencePair, read_pairs, write_pairs

GOOD = "<think><step>3*2=6</step><step>7+6=13</step></think><answer>13</answer>"
BAD = "<think><step>3*2=5</step><step>7+5=12</step></think><answer>12</answer>"


def record(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "prompt": "Q: 7+3*2=?\n", "a": GOOD, "b": BAD, "winner": "a",
        "clauses_a": {"answer_correct": 1, "steps_valid": 1}, "clauses_b": {"answer_correct": 0},
        "steps_a": ["3*2=6", "7+6=13"], "step_labels_a": [1.0, 1.0],
        "steps_b": ["3*2=5", "7+5=12"], "step_labels_b": [0.0, 0.0],
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_valid_pair_round_trips(tmp_path: Path) -> None:
    pairs = [PreferencePair.model_validate(record()), PreferencePair.model_validate(
        record(winner="tie", clauses_a=None, clauses_b=None, steps_b=None, step_labels_b=None, id="x", kind="k"))]
    path = tmp_path / "pairs.jsonl"
    assert write_pairs(path, pairs) == 2
    assert read_pairs(path) == pairs
    assert "clauses_b" not in json.loads(path.read_text().splitlines()[1])
    assert pairs[0].response("b") == BAD and pairs[0].clauses("a") == {"answer_correct": 1, "steps_valid": 1}
    assert pairs[1].step_labels("b") is None


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"winner": "c"}, "winner: Input should be 'a', 'b' or 'tie'"),
        ({"clauses_a": {"answer_correct": 2}}, "clauses_a.answer_correct"),
        ({"clauses_a": {"Answer Correct": 1}}, "must be lower_snake_case"),
        ({"step_labels_a": None}, "steps_a and step_labels_a must be given together"),
        ({"step_labels_b": [0.0]}, "steps_b has 2 steps but step_labels_b has 1"),
        ({"step_labels_a": [1.0, 1.5]}, "step labels must lie in [0, 1]"),
        ({"steps_a": ["3*2=6", "7+6=14"]}, "steps_a must be the <step>...</step> spans of response a"),
        ({"a": GOOD + "</step>"}, "response a has a </step> outside a complete <step> span"),
        ({"prompt": ""}, "prompt: String should have at least 1 character"),
        ({"judge": "me"}, "judge: Extra inputs are not permitted"),
        ({"winner": None}, "winner: Field required"),
    ],
)
def test_each_bad_line_is_reported_with_its_reason(tmp_path: Path, overrides: dict[str, Any], reason: str) -> None:
    path = write_lines(tmp_path / "p.jsonl", [json.dumps(record()), json.dumps(record(**overrides))])
    with pytest.raises(PairDataError) as caught:
        read_pairs(path)
    assert caught.value.problems == [caught.value.problems[0]]
    problem = caught.value.problems[0]
    assert problem.startswith(f"{path}:2: ")
    assert reason in problem


def test_json_errors_and_non_objects_are_located(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "p.jsonl", ["", json.dumps(record()), "{not json", "[1, 2]", "", json.dumps(record())])
    with pytest.raises(PairDataError) as caught:
        read_pairs(path)
    problems = caught.value.problems
    assert len(problems) == 2
    assert problems[0].startswith(f"{path}:3: invalid JSON")
    assert problems[1] == f"{path}:4: expected a JSON object, got list"
    assert str(path) in str(caught.value) and "2 bad line(s)" in str(caught.value)


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "p.jsonl", ["", json.dumps(record()), "   ", json.dumps(record(winner="b"))])
    assert [p.winner for p in read_pairs(path)] == ["a", "b"]


def test_many_bad_lines_are_all_counted_but_the_message_is_capped(tmp_path: Path) -> None:
    lines = [json.dumps(record(winner="x"))] * (MAX_REPORTED_LINES + 5)
    path = write_lines(tmp_path / "p.jsonl", lines)
    with pytest.raises(PairDataError) as caught:
        read_pairs(path)
    assert len(caught.value.problems) == MAX_REPORTED_LINES + 5
    assert "... and 5 more bad lines" in str(caught.value)
    assert len(re.findall(rf"{re.escape(str(path))}:\d+: ", str(caught.value))) == MAX_REPORTED_LINES


def test_steps_are_compared_after_stripping_whitespace() -> None:
    response = "<think><step> 3 * 2 = 6 </step></think><answer>6</answer>"
    pair = PreferencePair.model_validate(record(a=response, steps_a=["3 * 2 = 6"], step_labels_a=[1.0]))
    assert pair.steps_a == ["3 * 2 = 6"]
