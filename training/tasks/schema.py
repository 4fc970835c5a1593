"""The example record shared by every bundled task, and how its ids are made.

An example is a plain ``dict`` (it round-trips through JSONL unchanged); :class:`Example` documents its
keys for type checkers. ``id``, ``task``, ``prompt`` and ``completion`` are always present; ``steps``,
``answer`` and ``step_labels`` appear where the task has them.
"""

from __future__ import annotations

from typing import TypedDict


class _ExampleRequired(TypedDict):
    id: str
    task: str
    prompt: str
    completion: str


class Example(_ExampleRequired, total=False):
    """One training/evaluation example.

    ``completion`` is the target text; the trainer feeds ``<bos>`` + prompt + completion + ``<eos>`` and
    masks the prompt out of the loss. ``steps`` are reasoning steps, ``step_labels`` their correctness
    (1.0 correct, 0.0 wrong) and ``answer`` the final answer as text.
    """

    steps: list[str]
    answer: str
    step_labels: list[float]


def make_id(task: str, seed: int, index: int) -> str:
    """Return the id of the ``index``-th example that ``task`` generates for ``seed``.

    Ids are unique within one ``generate`` call and stable: the same seed always yields the same ids.
    """
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    return f"{task}-s{seed}-{index:06d}"
