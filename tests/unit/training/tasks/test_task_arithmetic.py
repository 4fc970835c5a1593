"""Tests for the arithmetic task: generation, completion format, step/answer checks and corruption."""

from __future__ import annotations

import ast
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from training.tasks import arithmetic
from training.tasks.arithmetic import (
    ArithmeticConfig,
    corrupt,
    format_completion,
    generate,
    local_step_verdicts,
    parse_completion,
    score,
    solution,
    verify_answer,
    verify_steps,
)

_PROMPT = re.compile(r"Q(?: \(left to right\))?: ([0-9+\-*]+)=\?\n")


def _eval_standard(expression: str) -> int:
    """Evaluate ``+ - *`` over non-negative integers with Python's precedence, via the AST (no eval)."""

    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.BinOp):
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Add):
                return left + right
            if isinstance(node.op, ast.Sub):
                return left - right
            if isinstance(node.op, ast.Mult):
                return left * right
        raise ValueError(f"unsupported syntax: {ast.dump(node)}")

    return walk(ast.parse(expression, mode="eval").body)


def _eval_left_to_right(expression: str) -> int:
    """Fold the tokens strictly from the left, ignoring precedence."""
    tokens = re.findall(r"\d+|[+\-*]", expression)
    value = int(tokens[0])
    for op, number in zip(tokens[1::2], tokens[2::2], strict=True):
        value = {"+": value + int(number), "-": value - int(number), "*": value * int(number)}[op]
    return value


def _true_value(prompt: str) -> int:
    match = _PROMPT.fullmatch(prompt)
    assert match is not None, prompt
    if "left to right" in prompt:
        return _eval_left_to_right(match[1])
    return _eval_standard(match[1])


def test_evaluators_agree_with_hand_values() -> None:
    assert _eval_standard("7+3*2-4") == 9
    assert _eval_standard("8-2-3") == 3
    assert _eval_left_to_right("7+3*2-4") == 16


# --- generation -----------------------------------------------------------------------------------


def test_generate_is_deterministic_per_seed_and_prefix_stable() -> None:
    first = generate(50, seed=3)
    assert first == generate(50, seed=3)
    assert generate(20, seed=3) == first[:20]
    assert [e["prompt"] for e in generate(50, seed=4)] != [e["prompt"] for e in first]


def test_generate_ids_unique_and_fields_complete() -> None:
    examples = generate(200, seed=0)
    assert len({e["id"] for e in examples}) == 200
    for example in examples:
        assert example["task"] == "arithmetic"
        assert example["prompt"].startswith("Q: ") and example["prompt"].endswith("=?\n")
        assert example["step_labels"] == [1.0] * len(example["steps"])
        assert example["completion"] == format_completion(example["steps"], example["answer"])


def test_generated_answers_match_independent_evaluator() -> None:
    for config in (ArithmeticConfig(), ArithmeticConfig(precedence="left_to_right")):
        for example in generate(200, seed=1, config=config):
            assert int(example["answer"]) == _true_value(example["prompt"])


def test_default_config_shape() -> None:
    examples = generate(300, seed=2)
    op_counts = {len(re.findall(r"[+\-*]", _PROMPT.fullmatch(e["prompt"])[1])) for e in examples}
    assert op_counts == {2, 3}
    for example in examples:
        assert len(example["steps"]) in (2, 3)
        for step in example["steps"]:
            numbers = [int(n) for n in re.findall(r"\d+", step)]
            assert all(0 <= n <= 99 for n in numbers), step
        operands = [int(n) for n in re.findall(r"\d+", example["prompt"])]
        assert all(1 <= n <= 9 for n in operands)


def test_config_options_are_honoured() -> None:
    config = ArithmeticConfig(min_ops=1, max_ops=1, operators=("*",), min_operand=2, max_operand=3)
    for example in generate(30, seed=0, config=config):
        assert re.fullmatch(r"Q: [23]\*[23]=\?\n", example["prompt"]), example["prompt"]
    no_cot = generate(5, seed=0, config=ArithmeticConfig(with_steps=False))
    assert all(e["completion"] == f"<answer>{e['answer']}</answer>" for e in no_cot)
    assert all(e["steps"] for e in no_cot)


def test_negative_values_only_when_allowed() -> None:
    config = ArithmeticConfig(operators=("-",), allow_negative=True, min_ops=3, max_ops=3)
    answers = [int(e["answer"]) for e in generate(100, seed=0, config=config)]
    assert min(answers) < 0
    strict = ArithmeticConfig(operators=("-",), min_ops=2, max_ops=2)
    assert all(int(e["answer"]) >= 0 for e in generate(100, seed=0, config=strict))


def test_invalid_and_unsatisfiable_configs_raise() -> None:
    with pytest.raises(ValidationError):
        ArithmeticConfig(min_ops=3, max_ops=2)
    with pytest.raises(ValidationError):
        ArithmeticConfig(operators=())
    with pytest.raises(ValidationError):
        ArithmeticConfig(max_operand=200)
    impossible = ArithmeticConfig(operators=("-",), min_operand=1, max_operand=1, min_ops=3, max_ops=3)
    with pytest.raises(ValueError, match="too tight"):
        generate(1, seed=0, config=impossible)
    with pytest.raises(ValueError):
        generate(-1, seed=0)


# --- completion format ----------------------------------------------------------------------------


def test_format_completion_matches_spec() -> None:
    steps = ["3*2=6", "7+6=13", "13-4=9"]
    assert format_completion(steps, "9") == (
        "<think><step>3*2=6</step><step>7+6=13</step><step>13-4=9</step></think><answer>9</answer>"
    )
    assert format_completion(steps, "9", with_steps=False) == "<answer>9</answer>"


def test_solution_standard_and_left_to_right() -> None:
    assert solution("Q: 7+3*2-4=?\n") == (["3*2=6", "7+6=13", "13-4=9"], 9)
    assert solution("Q (left to right): 7+3*2-4=?\n") == (["7+3=10", "10*2=20", "20-4=16"], 16)
    assert solution("Q: 2*3*4-5=?\n") == (["2*3=6", "6*4=24", "24-5=19"], 19)
    with pytest.raises(ValueError):
        solution("what is 2+2?")


def test_parse_completion_round_trip_and_tolerance() -> None:
    for example in generate(50, seed=5):
        assert parse_completion(example["completion"]) == (example["steps"], example["answer"])
    assert parse_completion("") == ([], None)
    assert parse_completion("random garbage <step>") == ([], None)
    assert parse_completion("<answer> 9 </answer><eos>") == ([], "9")
    assert parse_completion("<think><step> 3*2=6 </step><step>7+6") == (["3*2=6"], None)
    assert parse_completion("<step>x<step>3*2=6</step><answer>6<eos><pad>") == (["3*2=6"], "6")
    assert parse_completion("<answer>1</answer><step>2+2=4</step>") == ([], "1")


def test_verify_answer() -> None:
    example = generate(1, seed=0)[0]
    true = example["answer"]
    assert verify_answer(example, example["completion"])
    assert verify_answer(example, f"<answer>{true}</answer>")
    assert verify_answer(example, f"<think></think><answer>{true}")
    assert not verify_answer(example, f"<answer>{int(true) + 1}</answer>")
    assert not verify_answer(example, f"<answer>{true}x</answer>")
    assert not verify_answer(example, true)
    assert not verify_answer(example, "<<<garbage>>>")


def test_verify_answer_uses_prompt_not_answer_field() -> None:
    example = {**generate(1, seed=0)[0], "answer": "-12345"}
    assert verify_answer(example, f"<answer>{_true_value(example['prompt'])}</answer>")
    assert not verify_answer(example, "<answer>-12345</answer>")


# --- step verification ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "steps", "expected"),
    [
        ("Q: 7+3*2-4=?\n", ["3*2=6", "7+6=13", "13-4=9"], [True, True, True]),
        ("Q: 7+3*2-4=?\n", ["3*2=6", "7+6=14", "14-4=10"], [True, False, False]),
        ("Q: 7+3*2-4=?\n", ["3*2=6", "7+6=13", "13-4=8"], [True, True, False]),
        # precedence violated: the addition is a correct calculation but done too early
        ("Q: 7+3*2-4=?\n", ["7+3=10", "10*2=20", "20-4=16"], [False, False, False]),
        # a correct calculation whose operand does not come from the question
        ("Q: 7+3*2-4=?\n", ["3*5=15", "7+15=22", "22-4=18"], [False, False, False]),
        # left-associativity: 8-2 must come before 2+3
        ("Q: 8-2+3=?\n", ["2+3=5", "8-5=3"], [False, False]),
        # any order consistent with precedence is accepted
        ("Q: 8-2+3*4=?\n", ["8-2=6", "3*4=12", "6+12=18"], [True, True, True]),
        ("Q: 2*3+4*5=?\n", ["4*5=20", "2*3=6", "6+20=26"], [True, True, True]),
        # within a product chain the leftmost product goes first
        ("Q: 2*3*4=?\n", ["3*4=12", "2*12=24"], [False, False]),
        # steps after the expression is fully reduced, and unreadable steps
        ("Q: 1+2+3=?\n", ["1+2=3", "3+3=6", "6+0=6"], [True, True, False]),
        ("Q: 1+2+3=?\n", ["1 + 2 = 3", "three plus three"], [True, False]),
        ("Q: 1+2+3=?\n", [], []),
        # left-to-right order in the prompt changes which steps are valid
        ("Q (left to right): 7+3*2-4=?\n", ["7+3=10", "10*2=20", "20-4=16"], [True, True, True]),
        ("Q (left to right): 7+3*2-4=?\n", ["3*2=6", "7+6=13", "13-4=9"], [False, False, False]),
    ],
)
def test_verify_steps_cases(prompt: str, steps: list[str], expected: list[bool]) -> None:
    assert verify_steps(prompt, steps) == expected


def test_verify_steps_accepts_example_and_rejects_non_arithmetic() -> None:
    example = generate(1, seed=9)[0]
    assert verify_steps(example, example["steps"]) == [True] * len(example["steps"])
    with pytest.raises(ValueError):
        verify_steps("hello", ["1+1=2"])


# --- corruption -----------------------------------------------------------------------------------


def test_corrupt_labels_match_verifier_and_answer_changes() -> None:
    rng = random.Random(0)
    first_wrong_positions = set()
    for example in generate(150, seed=11):
        bad = corrupt(example, rng)
        labels = bad["step_labels"]
        assert len(bad["steps"]) == len(example["steps"]) == len(labels)
        first_wrong = labels.index(0.0)
        # labels mean "correct given the steps before it": only the mistake is 0
        assert labels == [0.0 if i == first_wrong else 1.0 for i in range(len(labels))]
        assert local_step_verdicts(bad, bad["steps"]) == [label == 1.0 for label in labels]
        # the derivation check still rejects everything from the mistake on
        assert verify_steps(bad, bad["steps"]) == [i < first_wrong for i in range(len(labels))]
        assert bad["steps"][:first_wrong] == example["steps"][:first_wrong]
        assert bad["steps"][first_wrong] != example["steps"][first_wrong]
        assert bad["answer"] != example["answer"]
        assert bad["completion"] == format_completion(bad["steps"], bad["answer"])
        assert not verify_answer(bad, bad["completion"])
        assert bad["prompt"] == example["prompt"] and bad["id"] != example["id"]
        first_wrong_positions.add(first_wrong)
    assert first_wrong_positions == {0, 1, 2}


@pytest.mark.parametrize(("prompt", "steps", "expected"), [
    # a slip, then steps that correctly use the wrong value
    ("Q: 7+3*2-4=?\n", ["3*2=5", "7+5=12", "12-4=8"], [False, True, True]),
    # a wrong step in the middle, then a right one from it
    ("Q: 7+3*2-4=?\n", ["3*2=6", "7+6=14", "14-4=10"], [True, False, True]),
    # a later step that is wrong again, given the wrong value
    ("Q: 7+3*2-4=?\n", ["3*2=5", "7+5=13", "13-4=9"], [False, False, True]),
    # a later step that ignores the written wrong value (uses the true one) is wrong given what came before
    ("Q: 7+3*2-4=?\n", ["3*2=5", "7+6=13", "13-4=9"], [False, False, True]),
    # reduced against precedence (right arithmetic, operator not ready), then consistent steps
    ("Q: 7+3*2=?\n", ["7+3=10", "10*2=20"], [False, True]),
    # a wrong operand (3*4 for 3*2), then the rest from its result
    ("Q: 7+3*2-4=?\n", ["3*4=12", "7+12=19", "19-4=15"], [False, True, True]),
    # ambiguous mistake: 1+1 too early, or 8+1 with a wrong left operand; the next step fits the second
    ("Q: 8+1+1=?\n", ["1+1=2", "2+1=3"], [False, True]),
    # all correct; an unparseable step loses the expression; a step after the end is wrong
    ("Q: 7+3*2-4=?\n", ["3*2=6", "7+6=13", "13-4=9"], [True, True, True]),
    ("Q: 7+3*2-4=?\n", ["3*2=6", "seven plus six", "13-4=9"], [True, False, False]),
    ("Q: 5-1=?\n", ["5-1=4", "4+0=4"], [True, False]),
])
def test_local_step_verdicts_hand_built(prompt: str, steps: list[str], expected: list[bool]) -> None:
    assert local_step_verdicts(prompt, steps) == expected


def test_corrupted_steps_propagate_the_error() -> None:
    rng = random.Random(1)
    for example in generate(100, seed=12):
        bad = corrupt(example, rng)
        last = bad["steps"][-1]
        assert last.endswith(f"={bad['answer']}"), (last, bad["answer"])


def test_corrupt_is_deterministic_and_pure() -> None:
    example = generate(1, seed=2)[0]
    snapshot = dict(example)
    assert corrupt(example, random.Random(7)) == corrupt(example, random.Random(7))
    assert example == snapshot
    variants = {tuple(corrupt(example, random.Random(s))["steps"]) for s in range(30)}
    assert len(variants) > 3


def test_corrupt_stays_in_range_by_default() -> None:
    rng = random.Random(3)
    for example in generate(100, seed=13):
        for step in corrupt(example, rng)["steps"]:
            match = re.fullmatch(r"(-?\d+)[+\-*](-?\d+)=(-?\d+)", step)
            assert match is not None, step
            assert all(0 <= int(n) <= 99 for n in match.groups()), step


def test_corrupt_rejects_non_arithmetic() -> None:
    with pytest.raises(ValueError):
        corrupt({"id": "x", "task": "arithmetic", "prompt": "hi", "completion": ""}, random.Random(0))


# --- scoring --------------------------------------------------------------------------------------


def test_score_metrics() -> None:
    example = generate(1, seed=4)[0]
    assert score(example, example["completion"]) == {"accuracy": 1.0, "answer_found": 1.0, "steps_valid": 1.0}
    answer_only = format_completion([], example["answer"], with_steps=False)
    assert score(example, answer_only) == {"accuracy": 1.0, "answer_found": 1.0, "steps_valid": 0.0}
    bad = corrupt(example, random.Random(0))
    assert score(example, bad["completion"]) == {"accuracy": 0.0, "answer_found": 1.0, "steps_valid": 0.0}
    truncated = format_completion(example["steps"][:-1], example["answer"])
    assert score(example, truncated)["steps_valid"] == 0.0
    assert score(example, "junk") == {"accuracy": 0.0, "answer_found": 0.0, "steps_valid": 0.0}


# --- properties -----------------------------------------------------------------------------------

_configs = st.builds(
    ArithmeticConfig,
    min_ops=st.integers(1, 2),
    max_ops=st.integers(2, 4),
    precedence=st.sampled_from(["standard", "left_to_right"]),
    allow_negative=st.booleans(),
)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(min_value=-(2**40), max_value=2**40), config=_configs)
def test_property_generated_examples_verify(seed: int, config: ArithmeticConfig) -> None:
    for example in generate(5, seed=seed, config=config):
        assert int(example["answer"]) == _true_value(example["prompt"])
        assert verify_steps(example, example["steps"]) == [True] * len(example["steps"])
        assert verify_answer(example, example["completion"])
        assert arithmetic.score(example, example["completion"])["accuracy"] == 1.0


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32), rng_seed=st.integers(min_value=0, max_value=2**32))
def test_property_corruption_is_caught_where_labelled(seed: int, rng_seed: int) -> None:
    example = generate(1, seed=seed)[0]
    bad = corrupt(example, random.Random(rng_seed))
    assert local_step_verdicts(bad, bad["steps"]) == [label == 1.0 for label in bad["step_labels"]]
    assert bad["step_labels"].count(0.0) == 1
    first_wrong = bad["step_labels"].index(0.0)
    assert verify_steps(bad, bad["steps"]) == [i < first_wrong for i in range(len(bad["steps"]))]
    assert not verify_answer(bad, bad["completion"])


@settings(max_examples=60, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("<>/stepanswrhik0123456789+-*= x")), max_size=80))
def test_property_parsers_never_raise_on_garbage(text: str) -> None:
    example = generate(1, seed=0)[0]
    steps, answer = parse_completion(text)
    assert isinstance(steps, list)
    assert answer is None or isinstance(answer, str)
    assert len(verify_steps(example, steps)) == len(steps)
    assert set(score(example, text)) == {"accuracy", "answer_found", "steps_valid"}
