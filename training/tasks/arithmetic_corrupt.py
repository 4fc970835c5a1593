"""Plausibly wrong arithmetic solutions, for process supervision and judge training.

One step of the canonical solution is replaced by a typical mistake and the rest of the solution is
recomputed from the wrong value, so the error propagates to the final answer the way it would for a
model. Only the mistake is labelled wrong: the later steps are right given what was written before them. Mistake kinds:

* ``slip``: the right operation with a result that is off by 1, 2 or 10;
* ``wrong_op``: the written operator but another operator's result (``3*2=5``);
* ``operand``: a number from elsewhere in the expression used in place of an operand (``3*4=12``);
* ``order``: an operator reduced too early, against precedence or left associativity (``7+3=10``).

A candidate is kept only if the checker rejects the wrong step and the final answer changes.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from training.tasks.arithmetic_config import ArithmeticConfig, Precedence
from training.tasks.arithmetic_solver import (
    OPERATORS,
    State,
    Step,
    advance,
    apply,
    canonical_op,
    parse_prompt,
    ready_ops,
    reduce,
    solve,
)
from training.tasks.markup import format_completion
from training.tasks.schema import Example

_SLIPS: tuple[int, ...] = (-10, -2, -1, 1, 2, 10)


@dataclass(frozen=True)
class _Candidate:
    index: int
    kind: str
    steps: tuple[Step, ...]
    answer: int


def _mistakes(state: State, precedence: Precedence) -> list[tuple[str, State, Step]]:
    """Every wrong step (kind, state after it, step) that can be made from ``state``."""
    index = canonical_op(state, precedence)
    left, op, right = state.numbers[index], state.ops[index], state.numbers[index + 1]
    true_value = apply(op, left, right)
    out: list[tuple[str, State, Step]] = []
    for delta in _SLIPS:
        after, step = reduce(state, index, true_value + delta)
        out.append(("slip", after, step))
    for other in OPERATORS:
        value = apply(other, left, right)
        if other != op and value != true_value:
            after, step = reduce(state, index, value)
            out.append(("wrong_op", after, step))
    others = sorted({n for j, n in enumerate(state.numbers) if j not in (index, index + 1)})
    for number in others:
        for wrong_left, wrong_right in ((number, right), (left, number)):
            value = apply(op, wrong_left, wrong_right)
            after = reduce(state, index, value)[0]
            out.append(("operand", after, Step(wrong_left, op, wrong_right, value)))
    ready = ready_ops(state, precedence)
    for early in range(len(state.ops)):
        if early not in ready:
            after, step = reduce(state, early)
            out.append(("order", after, step))
    return out


def _candidates(state: State, precedence: Precedence) -> list[_Candidate]:
    """All corrupted solutions the checker rejects at the mistake and that change the final answer."""
    true_steps, true_answer = solve(state, precedence)
    out: list[_Candidate] = []
    current = state
    for index in range(len(true_steps)):
        for kind, after, step in _mistakes(current, precedence):
            if advance(current, step, precedence) is not None:
                continue
            rest, answer = solve(after, precedence)
            if answer != true_answer:
                out.append(_Candidate(index, kind, (*true_steps[:index], step, *rest), answer))
        current = reduce(current, canonical_op(current, precedence))[0]
    return out


def _pick(candidates: list[_Candidate], rng: random.Random) -> _Candidate:
    """Uniform over mistake positions, then over kinds there, then over variants."""
    indices = sorted({c.index for c in candidates})
    index = rng.choice(indices)
    kinds = sorted({c.kind for c in candidates if c.index == index})
    kind = rng.choice(kinds)
    return rng.choice([c for c in candidates if c.index == index and c.kind == kind])


def _in_range(candidate: _Candidate, config: ArithmeticConfig) -> bool:
    values = [v for step in candidate.steps for v in (step.left, step.right, step.result)]
    return all(config.in_range(v) for v in values)


def corrupt(example: Example, rng: random.Random, config: ArithmeticConfig | None = None) -> Example:
    """Return a copy of ``example`` whose solution has one plausible wrong step.

    The solution is rebuilt from the prompt (so an already corrupted example is corrupted afresh), one
    step is replaced by a mistake, and the later steps and the answer follow from it. ``step_labels`` mean
    "this step is correct given the steps before it": 0.0 at the mistake only, 1.0 elsewhere, including the
    later steps, which correctly compute from the wrong value (what
    :func:`training.tasks.arithmetic.local_step_verdicts` checks; :func:`~training.tasks.arithmetic.verify_steps`
    still rejects everything from the mistake on, since the derivation is no longer valid). Mistakes whose numbers stay within ``config``'s range
    (default settings when ``None``) are preferred. The new ``id`` is derived from the old one and the
    new completion. Raises ``ValueError`` if the prompt is not an arithmetic question or no mistake can
    change its answer.
    """
    parsed = parse_prompt(example["prompt"])
    if parsed is None:
        raise ValueError(f"not an arithmetic prompt: {example['prompt']!r}")
    state, precedence = parsed
    candidates = _candidates(state, precedence)
    preferred = [c for c in candidates if _in_range(c, config or ArithmeticConfig())]
    if not candidates:
        raise ValueError(f"no corruption changes the answer of {state.render()}")
    chosen = _pick(preferred or candidates, rng)
    steps = [step.render() for step in chosen.steps]
    answer = str(chosen.answer)
    completion = format_completion(steps, answer, with_steps=True)
    digest = hashlib.sha1(completion.encode("utf-8")).hexdigest()[:8]
    labels = [0.0 if i == chosen.index else 1.0 for i in range(len(steps))]
    return {
        **example,
        "id": f"{example['id']}-corrupt-{digest}",
        "completion": completion,
        "steps": steps,
        "answer": answer,
        "step_labels": labels,
    }
