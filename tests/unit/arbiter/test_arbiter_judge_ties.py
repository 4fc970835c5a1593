"""Identical responses tie whatever the kernels do (issue 16: ``compare(p, GOOD, GOOD)`` gave ``a``).

The judge's reward of one input can differ in the last bits between batch positions (padding, kernels,
threads). The fixture's wrapper makes that difference large and deterministic, so a tie that relied on two
positions rounding alike fails here on every machine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
import torch

from arbiter.judge import Judge, _winner
from arbiter.judge_training.artifact import save_judge
from arbiter.judge_training.model import JudgeModel, JudgeOutput
from training.model import Student
from training.model_config import ModelConfig
from training.tokenizer import DistilleryTokenizer

PROMPT = "Q: 7+3*2-4=?\n"
GOOD = "<think><step>3*2=6</step><step>7+6=13</step><step>13-4=9</step></think><answer>9</answer>"
BAD = "<think><step>3*2=5</step><step>7+5=12</step><step>12-4=8</step></think><answer>8</answer>"


@pytest.fixture
def judge(tmp_path_factory: pytest.TempPathFactory, tiny_config: ModelConfig,
          tiny_tokenizer: DistilleryTokenizer) -> Iterator[Judge]:
    """A judge whose reward drifts with the batch position (by 1e-3 per row, far above float rounding)."""
    torch.manual_seed(2)
    model = JudgeModel(Student(tiny_config), ("answer_correct",), step_head=True)
    with torch.no_grad():
        assert model.score_head is not None
        model.score_head.weight.normal_(std=2.0)
    path = save_judge(model, tmp_path_factory.mktemp("judge") / "judge", tokenizer=tiny_tokenizer, max_length=96)
    loaded = Judge.load(path, batch_size=4)
    forward = loaded.model.forward

    def drifting(*args: object, **kwargs: object) -> JudgeOutput:
        out = forward(*args, **kwargs)
        drift = 1e-3 * torch.arange(out.score.shape[0], dtype=out.score.dtype)
        return dataclasses.replace(out, score=out.score + drift)

    loaded.model.forward = drifting  # type: ignore[method-assign]
    yield loaded


def test_drift_is_real(judge: Judge) -> None:
    """The wrapper does what the tests below rely on: two rows of one batch get different rewards."""
    raws = judge._run_distinct([PROMPT, PROMPT], [GOOD, GOOD])
    assert raws[0].reward != raws[1].reward


def test_identical_responses_tie_exactly(judge: Judge) -> None:
    same = judge.compare(PROMPT, GOOD, GOOD)
    assert same.winner == "tie"
    assert same.reward_a == same.reward_b and same.p_a == same.p_b


def test_identical_pairs_in_a_batch_share_one_result(judge: Judge) -> None:
    verdicts = judge.compare_batch([PROMPT, PROMPT, PROMPT], [GOOD, BAD, GOOD], [GOOD, BAD, BAD])
    assert [v.winner for v in verdicts[:2]] == ["tie", "tie"]
    assert verdicts[2].reward_a == verdicts[0].reward_a and verdicts[2].reward_b == verdicts[1].reward_a
    scores = judge.score_batch([PROMPT, PROMPT, PROMPT], [GOOD, BAD, GOOD])
    assert scores[0] == scores[2]


def test_winner_tolerance_is_relative_to_the_reward_scale() -> None:
    """Rewards equal up to float rounding tie even when the tie is not the likeliest outcome."""
    for reward in (0.3, 2.0, 4000.0):
        nudged = reward * (1 + 4e-7)
        assert _winner(0.5001, 0.4999, 0.0, nudged, reward) == "tie"
        assert _winner(0.5001, 0.4999, 0.0, reward * (1 + 1e-3), reward) == "a"
        assert _winner(0.4999, 0.5001, 0.0, reward, reward * (1 + 1e-3)) == "b"
    assert _winner(0.2, 0.2, 0.6, 1.0, 1.0 + 1e-2) == "tie"  # the tie is the likeliest outcome
