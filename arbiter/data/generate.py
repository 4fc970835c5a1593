"""Preference pairs for the bundled arithmetic task: correct, corrupted and malformed solutions.

Every pair holds two responses to one prompt; their labels and the winner come from
:mod:`arbiter.data.rubric` (the task verifiers). Pair kinds:

* ``correct_vs_corrupt``: the canonical solution against :func:`training.tasks.arithmetic.corrupt` (one
  plausible wrong step whose error propagates to the answer);
* ``correct_vs_malformed``: the canonical solution against a broken rendering of it (``</answer>`` or
  ``</think>`` dropped, or the reasoning removed);
* ``malformed_vs_corrupt``: a broken rendering of the right answer against a wrong solution;
* ``tie_correct``: two correct solutions written differently (another valid order of operations where
  the expression allows one, else spaces around operators);
* ``tie_wrong``: two different corruptions whose first wrong step is the same (equally wrong).

Sides are shuffled. Splits are prompt-disjoint; the test split uses held-out prompts only
(:func:`training.data.toy_data.is_heldout`), train and val never do.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from arbiter.data.rubric import clause_labels, preferred, step_labels
from arbiter.data.schema import PreferencePair
from training.data.toy_data import task_examples
from training.tasks import arithmetic
from training.tasks.arithmetic_solver import parse_prompt, ready_ops, reduce
from training.tasks.markup import format_completion

PAIR_KINDS: tuple[str, ...] = (
    "correct_vs_corrupt", "correct_vs_malformed", "malformed_vs_corrupt", "tie_correct", "tie_wrong",
)
DEFAULT_MIX: dict[str, float] = {
    "correct_vs_corrupt": 0.5,
    "correct_vs_malformed": 0.1,
    "malformed_vs_corrupt": 0.1,
    "tie_correct": 0.15,
    "tie_wrong": 0.15,
}
MALFORMATIONS: tuple[str, ...] = ("no_answer_close", "no_think_close", "answer_only")
_TIE_WRONG_DRAWS = 24
_MAX_DERIVATIONS = 32


def derivations(prompt: str, limit: int = _MAX_DERIVATIONS) -> list[list[str]]:
    """Up to ``limit`` valid step sequences for ``prompt`` (every order of ready operators)."""
    parsed = parse_prompt(prompt)
    if parsed is None:
        raise ValueError(f"not an arithmetic prompt: {prompt!r}")
    start, precedence = parsed
    found: list[list[str]] = []
    stack = [(start, [])]
    while stack and len(found) < limit:
        state, steps = stack.pop()
        if state.done:
            found.append(steps)
            continue
        for index in reversed(ready_ops(state, precedence)):
            after, step = reduce(state, index)
            stack.append((after, [*steps, step.render()]))
    return found


def spaced(step: str) -> str:
    """``3*6=18`` -> ``3 * 6 = 18`` (the same step, written differently)."""
    out = step[0]
    for char in step[1:]:
        out += f" {char} " if char in "+-*=" and out[-1] not in " +-*=" else char
    return out


def alternative_correct(example: Mapping[str, Any], rng: random.Random) -> str:
    """A correct solution that differs from the canonical completion in text."""
    canonical = list(example["steps"])
    others = [steps for steps in derivations(example["prompt"]) if steps != canonical]
    steps = rng.choice(others) if others else [spaced(step) for step in canonical]
    return format_completion(steps, example["answer"])


def malformed(completion: str, rng: random.Random) -> str:
    """A broken rendering of ``completion`` (one of :data:`MALFORMATIONS`)."""
    kind = rng.choice(MALFORMATIONS)
    if kind == "no_answer_close":
        return completion.replace("</answer>", "")
    if kind == "no_think_close":
        return completion.replace("</think>", "")
    answer_at = completion.index("<answer>")
    return completion[answer_at:]


def corrupted(example: Mapping[str, Any], rng: random.Random) -> dict[str, Any]:
    """:func:`training.tasks.arithmetic.corrupt` of the example (``ValueError`` when none exists)."""
    return dict(arithmetic.corrupt(dict(example), rng))  # type: ignore[arg-type]


def _two_wrong(example: Mapping[str, Any], rng: random.Random) -> tuple[str, str] | None:
    """Two different corruptions with the same step labels, or ``None`` when none are found."""
    first = corrupted(example, rng)
    for _ in range(_TIE_WRONG_DRAWS):
        second = corrupted(example, rng)
        if second["completion"] != first["completion"] and second["step_labels"] == first["step_labels"]:
            return first["completion"], second["completion"]
    return None


def _responses(example: Mapping[str, Any], kind: str, rng: random.Random) -> tuple[str, str, str]:
    """(first, second, kind used); falls back to another kind when the prompt cannot make this one."""
    gold = str(example["completion"])
    try:
        if kind == "correct_vs_corrupt":
            return gold, corrupted(example, rng)["completion"], kind
        if kind == "malformed_vs_corrupt":
            return malformed(gold, rng), corrupted(example, rng)["completion"], kind
        if kind == "tie_wrong":
            wrong = _two_wrong(example, rng)
            if wrong is not None:
                return wrong[0], wrong[1], kind
            return gold, corrupted(example, rng)["completion"], "correct_vs_corrupt"
    except ValueError:
        return gold, malformed(gold, rng), "correct_vs_malformed"
    if kind == "tie_correct":
        return gold, alternative_correct(example, rng), kind
    if kind == "correct_vs_malformed":
        return gold, malformed(gold, rng), kind
    raise ValueError(f"unknown pair kind {kind!r}; known kinds: {', '.join(PAIR_KINDS)}")


def make_pair(example: Mapping[str, Any], kind: str, rng: random.Random) -> PreferencePair:
    """One labelled pair of ``kind`` for an arithmetic example (sides shuffled with ``rng``)."""
    first, second, used = _responses(example, kind, rng)
    if rng.random() < 0.5:
        first, second = second, first
    prompt = str(example["prompt"])
    clauses_a, clauses_b = clause_labels(prompt, first), clause_labels(prompt, second)
    steps_a, labels_a = step_labels(prompt, first)
    steps_b, labels_b = step_labels(prompt, second)
    return PreferencePair(
        id=f"{example['id']}-{used}", kind=used, prompt=prompt, a=first, b=second,
        winner=preferred(clauses_a, clauses_b), clauses_a=clauses_a, clauses_b=clauses_b,
        steps_a=steps_a, step_labels_a=labels_a, steps_b=steps_b, step_labels_b=labels_b,
    )


def _check_mix(mix: Mapping[str, float]) -> None:
    unknown = sorted(set(mix) - set(PAIR_KINDS))
    if unknown:
        raise ValueError(f"unknown pair kinds {unknown}; known kinds: {', '.join(PAIR_KINDS)}")
    if any(weight < 0 for weight in mix.values()) or sum(mix.values()) <= 0:
        raise ValueError(f"pair kind weights must be >= 0 with a positive sum, got {dict(mix)}")


def pairs_for(examples: list[dict[str, Any]], seed: int, mix: Mapping[str, float] | None = None
              ) -> list[PreferencePair]:
    """One pair per example, its kind drawn from ``mix`` (default :data:`DEFAULT_MIX`); deterministic."""
    mix = dict(DEFAULT_MIX if mix is None else mix)
    _check_mix(mix)
    kinds, weights = list(mix), list(mix.values())
    pairs = []
    for example in examples:
        rng = random.Random(f"arbiter:{seed}:{example['id']}:{example['prompt']}")
        kind = rng.choices(kinds, weights=weights)[0]
        pairs.append(make_pair(example, kind, rng))
    return pairs


def split_counts(n: int, val_frac: float, test_frac: float) -> tuple[int, int, int]:
    """(train, val, test) pair counts for ``n`` pairs; val and test get at least one when their fraction
    is positive and train keeps at least one."""
    for name, fraction in (("val_frac", val_frac), ("test_frac", test_frac)):
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {fraction}")
    n_val = max(1, round(n * val_frac)) if val_frac > 0 else 0
    n_test = max(1, round(n * test_frac)) if test_frac > 0 else 0
    if n - n_val - n_test < 1:
        raise ValueError(f"{n} pairs are too few for val {n_val} + test {n_test} + at least one train pair")
    return n - n_val - n_test, n_val, n_test


def build_splits(n_train: int, n_val: int, n_test: int, seed: int, mix: Mapping[str, float] | None = None
                 ) -> dict[str, list[PreferencePair]]:
    """Prompt-disjoint ``train``/``val``/``test`` pairs: one prompt per pair, test prompts held out."""
    for name, count in (("train", n_train), ("val", n_val), ("test", n_test)):
        if count < 0:
            raise ValueError(f"the {name} count must be >= 0, got {count}")
    seen = task_examples(arithmetic.TASK_NAME, n_train + n_val, seed, heldout=False) if n_train + n_val else []
    heldout = task_examples(arithmetic.TASK_NAME, n_test, seed, heldout=True) if n_test else []
    return {
        "train": pairs_for(seen[:n_train], seed, mix),
        "val": pairs_for(seen[n_train:], seed, mix),
        "test": pairs_for(heldout, seed, mix),
    }
