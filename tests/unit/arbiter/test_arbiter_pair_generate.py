"""Generated arithmetic preference pairs: verifier labels, kinds, prompt-disjoint splits and the CLI."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from arbiter.data.__main__ import main
from arbiter.data.generate import (
    DEFAULT_MIX,
    PAIR_KINDS,
    alternative_correct,
    build_splits,
    derivations,
    make_pair,
    malformed,
    pairs_for,
    spaced,
    split_counts,
)
from arbiter.data.rubric import clause_labels, preferred, quality, step_labels
from arbiter.data.schema import read_pairs
from training.data.toy_data import is_heldout
from training.tasks import arithmetic


@pytest.fixture(scope="module")
def examples() -> list[dict]:
    return [dict(e) for e in arithmetic.generate(120, 3)]


def test_rubric_uses_the_task_verifiers() -> None:
    prompt = "Q: 7+3*2-4=?\n"
    good = "<think><step>3*2=6</step><step>7+6=13</step><step>13-4=9</step></think><answer>9</answer>"
    wrong = "<think><step>3*2=5</step><step>7+5=12</step><step>12-4=8</step></think><answer>8</answer>"
    assert clause_labels(prompt, good) == {"answer_correct": 1, "steps_valid": 1, "format_ok": 1}
    assert clause_labels(prompt, wrong) == {"answer_correct": 0, "steps_valid": 0, "format_ok": 1}
    assert clause_labels(prompt, good.replace("</answer>", "")) == {
        "answer_correct": 1, "steps_valid": 1, "format_ok": 0}
    assert clause_labels(prompt, "<answer>9</answer>") == {"answer_correct": 1, "steps_valid": 0, "format_ok": 0}
    # only the wrong step is 0: the later ones compute correctly from the wrong value written before them
    assert step_labels(prompt, wrong) == (["3*2=5", "7+5=12", "12-4=8"], [0.0, 1.0, 1.0])
    late = "<think><step>3*2=6</step><step>7+6=13</step><step>13-4=8</step></think><answer>8</answer>"
    assert step_labels(prompt, late)[1] == [1.0, 1.0, 0.0]
    assert preferred(clause_labels(prompt, good), clause_labels(prompt, wrong)) == "a"
    assert preferred(clause_labels(prompt, "<answer>9</answer>"), clause_labels(prompt, wrong)) == "a"
    assert preferred(clause_labels(prompt, wrong), clause_labels(prompt, late)) == "tie"
    assert quality({"answer_correct": 1, "steps_valid": 0, "format_ok": 1}) == (1, 0, 1)


def test_every_generated_label_matches_the_verifiers(examples: list[dict]) -> None:
    pairs = pairs_for(examples, seed=0)
    assert {p.kind for p in pairs} == set(PAIR_KINDS)
    for pair in pairs:
        ca, cb = clause_labels(pair.prompt, pair.a), clause_labels(pair.prompt, pair.b)
        assert (pair.clauses_a, pair.clauses_b) == (ca, cb)
        assert pair.winner == preferred(ca, cb)
        assert (pair.steps_a, pair.step_labels_a) == step_labels(pair.prompt, pair.a)
        assert (pair.steps_b, pair.step_labels_b) == step_labels(pair.prompt, pair.b)
        assert pair.a != pair.b


@pytest.mark.parametrize("kind", PAIR_KINDS)
def test_pair_kinds_have_the_intended_outcome(examples: list[dict], kind: str) -> None:
    outcomes = []
    for index, example in enumerate(examples[:40]):
        pair = make_pair(example, kind, random.Random(index))
        if pair.kind != kind:  # fallbacks are allowed but must be rare
            continue
        outcomes.append(pair.winner)
        gold_side = "a" if pair.a == example["completion"] else "b"
        if kind == "correct_vs_corrupt":
            assert pair.winner == gold_side
            wrong_labels = pair.step_labels("b" if gold_side == "a" else "a")  # type: ignore[arg-type]
            assert wrong_labels is not None and 0.0 in wrong_labels
        elif kind == "correct_vs_malformed":
            assert pair.winner == gold_side
            assert pair.clauses(gold_side)["format_ok"] == 1  # type: ignore[index]
        elif kind == "tie_correct":
            assert pair.clauses_a == pair.clauses_b == {"answer_correct": 1, "steps_valid": 1, "format_ok": 1}
        elif kind == "tie_wrong":
            assert pair.step_labels_a == pair.step_labels_b
            assert pair.clauses_a == pair.clauses_b and pair.clauses_a["answer_correct"] == 0  # type: ignore[index]
        else:
            malformed_side = "a" if pair.clauses("a")["format_ok"] == 0 else "b"  # type: ignore[index]
            assert pair.winner == malformed_side
    assert len(outcomes) >= 30
    if kind.startswith("tie"):
        assert set(outcomes) == {"tie"}
    else:
        assert "tie" not in outcomes and {"a", "b"} <= set(outcomes)


def test_correct_alternatives_are_valid_and_different() -> None:
    prompt = "Q: 6+6+2*8=?\n"
    assert sorted(derivations(prompt)) == [["2*8=16", "6+6=12", "12+16=28"], ["6+6=12", "2*8=16", "12+16=28"]]
    example = {"prompt": prompt, "steps": ["2*8=16", "6+6=12", "12+16=28"], "answer": "28"}
    alternative = alternative_correct(example, random.Random(0))
    assert alternative == "<think><step>6+6=12</step><step>2*8=16</step><step>12+16=28</step></think><answer>28</answer>"
    forced = {"prompt": "Q: 9+3-2=?\n", "steps": ["9+3=12", "12-2=10"], "answer": "10"}
    assert derivations(forced["prompt"]) == [["9+3=12", "12-2=10"]]
    written = alternative_correct(forced, random.Random(0))
    assert "<step>9 + 3 = 12</step>" in written
    assert clause_labels(forced["prompt"], written) == {"answer_correct": 1, "steps_valid": 1, "format_ok": 1}
    assert spaced("23-3=20") == "23 - 3 = 20"


def test_malformations_break_only_the_format() -> None:
    gold = "<think><step>3*2=6</step></think><answer>6</answer>"
    seen = {malformed(gold, random.Random(seed)) for seed in range(30)}
    assert seen == {"<think><step>3*2=6</step></think><answer>6", "<think><step>3*2=6</step><answer>6</answer>",
                    "<answer>6</answer>"}
    for text in seen:
        assert clause_labels("Q: 3*2=?\n", text)["format_ok"] == 0


def test_splits_are_prompt_disjoint_and_test_is_held_out() -> None:
    splits = build_splits(150, 30, 40, seed=1)
    assert [len(splits[name]) for name in ("train", "val", "test")] == [150, 30, 40]
    prompts = {name: [p.prompt for p in pairs] for name, pairs in splits.items()}
    for name, values in prompts.items():
        assert len(values) == len(set(values)), f"{name} repeats a prompt"
    assert not set(prompts["train"]) & set(prompts["val"])
    assert all(is_heldout(p) for p in prompts["test"])
    assert not any(is_heldout(p) for p in prompts["train"] + prompts["val"])
    assert build_splits(150, 30, 40, seed=1) == splits
    assert build_splits(150, 30, 40, seed=2)["train"] != splits["train"]


def test_mix_and_counts_are_validated(examples: list[dict]) -> None:
    with pytest.raises(ValueError, match="unknown pair kinds"):
        pairs_for(examples[:2], seed=0, mix={"bogus": 1.0})
    with pytest.raises(ValueError, match="positive sum"):
        pairs_for(examples[:2], seed=0, mix={"tie_correct": 0.0})
    only_ties = pairs_for(examples[:20], seed=0, mix={"tie_correct": 1.0})
    assert {p.winner for p in only_ties} == {"tie"}
    assert split_counts(100, 0.1, 0.2) == (70, 10, 20)
    assert split_counts(5, 0.01, 0.0) == (4, 1, 0)
    with pytest.raises(ValueError, match="too few"):
        split_counts(2, 0.5, 0.5 - 1e-9)
    with pytest.raises(ValueError, match="val_frac"):
        split_counts(10, 1.0, 0.0)
    assert abs(sum(DEFAULT_MIX.values()) - 1.0) < 1e-9


def test_cli_writes_readable_splits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--n", "60", "--out", str(tmp_path), "--seed", "4"]) == 0
    pairs = {name: read_pairs(tmp_path / f"{name}.jsonl") for name in ("train", "val", "test")}
    assert [len(pairs[n]) for n in ("train", "val", "test")] == [48, 6, 6]
    assert all(is_heldout(p.prompt) for p in pairs["test"])
    assert "train.jsonl: 48 pairs" in capsys.readouterr().out


def test_cli_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--n", "0", "--out", str(tmp_path)])
    assert caught.value.code == 2
    with pytest.raises(SystemExit):
        main(["--n", "3", "--val-frac", "0.5", "--test-frac", "0.5", "--out", str(tmp_path)])
    assert not (tmp_path / "train.jsonl").exists()
