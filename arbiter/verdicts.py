"""What a judge returns: pydantic models that serialize to JSON with a published JSON Schema.

The schemas are committed under ``arbiter/schemas/`` (``python -m arbiter.schemas --out arbiter/schemas``
regenerates them; a test keeps them equal to these models).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class _Verdict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScoreVerdict(_Verdict):
    """The judge's view of one response to one prompt."""

    reward: float = Field(description="Scalar score (Bradley-Terry scale): P(x beats y | not a tie) = "
                                      "sigmoid(reward_x - reward_y). Comparable across responses of one judge.")
    clauses: dict[str, Probability] | None = Field(
        default=None, description="Probability that each clause holds (e.g. answer_correct); null when the "
                                  "judge has no clause head.")
    steps: list[Probability] | None = Field(
        default=None, description="Probability that each reasoning step (each </step> of the response) is "
                                  "correct; null when the judge has no step head.")


class CompareVerdict(_Verdict):
    """Which of two responses to one prompt is better (Davidson tie model over the two rewards)."""

    winner: Literal["a", "b", "tie"] = Field(description="The most probable outcome.")
    p_a: Probability = Field(description="Probability that response a is better.")
    p_b: Probability = Field(description="Probability that response b is better.")
    p_tie: Probability = Field(description="Probability that both are equally good.")
    reward_a: float = Field(description="Reward of response a.")
    reward_b: float = Field(description="Reward of response b.")


class StepVerdict(_Verdict):
    """Per-step correctness scores of a reasoning chain."""

    scores: list[Probability] = Field(description="Probability that each step is correct given the prompt and "
                                                   "the steps before it, in step order.")
    first_error: int | None = Field(description="Index of the first step scored below 0.5; null when none is.")


class WinRate(_Verdict):
    """Judge win-rate of responses a against responses b over a set of prompts."""

    n: int = Field(ge=1, description="Number of compared pairs.")
    wins_a: int = Field(ge=0, description="Pairs whose verdict is a.")
    wins_b: int = Field(ge=0, description="Pairs whose verdict is b.")
    ties: int = Field(ge=0, description="Pairs whose verdict is tie.")
    win_rate_a: Probability = Field(description="(wins_a + ties / 2) / n.")
    win_rate_b: Probability = Field(description="(wins_b + ties / 2) / n.")
    win_rate_a_ci95: tuple[Probability, Probability] = Field(
        description="Normal-approximation 95% interval of win_rate_a over pairs (clipped to [0, 1]).")
    mean_p_a: Probability = Field(description="Mean probability that a is better.")
    mean_p_b: Probability = Field(description="Mean probability that b is better.")
    mean_p_tie: Probability = Field(description="Mean probability of a tie.")
