"""The record schema of a distillation example, validated where records enter the pipeline."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

StepLabel = Annotated[float, Field(ge=0.0, le=1.0)]


class Example(BaseModel):
    """One prompt/completion pair, optionally with reasoning steps and per-step labels.

    Types are strict (a number is not a string, ``"0.5"`` is not a float); fields the schema does
    not know are kept on the model (``example.model_extra``) rather than rejected.
    """

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    id: Annotated[str, Field(min_length=1)]
    prompt: str
    completion: str
    steps: list[str] | None = None
    answer: str | None = None
    step_labels: list[StepLabel] | None = None
    task: str | None = None

    @model_validator(mode="after")
    def _labels_match_steps(self) -> Example:
        if self.steps is not None and self.step_labels is not None and len(self.steps) != len(self.step_labels):
            raise ValueError(
                f"step_labels has {len(self.step_labels)} entries but steps has {len(self.steps)}")
        return self


def describe_validation_error(error: ValidationError) -> str:
    """One line naming every failing field and why, e.g. ``prompt: Input should be a valid string``."""
    parts = []
    for item in error.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in item["loc"]) or "record"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)
