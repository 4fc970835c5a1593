"""Arithmetic expressions as reducible states: prompts, single-operation steps and the order rules.

An expression ``7+3*2-4`` is the state ``numbers=(7, 3, 2, 4), ops=("+", "*", "-")``. A step reduces one
operator ``numbers[i] ops[i] numbers[i+1]`` to its value. Which operators may be reduced next ("ready")
depends on the evaluation order:

* ``standard``: a ``*`` is ready when it is the leftmost of its product chain; a ``+``/``-`` is ready
  only when it is the first operator and not followed by ``*`` (left associativity, ``*`` first).
* ``left_to_right``: only the first operator is ready.

The canonical solution (what the generator writes) reduces the leftmost ``*`` while there is one and
otherwise the first operator; a checker accepts any ready operator, since all of them lead to the same
value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from training.tasks.arithmetic_config import Precedence

OPERATORS: tuple[str, ...] = ("+", "-", "*")

_PROMPT_PREFIX: dict[str, str] = {"standard": "Q: ", "left_to_right": "Q (left to right): "}
_PROMPT_RE = re.compile(r"Q(?P<ltr> \(left to right\))?: (?P<expr>\d+(?:[+\-*]\d+)+)=\?")
_STEP_RE = re.compile(r"(-?\d+)([+\-*])(-?\d+)=(-?\d+)")


def apply(op: str, left: int, right: int) -> int:
    """Value of ``left op right`` for ``op`` in ``+ - *``."""
    if op == "+":
        return left + right
    if op == "-":
        return left - right
    if op == "*":
        return left * right
    raise ValueError(f"unknown operator {op!r}")


@dataclass(frozen=True)
class State:
    """A (partly reduced) expression ``numbers[0] ops[0] numbers[1] ... numbers[-1]``."""

    numbers: tuple[int, ...]
    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.numbers) != len(self.ops) + 1:
            raise ValueError(f"need one more number than operators: {self.numbers} / {self.ops}")
        if any(op not in OPERATORS for op in self.ops):
            raise ValueError(f"unknown operator in {self.ops}")

    @property
    def done(self) -> bool:
        """True when nothing is left to reduce."""
        return not self.ops

    def render(self) -> str:
        """The expression as text, e.g. ``7+3*2-4``."""
        parts = [str(self.numbers[0])]
        for op, number in zip(self.ops, self.numbers[1:], strict=True):
            parts.append(f"{op}{number}")
        return "".join(parts)


@dataclass(frozen=True)
class Step:
    """One written calculation ``left op right = result`` (not necessarily correct)."""

    left: int
    op: str
    right: int
    result: int

    @property
    def correct(self) -> bool:
        """Whether the calculation itself is right."""
        return apply(self.op, self.left, self.right) == self.result

    def render(self) -> str:
        """The step as text, e.g. ``3*2=6``."""
        return f"{self.left}{self.op}{self.right}={self.result}"


def parse_step(text: str) -> Step | None:
    """Read a step such as ``3*2=6`` (whitespace ignored); ``None`` when it is not of that form."""
    match = _STEP_RE.fullmatch(re.sub(r"\s+", "", text))
    if match is None:
        return None
    left, op, right, result = match.groups()
    return Step(int(left), op, int(right), int(result))


def format_prompt(state: State, precedence: Precedence) -> str:
    """The question for ``state``, e.g. ``Q: 7+3*2-4=?\\n``; the order is spelled out if not standard."""
    return f"{_PROMPT_PREFIX[precedence]}{state.render()}=?\n"


def parse_prompt(prompt: str) -> tuple[State, Precedence] | None:
    """Recover the expression and evaluation order from a prompt made by :func:`format_prompt`."""
    match = _PROMPT_RE.search(prompt)
    if match is None:
        return None
    tokens = re.findall(r"\d+|[+\-*]", match["expr"])
    numbers = tuple(int(token) for token in tokens[0::2])
    precedence: Precedence = "left_to_right" if match["ltr"] else "standard"
    return State(numbers, tuple(tokens[1::2])), precedence


def ready_ops(state: State, precedence: Precedence) -> list[int]:
    """Indices of the operators that may be reduced next under ``precedence`` (see module docstring)."""
    ops = state.ops
    if not ops:
        return []
    if precedence == "left_to_right":
        return [0]
    ready = [i for i, op in enumerate(ops) if op == "*" and (i == 0 or ops[i - 1] != "*")]
    if ops[0] != "*" and (len(ops) == 1 or ops[1] != "*"):
        ready.insert(0, 0)
    return ready


def canonical_op(state: State, precedence: Precedence) -> int:
    """The operator the generator reduces next: the leftmost ``*`` (standard order), else the first."""
    if state.done:
        raise ValueError("expression is already fully reduced")
    if precedence == "standard" and "*" in state.ops:
        return state.ops.index("*")
    return 0


def reduce(state: State, index: int, result: int | None = None) -> tuple[State, Step]:
    """Reduce operator ``index``; ``result`` overrides its value (used to inject mistakes)."""
    if not 0 <= index < len(state.ops):
        raise IndexError(f"operator index {index} out of range for {state.render()}")
    left, op, right = state.numbers[index], state.ops[index], state.numbers[index + 1]
    value = apply(op, left, right) if result is None else result
    numbers = state.numbers[:index] + (value,) + state.numbers[index + 2 :]
    ops = state.ops[:index] + state.ops[index + 1 :]
    return State(numbers, ops), Step(left, op, right, value)


def solve(state: State, precedence: Precedence) -> tuple[list[Step], int]:
    """The canonical solution: its steps and the final value."""
    steps: list[Step] = []
    while not state.done:
        state, step = reduce(state, canonical_op(state, precedence))
        steps.append(step)
    return steps, state.numbers[0]


def advance(state: State, step: Step, precedence: Precedence) -> State | None:
    """The state after ``step`` if it is a correct calculation of a ready operator, else ``None``.

    When several ready operators match (e.g. ``2*3+2*3``) the leftmost is taken; any choice leads to
    the same value.
    """
    if not step.correct:
        return None
    for index in ready_ops(state, precedence):
        if (state.numbers[index], state.ops[index], state.numbers[index + 1]) == (
            step.left,
            step.op,
            step.right,
        ):
            return reduce(state, index)[0]
    return None
