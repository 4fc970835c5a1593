"""Multi-step arithmetic with reasoning steps: generation, checking and scoring.

A question ``Q: 7+3*2-4=?\\n`` is solved one binary operation per step, ``*`` first, then left to right
(see :mod:`training.tasks.arithmetic_solver` for the order rules and
:class:`~training.tasks.arithmetic_config.ArithmeticConfig` for the settings). The completion is
``<think><step>3*2=6</step><step>7+6=13</step><step>13-4=9</step></think><answer>9</answer>``, or
``<answer>9</answer>`` with ``with_steps=False``.

The true answer is always recomputed from the prompt, so checking never trusts an example's own
``answer`` field (which is wrong on purpose for corrupted examples).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from training.tasks.arithmetic_config import ArithmeticConfig
from training.tasks.arithmetic_corrupt import corrupt
from training.tasks.arithmetic_solver import (
    State,
    Step,
    advance,
    format_prompt,
    parse_prompt,
    parse_step,
    reduce,
    solve,
)
from training.tasks.markup import format_completion, parse_completion
from training.tasks.schema import Example, make_id

__all__ = [
    "TASK_NAME",
    "ArithmeticConfig",
    "corrupt",
    "format_completion",
    "generate",
    "local_step_verdicts",
    "parse_completion",
    "score",
    "solution",
    "verify_answer",
    "verify_steps",
]

TASK_NAME = "arithmetic"
_MAX_DRAWS = 10_000
_INT_RE = re.compile(r"-?\d+")


def _draw_state(rng: random.Random, config: ArithmeticConfig) -> State:
    """Draw an expression whose intermediate results all lie in the configured range."""
    for _ in range(_MAX_DRAWS):
        n_ops = rng.randint(config.min_ops, config.max_ops)
        numbers = tuple(rng.randint(config.min_operand, config.max_operand) for _ in range(n_ops + 1))
        ops = tuple(rng.choice(config.operators) for _ in range(n_ops))
        state = State(numbers, ops)
        steps, _ = solve(state, config.precedence)
        if all(config.in_range(step.result) for step in steps):
            return state
    raise ValueError(f"no expression within range after {_MAX_DRAWS} draws; config too tight: {config}")


def generate(n: int, seed: int, config: ArithmeticConfig | None = None) -> list[Example]:
    """Generate ``n`` solved questions, deterministically for ``seed`` and ``config``.

    Every example carries its canonical ``steps`` and ``step_labels`` of 1.0. Prompts may repeat (the
    split CLI keeps repeats in one split). The first ``k`` examples do not depend on ``n``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    config = config or ArithmeticConfig()
    rng = random.Random(f"{TASK_NAME}:{seed}")
    examples: list[Example] = []
    for index in range(n):
        state = _draw_state(rng, config)
        steps, value = solve(state, config.precedence)
        rendered = [step.render() for step in steps]
        answer = str(value)
        examples.append(
            {
                "id": make_id(TASK_NAME, seed, index),
                "task": TASK_NAME,
                "prompt": format_prompt(state, config.precedence),
                "completion": format_completion(rendered, answer, with_steps=config.with_steps),
                "steps": rendered,
                "answer": answer,
                "step_labels": [1.0] * len(rendered),
            }
        )
    return examples


def solution(prompt: str) -> tuple[list[str], int]:
    """The canonical steps and the true value for an arithmetic prompt (``ValueError`` if it is not one)."""
    parsed = parse_prompt(prompt)
    if parsed is None:
        raise ValueError(f"not an arithmetic prompt: {prompt!r}")
    steps, value = solve(*parsed)
    return [step.render() for step in steps], value


def _parse_int(text: str | None) -> int | None:
    if text is None or _INT_RE.fullmatch(text.strip()) is None:
        return None
    return int(text)


def verify_answer(example: Example, generated_text: str) -> bool:
    """Whether the ``<answer>`` in ``generated_text`` is the true value of the example's question."""
    _, answer = parse_completion(generated_text)
    given = _parse_int(answer)
    return given is not None and given == solution(example["prompt"])[1]


def verify_steps(prompt_or_example: str | Example, steps: Sequence[str]) -> list[bool]:
    """Check each step: a correct calculation that reduces an operator that is ready at that point.

    Operands must be the question's numbers or results of earlier steps, in an order allowed by the
    question's evaluation order (any ready operator is fine, not only the canonical one). Once a step
    fails, the ones after it are not part of a valid derivation and are all ``False``; steps after the
    expression is fully reduced are ``False`` too.
    """
    prompt = prompt_or_example if isinstance(prompt_or_example, str) else prompt_or_example["prompt"]
    parsed = parse_prompt(prompt)
    if parsed is None:
        raise ValueError(f"not an arithmetic prompt: {prompt!r}")
    state: State | None = parsed[0]
    precedence = parsed[1]
    verdicts: list[bool] = []
    for text in steps:
        step = parse_step(text)
        if state is not None:
            state = None if step is None or state.done else advance(state, step, precedence)
        verdicts.append(state is not None)
    return verdicts


def claimed_operators(state: State, step: Step) -> list[int]:
    """The operators of ``state`` that a wrong ``step`` may have meant to reduce: those with the step's
    symbol whose left and/or right number the step names (a slip ``3*2=5`` or an early reduction
    ``7+3=10`` names both operands, a wrong operand ``3*4=12`` for ``3*2`` one). Several can fit: in
    ``8+1+1`` the step ``1+1=2`` is ``1+1`` reduced too early or ``8+1`` with a wrong left operand."""
    return [index for index, op in enumerate(state.ops)
            if op == step.op and (state.numbers[index] == step.left or state.numbers[index + 1] == step.right)]


def local_step_verdicts(prompt_or_example: str | Example, steps: Sequence[str]) -> list[bool]:
    """Whether each step is correct **given the steps before it, as written**.

    Unlike :func:`verify_steps` (a valid derivation from the question, all ``False`` after the first
    error), a wrong step's result is carried forward: a later step that correctly reduces a ready operator
    of the expression as the earlier steps left it (wrong values included) is ``True``. A step is ``False``
    when its own calculation is wrong, when it reduces an operator that is not ready, or when its operands
    are not the numbers there.

    A wrong step's written result replaces the operator it meant to reduce; when that is ambiguous
    (:func:`claimed_operators`) every reading is kept and a later step is ``True`` if it is right under
    one of them. When no operator fits (or a step cannot be parsed, or comes after the expression is
    reduced), the expression is lost and the remaining steps are ``False``.

    Example: for ``Q: 7+3*2-4=?`` the steps ``3*2=5, 7+5=12, 12-4=8`` give ``[False, True, True]``.
    """
    prompt = prompt_or_example if isinstance(prompt_or_example, str) else prompt_or_example["prompt"]
    parsed = parse_prompt(prompt)
    if parsed is None:
        raise ValueError(f"not an arithmetic prompt: {prompt!r}")
    states: list[State] = [parsed[0]]
    precedence = parsed[1]
    verdicts: list[bool] = []
    for text in steps:
        step = parse_step(text)
        live = [s for s in states if not s.done]
        if step is None or not live:
            states = []
            verdicts.append(False)
            continue
        advanced = [after for s in live if (after := advance(s, step, precedence)) is not None]
        verdicts.append(bool(advanced))
        if not advanced:
            advanced = [reduce(s, i, step.result)[0] for s in live for i in claimed_operators(s, step)]
        states = list(dict.fromkeys(advanced))
    return verdicts


def score(example: Example, generated_text: str) -> dict[str, float]:
    """Per-example metrics (1.0/0.0).

    ``accuracy``: the answer is right. ``answer_found``: an ``<answer>`` with an integer was produced.
    ``steps_valid``: there are steps, all pass :func:`verify_steps`, they reduce the whole expression and
    the answer equals the last step's result (always 0.0 for answer-only completions).
    """
    steps, answer = parse_completion(generated_text)
    given = _parse_int(answer)
    expected_steps, value = solution(example["prompt"])
    last = parse_step(steps[-1]) if steps else None
    chain_ok = (
        len(steps) == len(expected_steps)
        and all(verify_steps(example["prompt"], steps))
        and last is not None
        and given == last.result
    )
    return {
        "accuracy": float(given is not None and given == value),
        "answer_found": float(given is not None),
        "steps_valid": float(chain_ok),
    }
