"""Bundled tasks, generated locally: a registry with one small interface for all of them.

``TASKS[name].generate(n, seed)`` gives examples (see :class:`~training.tasks.schema.Example`),
``.score(example, generated_text)`` per-example metrics (at least ``accuracy``, 1.0 or 0.0) and
``.sample_texts(n, seed)`` prompt+completion strings for tokenizer training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from training.tasks import arithmetic, eightball, toolcall
from training.tasks.schema import Example

__all__ = ["TASKS", "Example", "Task", "get_task"]


@dataclass(frozen=True)
class Task:
    """A bundled task with default settings.

    ``generate(n, seed)`` is deterministic for a seed; ``score(example, generated_text)`` returns
    1.0/0.0 metrics including ``accuracy`` (plus task-specific ones such as ``valid_json``).
    """

    name: str
    description: str
    generate: Callable[[int, int], list[Example]]
    score: Callable[[Example, str], dict[str, float]]

    def sample_texts(self, n: int, seed: int) -> list[str]:
        """``n`` full training texts (prompt + completion, special tokens as literal strings)."""
        return [example["prompt"] + example["completion"] for example in self.generate(n, seed)]


TASKS: dict[str, Task] = {
    "arithmetic": Task(
        name="arithmetic",
        description="2-3 operation integer arithmetic solved in single-operation reasoning steps",
        generate=lambda n, seed: arithmetic.generate(n, seed),
        score=arithmetic.score,
    ),
    "toolcall": Task(
        name="toolcall",
        description="natural-language requests mapped to a canonical JSON call of one of four tools",
        generate=lambda n, seed: toolcall.generate(n, seed),
        score=toolcall.score,
    ),
    "eightball": Task(
        name="eightball",
        description="smoke task: a yes/no question's first word picks one of six fixed replies",
        generate=eightball.generate,
        score=eightball.score,
    ),
}


def get_task(name: str) -> Task:
    """The registered task called ``name``; ``KeyError`` listing the known names otherwise."""
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}") from None
