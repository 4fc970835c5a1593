"""Labels for arithmetic responses, computed by the task's own verifiers (never by construction).

Clauses of one response to an arithmetic prompt:

* ``answer_correct``: the ``<answer>`` is the true value (:func:`training.tasks.arithmetic.verify_answer`);
* ``steps_valid``: every step checks, the steps reduce the whole expression and the answer is the last
  step's result (``steps_valid`` of :func:`training.tasks.arithmetic.score`);
* ``format_ok``: the response is exactly ``<think>`` + one or more ``<step>...</step>`` + ``</think>`` +
  ``<answer>INTEGER</answer>``.

Step labels are :func:`training.tasks.arithmetic.local_step_verdicts` as 1.0 / 0.0: whether a step is
correct given the prompt and the steps before it as written (a step that correctly computes from an
earlier wrong result is 1.0; only the wrong step itself is 0.0), the same meaning as the corruptor's
``step_labels`` and as the judge's step scores. One response is better than another when its clause tuple ``(answer_correct, steps_valid,
format_ok)`` is larger lexicographically; equal tuples are a tie.
"""

from __future__ import annotations

import re

from arbiter.data.schema import Winner, step_spans
from training.tasks import arithmetic

CLAUSES: tuple[str, ...] = ("answer_correct", "steps_valid", "format_ok")
_FORMAT = re.compile(r"<think>(?:<step>[^<]+</step>)+</think><answer>-?\d+</answer>")


def clause_labels(prompt: str, response: str) -> dict[str, int]:
    """The three clause labels (0/1) of ``response`` to the arithmetic ``prompt``."""
    example = {"id": "", "task": arithmetic.TASK_NAME, "prompt": prompt, "completion": ""}
    scores = arithmetic.score(example, response)  # type: ignore[arg-type]
    return {
        "answer_correct": int(scores["accuracy"]),
        "steps_valid": int(scores["steps_valid"]),
        "format_ok": int(_FORMAT.fullmatch(response) is not None),
    }


def step_labels(prompt: str, response: str) -> tuple[list[str], list[float]]:
    """The response's steps (its ``<step>`` spans) and their labels (1.0 correct given the earlier steps,
    0.0 not; :func:`training.tasks.arithmetic.local_step_verdicts`)."""
    steps = step_spans(response)
    return steps, [1.0 if ok else 0.0 for ok in arithmetic.local_step_verdicts(prompt, steps)]


def quality(clauses: dict[str, int]) -> tuple[int, ...]:
    """The ordering key of a response: its clause labels in :data:`CLAUSES` order."""
    return tuple(clauses[name] for name in CLAUSES)


def preferred(clauses_a: dict[str, int], clauses_b: dict[str, int]) -> Winner:
    """``"a"``, ``"b"`` or ``"tie"`` by comparing :func:`quality` lexicographically."""
    qa, qb = quality(clauses_a), quality(clauses_b)
    if qa == qb:
        return "tie"
    return "a" if qa > qb else "b"
