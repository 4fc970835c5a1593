"""Train/val/test splits that never share a prompt."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from training.tasks.schema import Example


@dataclass(frozen=True)
class Splits:
    """Examples per split, each in generation order."""

    train: list[Example]
    val: list[Example]
    test: list[Example]


def _share(fraction: float, total: int) -> int:
    """Number of prompts for a split: rounded, but at least one when the fraction is positive."""
    if fraction <= 0 or total == 0:
        return 0
    return max(1, round(fraction * total))


def split_by_prompt(examples: Sequence[Example], val_frac: float, test_frac: float, seed: int) -> Splits:
    """Split ``examples`` so that all examples with the same prompt land in the same split.

    The fractions apply to the distinct prompts, which are shuffled with ``seed``; val and test each get
    at least one prompt when their fraction is positive, and train keeps at least one. Raises
    ``ValueError`` for fractions outside ``[0, 1)``, a sum of 1 or more, or too few distinct prompts.
    """
    for label, fraction in (("val_frac", val_frac), ("test_frac", test_frac)):
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"{label} must be in [0, 1), got {fraction}")
    if val_frac + test_frac >= 1.0:
        raise ValueError(f"val_frac + test_frac must be < 1, got {val_frac + test_frac}")
    prompts = list(dict.fromkeys(example["prompt"] for example in examples))
    n_val, n_test = _share(val_frac, len(prompts)), _share(test_frac, len(prompts))
    if prompts and n_val + n_test >= len(prompts):
        raise ValueError(
            f"{len(prompts)} distinct prompts are too few for val {n_val} + test {n_test} + train"
        )
    random.Random(f"split:{seed}").shuffle(prompts)
    split_of = {prompt: "val" for prompt in prompts[:n_val]}
    split_of.update({prompt: "test" for prompt in prompts[n_val : n_val + n_test]})
    return Splits(
        train=[e for e in examples if split_of.get(e["prompt"], "train") == "train"],
        val=[e for e in examples if split_of.get(e["prompt"]) == "val"],
        test=[e for e in examples if split_of.get(e["prompt"]) == "test"],
    )
