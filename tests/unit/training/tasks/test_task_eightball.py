"""Tests for the 8-ball smoke task: the first-word rule, determinism and verification."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.tasks.eightball import REPLIES, extract_reply, generate, reply_for, score, verify


def test_generate_deterministic_prefix_stable_and_unique_ids() -> None:
    examples = generate(100, seed=0)
    assert examples == generate(100, seed=0)
    assert generate(7, seed=0) == examples[:7]
    assert examples != generate(100, seed=1)
    assert len({e["id"] for e in examples}) == 100


def test_reply_is_set_by_first_word() -> None:
    examples = generate(300, seed=2)
    seen: dict[str, set[str]] = {}
    for example in examples:
        question = example["prompt"].removeprefix("8-ball: ")
        assert example["prompt"].endswith("?\n")
        first_word = question.split()[0]
        assert example["completion"] == example["answer"] == REPLIES[first_word]
        seen.setdefault(first_word, set()).add(example["completion"])
    assert set(seen) == set(REPLIES)
    assert all(len(replies) == 1 for replies in seen.values())
    assert len(set(REPLIES.values())) == len(REPLIES)


def test_reply_for() -> None:
    assert reply_for("Will it rain?") == "It is certain."
    assert reply_for("8-ball: Might we win?\n") == "Signs point to yes."
    with pytest.raises(ValueError):
        reply_for("Is it raining?")
    with pytest.raises(ValueError):
        reply_for("")


def test_verify() -> None:
    example = generate(1, seed=0)[0]
    reply = example["completion"]
    assert verify(example, reply)
    assert verify(example, f" {reply}<eos><pad><pad>")
    assert verify(example, f"<answer>{reply}</answer>")
    wrong = next(r for r in REPLIES.values() if r != reply)
    assert not verify(example, wrong)
    assert not verify(example, reply.rstrip("."))
    assert not verify(example, "")
    assert score(example, reply) == {"accuracy": 1.0}
    assert score(example, wrong) == {"accuracy": 0.0}


def test_verify_recomputes_from_prompt() -> None:
    example = {**generate(1, seed=0)[0], "answer": "nonsense", "completion": "nonsense"}
    assert verify(example, reply_for(example["prompt"]))


def test_extract_reply() -> None:
    assert extract_reply("Outlook good.<eos>junk") == "Outlook good."
    assert extract_reply("<answer> Very doubtful. </answer> trailing") == "Very doubtful."
    assert extract_reply("<answer>Very doubtful.") == "Very doubtful."


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(min_value=-(2**40), max_value=2**40))
def test_property_generated_examples_verify(seed: int) -> None:
    for example in generate(10, seed=seed):
        assert verify(example, example["completion"])
