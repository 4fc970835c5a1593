"""The judge model, its input encoding and pair batches."""

from __future__ import annotations

import math

import pytest
import torch

from arbiter.data.schema import PreferencePair
from arbiter.judge_training.batches import IGNORE_INDEX, collate, encode_pairs, lm_batch, lm_inputs
from arbiter.judge_training.encoding import InputTooLongError, encode_input, pad, pad_inputs
from arbiter.judge_training.model import (
    HEAD_PREFIX,
    STEP_END_ID,
    JudgeModel,
    gather_last,
    last_token_index,
    surprise_features,
)
from training.model import Student
from training.model_config import ModelConfig
from training.tokenizer import DistilleryTokenizer

CLAUSES = ("answer_correct", "steps_valid", "format_ok")
PROMPT = "Q: 7+3*2-4=?\n"
GOOD = "<think><step>3*2=6</step><step>7+6=13</step><step>13-4=9</step></think><answer>9</answer>"
BAD = "<think><step>3*2=5</step><step>7+5=12</step><step>12-4=8</step></think><answer>8</answer>"


@pytest.fixture(scope="module")
def judge(tiny_config: ModelConfig) -> JudgeModel:
    torch.manual_seed(0)
    model = JudgeModel(Student(tiny_config), CLAUSES, step_head=True).eval()
    with torch.no_grad():
        for head in (model.score_head, model.clause_head, model.step_head):
            assert head is not None
            head.weight.normal_(std=1.0)
    return model


def test_output_shapes_and_head_presence(judge: JudgeModel, tiny_config: ModelConfig) -> None:
    ids = torch.randint(16, tiny_config.vocab_size, (3, 9))
    out = judge(ids, torch.ones_like(ids), torch.ones_like(ids))
    assert out.score.shape == (3,)
    assert out.clause_logits is not None and out.clause_logits.shape == (3, 3)
    assert out.step_logits is not None and out.step_logits.shape == (3, 9)
    assert out.hidden.shape == (3, 9, tiny_config.hidden_size)
    bare = JudgeModel(Student(tiny_config), (), step_head=False, surprise_features=False)
    plain = bare(ids, torch.ones_like(ids))
    assert plain.clause_logits is None and plain.step_logits is None and not bare.has_step_head
    assert bare.score_head.in_features == tiny_config.hidden_size == judge.score_head.in_features - 3
    with pytest.raises(ValueError, match="response_mask"):
        judge(ids, torch.ones_like(ids))
    with pytest.raises(ValueError, match="distinct"):
        JudgeModel(Student(tiny_config), ("x", "x"))


def test_last_token_index_for_both_padding_sides() -> None:
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 0, 0, 0, 0], [0, 0, 0, 0, 1]])
    assert last_token_index(mask).tolist() == [2, 4, 0, 4]
    hidden = torch.arange(4 * 5 * 2, dtype=torch.float32).reshape(4, 5, 2)
    assert torch.equal(gather_last(hidden, mask), hidden[torch.arange(4), torch.tensor([2, 4, 0, 4])])


def test_scores_do_not_depend_on_padding_side_or_batch(judge: JudgeModel, tiny_tokenizer: DistilleryTokenizer
                                                       ) -> None:
    rows = [encode_input(tiny_tokenizer, PROMPT, r, 96) for r in (GOOD, BAD, "<answer>9</answer>")]
    right_in, left_in = pad_inputs(rows, 0, "right"), pad_inputs(rows, 0, "left")
    right_off, left_off = right_in.offsets, left_in.offsets
    right = judge(right_in.input_ids, right_in.attention_mask, right_in.response_mask)
    left = judge(left_in.input_ids, left_in.attention_mask, left_in.response_mask)
    assert torch.allclose(right.score, left.score, atol=1e-5)
    assert right.clause_logits is not None and left.clause_logits is not None
    assert torch.allclose(right.clause_logits, left.clause_logits, atol=1e-5)
    alone = pad_inputs(rows[2:], 0)
    single = judge(alone.input_ids, alone.attention_mask, alone.response_mask)
    assert torch.allclose(single.score, right.score[2:], atol=1e-5)
    assert right.step_logits is not None and left.step_logits is not None
    for row, item in enumerate(rows):
        at_right = right.step_logits[row, [right_off[row] + p for p in item.step_positions]]
        at_left = left.step_logits[row, [left_off[row] + p for p in item.step_positions]]
        assert torch.allclose(at_right, at_left, atol=1e-5)
    assert not torch.allclose(right.score[0], right.score[1])


def test_surprise_features_by_hand() -> None:
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.3, 0.3, 0.4]]]))
    ids = torch.tensor([[0, 0, 1, 0]])
    response = torch.tensor([[0, 0, 1, 1]])
    features = torch.expm1(surprise_features(logits, ids, response))[0]
    surprise = [0.0, 0.0, -math.log(0.8), -math.log(0.2)]
    assert torch.allclose(features[:, 0], torch.tensor(surprise), atol=1e-6)
    assert torch.allclose(features[:, 1], torch.tensor([0.0, 0.0, surprise[2], max(surprise[2:])]), atol=1e-6)
    assert torch.allclose(features[:, 2], torch.tensor([0.0, 0.0, surprise[2], sum(surprise)]), atol=1e-6)


def test_surprise_points_at_the_token_the_lm_did_not_expect(judge: JudgeModel, tiny_tokenizer: DistilleryTokenizer
                                                            ) -> None:
    """With an LM that predicts the good response perfectly, the first wrong token carries the surprise."""
    good = encode_input(tiny_tokenizer, PROMPT, GOOD, 96)
    bad = encode_input(tiny_tokenizer, PROMPT, BAD, 96)
    padded = pad_inputs([bad], 0)
    vocab = judge.backbone.config.vocab_size
    logits = torch.full((1, len(bad.ids), vocab), -30.0)
    for position in range(len(good.ids) - 1):
        logits[0, position, good.ids[position + 1]] = 30.0
    features = surprise_features(logits, padded.input_ids, padded.response_mask)[0]
    first_wrong = next(i for i, (x, y) in enumerate(zip(good.ids, bad.ids, strict=False)) if x != y)
    assert torch.all(features[:first_wrong, 1] == 0)
    assert torch.all(features[first_wrong:, 1] > 3)
    assert float(features[first_wrong, 0]) > 3


def test_head_state_dict_round_trip(judge: JudgeModel, tiny_config: ModelConfig) -> None:
    heads = judge.head_state_dict()
    assert set(heads) == {f"{HEAD_PREFIX}{n}" for n in ("score_head.weight", "score_head.bias", "clause_head.weight",
                                                         "clause_head.bias", "step_head.weight", "step_head.bias",
                                                         "tie_log_nu")}
    other = JudgeModel(Student(tiny_config), CLAUSES, step_head=True)
    other.load_head_state_dict(heads)
    assert torch.equal(other.score_head.weight, judge.score_head.weight)
    with pytest.raises(ValueError, match="missing"):
        other.load_head_state_dict({k: v for k, v in heads.items() if "step_head" not in k})
    with pytest.raises(ValueError, match="shape"):
        other.load_head_state_dict({**heads, "judge.clause_head.bias": torch.zeros(5)})


def test_encode_input_layout_and_truncation(tiny_tokenizer: DistilleryTokenizer) -> None:
    item = encode_input(tiny_tokenizer, PROMPT, GOOD, 96)
    prompt_ids, response_ids = tiny_tokenizer.encode(PROMPT), tiny_tokenizer.encode(GOOD)
    assert item.ids == [tiny_tokenizer.bos_id, *prompt_ids, *response_ids, tiny_tokenizer.eos_id]
    assert item.response_start == 1 + len(prompt_ids)
    assert len(item.step_positions) == 3 and all(item.ids[p] == STEP_END_ID for p in item.step_positions)
    tight = encode_input(tiny_tokenizer, PROMPT, GOOD, len(response_ids) + 5)
    assert len(tight.ids) == len(response_ids) + 5 and tight.ids[0] == tiny_tokenizer.bos_id
    assert tight.ids[1:4] == prompt_ids[-3:] and tight.ids[tight.step_positions[0]] == STEP_END_ID
    with pytest.raises(InputTooLongError, match="at most"):
        encode_input(tiny_tokenizer, PROMPT, GOOD, len(response_ids) + 1)
    prompt_with_tag = encode_input(tiny_tokenizer, "</step>" + PROMPT, GOOD, 96)
    assert prompt_with_tag.step_positions[0] > prompt_with_tag.response_start


def test_pad_sides() -> None:
    ids, mask, offsets = pad([[5, 6, 7], [8]], 0, "left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert offsets.tolist() == [0, 2]
    ids, mask, offsets = pad([[5, 6, 7], [8]], 0, "right")
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and offsets.tolist() == [0, 0]
    with pytest.raises(ValueError):
        pad([], 0)


def pair(winner: str, **extra: object) -> PreferencePair:
    return PreferencePair.model_validate({
        "prompt": PROMPT, "a": GOOD, "b": BAD, "winner": winner,
        "clauses_a": {"answer_correct": 1}, "steps_b": ["3*2=5", "7+5=12", "12-4=8"],
        "step_labels_b": [0.0, 0.0, 0.0], **extra})


@pytest.mark.parametrize("side", ["left", "right"])
def test_collate_places_labels(tiny_tokenizer: DistilleryTokenizer, side: str) -> None:
    encoded = encode_pairs([pair("a"), pair("b"), pair("tie")], tiny_tokenizer, CLAUSES, 96)
    batch = collate(encoded, tiny_tokenizer.pad_id, side, len(CLAUSES))  # type: ignore[arg-type]
    assert batch.num_pairs == 3 and batch.input_ids.shape[0] == 6
    assert batch.winner.tolist() == [0, 1, 2]
    assert batch.clause_mask[:3].tolist() == [[True, False, False]] * 3 and not batch.clause_mask[3:].any()
    assert batch.clause_targets[0].tolist() == [1.0, 0.0, 0.0]
    assert not batch.step_mask[:3].any() and batch.step_mask[3:].sum(-1).tolist() == [3, 3, 3]
    assert torch.all(batch.input_ids[batch.step_mask] == STEP_END_ID)
    assert torch.all(batch.step_targets[batch.step_mask] == 0.0)
    labelled = (batch.lm_labels != IGNORE_INDEX).any(-1).tolist()
    # good = not the loser and no negative label: a of pair 0 (winner) and a of the tie; b always has
    # step labels of 0 (even as pair 1's winner), a of pair 1 lost
    assert labelled == [True, False, True, False, False, False]
    assert torch.equal(batch.response_mask.bool() & ~batch.attention_mask.bool(),
                       torch.zeros_like(batch.response_mask, dtype=torch.bool))
    row = batch.lm_labels[0]
    positions = (row != IGNORE_INDEX).nonzero().squeeze(-1)
    assert torch.equal(row[positions], batch.input_ids[0, positions + 1])
    assert int(batch.input_ids[0, positions[-1] + 1]) == tiny_tokenizer.eos_id
    assert len(positions) == len(tiny_tokenizer.encode(GOOD)) + 1


def test_lm_batch_matches_collate_labels(tiny_tokenizer: DistilleryTokenizer) -> None:
    encoded = encode_pairs([pair("a"), pair("tie"), pair("b")], tiny_tokenizer, CLAUSES, 96)
    texts = lm_inputs(encoded)
    assert [t.ids for t in texts] == [encoded[0].a.input.ids, encoded[1].a.input.ids]
    assert [p.a.good for p in encoded] == [True, True, False] and not any(p.b.good for p in encoded)
    ids, mask, labels = lm_batch(texts, tiny_tokenizer.pad_id, "left")
    batch = collate([encoded[0]], tiny_tokenizer.pad_id, "left", len(CLAUSES))
    from_lm, from_pairs = labels[0], batch.lm_labels[0]
    assert from_lm[from_lm != IGNORE_INDEX].tolist() == from_pairs[from_pairs != IGNORE_INDEX].tolist()
    assert mask.sum().item() == sum(len(t.ids) for t in texts)


def test_misaligned_step_labels_are_refused(tiny_tokenizer: DistilleryTokenizer) -> None:
    too_long = "<think><step>" + "1+1=2</step><step>" * 60 + "1+1=2</step></think>"
    with pytest.raises(ValueError, match="at most"):
        encode_pairs([pair("a", a=too_long)], tiny_tokenizer, CLAUSES, 96)
