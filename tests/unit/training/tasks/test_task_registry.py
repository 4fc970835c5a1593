"""Tests for the task registry, prompt-disjoint splitting and JSONL helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.tasks import TASKS, get_task
from training.tasks.jsonl import read_jsonl, write_jsonl
from training.tasks.schema import make_id
from training.tasks.splits import split_by_prompt


def test_registry_names_and_interface() -> None:
    assert set(TASKS) == {"arithmetic", "toolcall", "eightball"}
    for name, task in TASKS.items():
        assert task.name == name and task.description
        examples = task.generate(20, 0)
        assert examples == task.generate(20, 0)
        assert all(e["task"] == name for e in examples)
        for example in examples:
            metrics = task.score(example, example["completion"])
            assert metrics["accuracy"] == 1.0
            assert all(value in (0.0, 1.0) for value in metrics.values())
            assert task.score(example, "<unk> nonsense")["accuracy"] == 0.0
        texts = task.sample_texts(20, 0)
        assert texts == [e["prompt"] + e["completion"] for e in examples]


def test_toolcall_score_reports_valid_json() -> None:
    task = TASKS["toolcall"]
    example = task.generate(1, 0)[0]
    assert task.score(example, example["completion"])["valid_json"] == 1.0
    assert task.score(example, "<tool_call>{oops")["valid_json"] == 0.0


def test_get_task() -> None:
    assert get_task("eightball") is TASKS["eightball"]
    with pytest.raises(KeyError, match="arithmetic"):
        get_task("chess")


def test_make_id() -> None:
    assert make_id("arithmetic", 3, 12) == "arithmetic-s3-000012"
    with pytest.raises(ValueError):
        make_id("arithmetic", 0, -1)


def _examples(prompts: list[str]) -> list[dict]:
    return [
        {"id": str(i), "task": "t", "prompt": prompt, "completion": "c"} for i, prompt in enumerate(prompts)
    ]


def test_split_by_prompt_groups_duplicates_and_keeps_order() -> None:
    prompts = [f"p{i % 25}" for i in range(100)]
    splits = split_by_prompt(_examples(prompts), val_frac=0.2, test_frac=0.2, seed=0)
    groups = [{e["prompt"] for e in part} for part in (splits.train, splits.val, splits.test)]
    assert [len(g) for g in groups] == [15, 5, 5]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert len(splits.train) + len(splits.val) + len(splits.test) == 100
    for part in (splits.train, splits.val, splits.test):
        assert [int(e["id"]) for e in part] == sorted(int(e["id"]) for e in part)


def test_split_by_prompt_small_and_invalid_inputs() -> None:
    tiny = split_by_prompt(_examples(["a", "b", "c"]), val_frac=0.01, test_frac=0.01, seed=0)
    assert (len(tiny.train), len(tiny.val), len(tiny.test)) == (1, 1, 1)
    empty = split_by_prompt([], 0.1, 0.1, seed=0)
    assert (empty.train, empty.val, empty.test) == ([], [], [])
    with pytest.raises(ValueError):
        split_by_prompt(_examples(["a", "b"]), 0.1, 0.1, seed=0)
    with pytest.raises(ValueError):
        split_by_prompt(_examples(["a"] * 5), 1.0, 0.0, seed=0)
    with pytest.raises(ValueError):
        split_by_prompt(_examples(["a"] * 5), 0.5, 0.5, seed=0)


def test_jsonl_round_trip(tmp_path: Path) -> None:
    records = [{"id": "1", "prompt": "Q: é\n", "steps": ["1+1=2"]}, {"id": "2", "x": None}]
    path = tmp_path / "nested" / "out.jsonl"
    assert write_jsonl(path, records) == 2
    assert read_jsonl(path) == records
    path.write_text('{"a": 1}\n\n[1]\n', encoding="utf-8")
    with pytest.raises(ValueError, match=":3:"):
        read_jsonl(path)
