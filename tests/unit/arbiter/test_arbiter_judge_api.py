"""The scoring API: Judge.load / score / compare / score_steps (single and batched), step_weights, win_rate."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from arbiter.judge import Judge, step_weights, steps_response, win_rate
from arbiter.judge_training.artifact import save_judge
from arbiter.judge_training.model import JudgeModel
from arbiter.verdicts import CompareVerdict, ScoreVerdict, StepVerdict, WinRate
from training.model import Student
from training.model_config import ModelConfig
from training.tokenizer import DistilleryTokenizer

CLAUSES = ("answer_correct", "steps_valid", "format_ok")
PROMPT = "Q: 7+3*2-4=?\n"
GOOD = "<think><step>3*2=6</step><step>7+6=13</step><step>13-4=9</step></think><answer>9</answer>"
BAD = "<think><step>3*2=5</step><step>7+5=12</step><step>12-4=8</step></think><answer>8</answer>"


@pytest.fixture(scope="module")
def judge(tmp_path_factory: pytest.TempPathFactory, tiny_config: ModelConfig,
          tiny_tokenizer: DistilleryTokenizer) -> Judge:
    torch.manual_seed(2)
    model = JudgeModel(Student(tiny_config), CLAUSES, step_head=True)
    with torch.no_grad():
        for head in (model.score_head, model.clause_head, model.step_head):
            assert head is not None
            head.weight.normal_(std=2.0)
    path = save_judge(model, tmp_path_factory.mktemp("judge") / "judge", tokenizer=tiny_tokenizer, max_length=96)
    return Judge.load(path, batch_size=2)


def test_score_and_its_batched_form_agree(judge: Judge) -> None:
    one = judge.score(PROMPT, GOOD)
    assert isinstance(one, ScoreVerdict)
    assert one.clauses is not None and set(one.clauses) == set(CLAUSES)
    assert one.steps is not None and len(one.steps) == 3 and all(0 <= s <= 1 for s in one.steps)
    many = judge.score_batch([PROMPT, PROMPT, "Q: 1+2=?\n"], [BAD, GOOD, "<answer>3</answer>"])
    assert len(many) == 3 and many[2].steps == []
    assert math.isclose(many[1].reward, one.reward, abs_tol=1e-5)
    assert many[1].steps is not None
    assert all(math.isclose(x, y, abs_tol=1e-5) for x, y in zip(many[1].steps, one.steps, strict=True))
    assert not math.isclose(many[0].reward, many[1].reward, abs_tol=1e-4)
    assert ScoreVerdict.model_validate_json(one.model_dump_json()) == one


def test_compare_is_symmetric_and_consistent_with_scores(judge: Judge) -> None:
    forward = judge.compare(PROMPT, GOOD, BAD)
    backward = judge.compare(PROMPT, BAD, GOOD)
    assert isinstance(forward, CompareVerdict)
    assert math.isclose(forward.p_a + forward.p_b + forward.p_tie, 1.0, abs_tol=1e-6)
    assert math.isclose(forward.p_a, backward.p_b, abs_tol=1e-5) and math.isclose(forward.p_tie, backward.p_tie,
                                                                                  abs_tol=1e-5)
    assert {forward.winner, backward.winner} <= {"a", "b", "tie"}
    if forward.winner != "tie":
        assert backward.winner == ("b" if forward.winner == "a" else "a")
    best = max(("a", forward.p_a), ("b", forward.p_b), ("tie", forward.p_tie), key=lambda kv: kv[1])[0]
    assert forward.winner == best
    scores = judge.score_batch([PROMPT, PROMPT], [GOOD, BAD])
    assert math.isclose(forward.reward_a, scores[0].reward, abs_tol=1e-5)
    d = forward.reward_a - forward.reward_b
    assert math.isclose(forward.p_a / (forward.p_a + forward.p_b), 1 / (1 + math.exp(-d)), abs_tol=1e-5)
    same = judge.compare(PROMPT, GOOD, GOOD)
    assert same.winner == "tie" and math.isclose(same.p_a, same.p_b, abs_tol=1e-7)
    batched = judge.compare_batch([PROMPT, PROMPT], [GOOD, BAD], [BAD, GOOD])
    assert math.isclose(batched[0].p_a, forward.p_a, abs_tol=1e-5)
    assert math.isclose(batched[1].p_a, backward.p_a, abs_tol=1e-5)


def test_score_steps_and_step_weights(judge: Judge) -> None:
    steps = ["3*2=6", "7+6=13", "13-4=9"]
    verdict = judge.score_steps(PROMPT, steps)
    assert isinstance(verdict, StepVerdict) and len(verdict.scores) == 3
    assert all(0.0 <= s <= 1.0 for s in verdict.scores)
    below = [i for i, s in enumerate(verdict.scores) if s < 0.5]
    assert verdict.first_error == (below[0] if below else None)
    assert step_weights(judge, PROMPT, steps) == verdict.scores
    assert step_weights(judge, PROMPT, []) == []
    # causal: a step's score ignores later steps, and it equals the score inside a full response
    prefix = judge.score_steps(PROMPT, steps[:2])
    assert all(math.isclose(a, b, abs_tol=1e-5) for a, b in zip(prefix.scores, verdict.scores[:2], strict=False))
    full = judge.score(PROMPT, GOOD).steps
    assert full is not None and all(math.isclose(a, b, abs_tol=1e-5)
                                    for a, b in zip(full, verdict.scores, strict=True))
    batched = judge.score_steps_batch([PROMPT, PROMPT], [steps, ["3*2=5"]])
    assert len(batched[1].scores) == 1 and math.isclose(batched[0].scores[2], verdict.scores[2], abs_tol=1e-5)
    assert steps_response(["1+1=2"]) == "<think><step>1+1=2</step>"
    with pytest.raises(ValueError, match="step tag"):
        judge.score_steps(PROMPT, ["<step>1+1=2"])


def test_win_rate_counts_verdicts(judge: Judge) -> None:
    prompts = [PROMPT] * 4
    a = [GOOD, BAD, GOOD, GOOD]
    b = [BAD, GOOD, GOOD, BAD]
    report = win_rate(judge, prompts, a, b)
    WinRate.model_validate(report)
    verdicts = judge.compare_batch(prompts, a, b)
    assert report["n"] == 4
    assert report["wins_a"] == sum(v.winner == "a" for v in verdicts)
    assert report["ties"] == sum(v.winner == "tie" for v in verdicts) >= 1
    expected = (report["wins_a"] + report["ties"] / 2) / 4
    assert math.isclose(report["win_rate_a"], expected) and math.isclose(report["win_rate_b"], 1 - expected)
    low, high = report["win_rate_a_ci95"]
    assert 0.0 <= low <= expected <= high <= 1.0
    assert math.isclose(report["mean_p_a"], sum(v.p_a for v in verdicts) / 4, abs_tol=1e-9)
    json.dumps(report)


def test_bad_inputs_are_refused(judge: Judge, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="equal lengths"):
        judge.score_batch([PROMPT], [GOOD, BAD])
    with pytest.raises(ValueError, match="equal lengths"):
        win_rate(judge, [PROMPT], [GOOD], [])
    with pytest.raises(ValueError, match="at least one"):
        win_rate(judge, [], [], [])
    with pytest.raises(ValueError, match="at most"):
        judge.score(PROMPT, "<answer>" + "1" * 200 + "</answer>")


def test_a_judge_without_step_head_refuses_step_scoring(tmp_path: Path, tiny_config: ModelConfig,
                                                       tiny_tokenizer: DistilleryTokenizer) -> None:
    model = JudgeModel(Student(tiny_config), (), step_head=False)
    path = save_judge(model, tmp_path / "plain", tokenizer=tiny_tokenizer, max_length=64)
    plain = Judge.load(path)
    verdict = plain.score(PROMPT, GOOD)
    assert verdict.clauses is None and verdict.steps is None
    with pytest.raises(ValueError, match="no step head"):
        plain.score_steps(PROMPT, ["3*2=6"])
