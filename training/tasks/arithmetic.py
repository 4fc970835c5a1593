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
from training.tasks.arithmetic_solver import State, advance, format_prompt, parse_prompt, parse_step, solve
from training.tasks.markup import format_completion, parse_completion
from training.tasks.schema import Example, make_id

__all__ = [
    "TASK_NAME",
    "ArithmeticConfig",
    "corrupt",
    "format_completion",
    "generate",
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
