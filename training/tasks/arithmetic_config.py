"""Settings for the arithmetic task: expression size, operand range, operators, evaluation order."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from training.config_base import FrozenStrictModel

Operator = Literal["+", "-", "*"]
Precedence = Literal["standard", "left_to_right"]


class ArithmeticConfig(FrozenStrictModel):
    """How arithmetic questions are drawn.

    ``precedence="standard"`` evaluates ``*`` before ``+``/``-`` (each left to right);
    ``"left_to_right"`` ignores precedence and reduces strictly from the left (the prompt says so). Either
    way every reasoning step is one binary operation on two small numbers, e.g. ``3*2=6``.

    Expressions whose intermediate results leave ``[0, max_value]`` (or ``[-max_value, max_value]`` with
    ``allow_negative``) are redrawn, which keeps every step a small calculation.
    """

    min_ops: int = Field(default=2, ge=1, le=8)
    max_ops: int = Field(default=3, ge=1, le=8)
    min_operand: int = Field(default=1, ge=0)
    max_operand: int = Field(default=9, ge=0)
    operators: tuple[Operator, ...] = ("+", "-", "*")
    precedence: Precedence = "standard"
    allow_negative: bool = False
    max_value: int = Field(default=99, ge=1)
    with_steps: bool = True

    @model_validator(mode="after")
    def _check_ranges(self) -> ArithmeticConfig:
        if self.min_ops > self.max_ops:
            raise ValueError(f"min_ops ({self.min_ops}) > max_ops ({self.max_ops})")
        if self.min_operand > self.max_operand:
            raise ValueError(f"min_operand ({self.min_operand}) > max_operand ({self.max_operand})")
        if self.max_operand > self.max_value:
            raise ValueError(f"max_operand ({self.max_operand}) > max_value ({self.max_value})")
        if not self.operators or len(set(self.operators)) != len(self.operators):
            raise ValueError(f"operators must be non-empty and distinct, got {self.operators}")
        return self

    def in_range(self, value: int) -> bool:
        """Whether an intermediate result is allowed by ``allow_negative`` and ``max_value``."""
        low = -self.max_value if self.allow_negative else 0
        return low <= value <= self.max_value
