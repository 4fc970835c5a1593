"""Step-structured encoding: span placement (brute force against tag tokens), scores, tool-call spans,
truncation, collation, the resumable step stream, corrupted-data mixing and its CLI."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from training.data import Example, QuarantineLog, StreamConfig, encode_example
from training.reasoning.step_data import (
    KIND_ANSWER,
    KIND_NONE,
    KIND_OTHER,
    KIND_STEP,
    KIND_TOOL_NAME,
    KIND_TOOL_STRUCTURE,
    StepAlignmentError,
    StepEncoded,
    StepExampleStream,
    TokenSpan,
    collate_steps,
    encode_steps,
    mix_corrupted,
)
from training.reasoning.toolcall_supervision import json_structure_chars
from training.step_data import main
from training.tasks import arithmetic, get_task
from training.tasks.jsonl import read_jsonl, write_jsonl
from training.tokenizer import SPECIAL_IDS, DistilleryTokenizer

STEP_OPEN, STEP_CLOSE = SPECIAL_IDS["<step>"], SPECIAL_IDS["</step>"]
ANSWER_OPEN, ANSWER_CLOSE = SPECIAL_IDS["<answer>"], SPECIAL_IDS["</answer>"]


def arithmetic_examples(n: int = 12, seed: int = 0) -> list[dict[str, Any]]:
    """Clean examples followed by a corrupted copy of each (step_labels 0 from the first wrong step)."""
    clean = get_task("arithmetic").generate(n, seed)
    rng = random.Random(seed)
    return [*clean, *(arithmetic.corrupt(e, rng) for e in clean)]


def tag_spans(ids: list[int], opening: int, closing: int) -> list[tuple[int, int]]:
    """Brute force: [i + 1, j) for every opening tag at i and the next closing tag at j."""
    out = []
    for i, token in enumerate(ids):
        if token == opening:
            out.append((i + 1, ids.index(closing, i + 1)))
    return out


@pytest.mark.parametrize("example_index", range(24))
def test_step_spans_are_the_tokens_between_step_tags(tiny_tokenizer: DistilleryTokenizer,
                                                      example_index: int) -> None:
    """Span k is exactly the tokens between the k-th <step> and </step>, and labels at its label positions are
    exactly the tokens of step k (next-token shift)."""
    example = arithmetic_examples()[example_index]
    enc = encode_steps(example, tiny_tokenizer, 128)
    base = encode_example(Example.model_validate(example), tiny_tokenizer, 128, False)
    assert enc.input_ids == base.input_ids and enc.labels == base.labels
    expected = tag_spans(enc.input_ids, STEP_OPEN, STEP_CLOSE)
    assert [(s.start, s.end) for s in enc.steps] == expected
    assert len(enc.steps) == len(example["steps"])
    for k, span in enumerate(enc.steps):
        step_tokens = tiny_tokenizer.encode(example["steps"][k])
        assert [enc.labels[t] for t in span.label_positions] == step_tokens
        assert enc.input_ids[span.start:span.end] == step_tokens
    (answer,) = tag_spans(enc.input_ids, ANSWER_OPEN, ANSWER_CLOSE)
    assert enc.answer == TokenSpan(*answer)
    assert [enc.labels[t] for t in enc.answer.label_positions] == tiny_tokenizer.encode(example["answer"])
    assert list(enc.step_scores) == example["step_labels"]
    assert enc.answer_score == min(example["step_labels"])
    assert enc.tool_name is None and enc.tool_structure == ()


def test_annotations_mark_exactly_the_span_label_positions(tiny_tokenizer: DistilleryTokenizer) -> None:
    examples = arithmetic_examples(4)
    encoded = [encode_steps(e, tiny_tokenizer, 128) for e in examples]
    batch = collate_steps(encoded, tiny_tokenizer.pad_id)
    width = batch["input_ids"].shape[1]
    for b, enc in enumerate(encoded):
        for t in range(width):
            owner = [k for k, s in enumerate(enc.steps) if s.start - 1 <= t < s.end - 1]
            in_answer = enc.answer is not None and enc.answer.start - 1 <= t < enc.answer.end - 1
            has_target = t < len(enc.labels) and enc.labels[t] != -100
            expected_index = owner[0] if owner else -1
            if owner:
                kind, score = KIND_STEP, enc.step_scores[owner[0]]
            elif in_answer:
                kind, score = KIND_ANSWER, enc.answer_score
            elif has_target:
                kind, score = KIND_OTHER, 1.0
            else:
                kind, score = KIND_NONE, 0.0
            assert int(batch["step_index"][b, t]) == expected_index, (b, t)
            assert int(batch["span_kind"][b, t]) == kind, (b, t)
            assert float(batch["step_weight"][b, t]) == score, (b, t)
    # a corrupted example has zero scores at its wrong steps' label positions, and nowhere else on steps
    corrupted = encoded[len(encoded) // 2]
    b = len(encoded) // 2
    for k, span in enumerate(corrupted.steps):
        values = batch["step_weight"][b, span.start - 1:span.end - 1]
        assert torch.all(values == corrupted.step_scores[k])
    assert 0.0 in corrupted.step_scores
    assert batch["num_target_tokens"] == sum(e.num_targets for e in encoded)


def test_toolcall_spans_name_arguments_and_structure(tiny_tokenizer: DistilleryTokenizer) -> None:
    """Tool name and arguments spans decode to the call's parts; structure tokens are exactly the tokens that
    overlap JSON punctuation, quotes or keys (brute force over per-token decoded text), name excluded."""
    for example in get_task("toolcall").generate(8, 3):
        enc = encode_steps(example, tiny_tokenizer, 160)
        call = json.loads(example["answer"])
        assert tiny_tokenizer.decode(enc.input_ids[enc.tool_name.start:enc.tool_name.end]) == call["name"]
        arguments_text = tiny_tokenizer.decode(enc.input_ids[enc.tool_arguments.start:enc.tool_arguments.end])
        assert json.loads(arguments_text) == call["arguments"]
        completion_ids = enc.input_ids[enc.prompt_len:-1]
        pieces = [tiny_tokenizer.decode([i]) for i in completion_ids]
        assert "".join(pieces) == example["completion"]
        text = example["completion"]
        key_chars: set[int] = set()
        for match in re.finditer(r'"[^"\\]*"(?=\s*:)', text):
            key_chars.update(range(match.start(), match.end()))
        call_start, call_end = text.index("{"), text.rindex("}") + 1
        expected: list[int] = []
        position = 0
        for index, piece in enumerate(pieces):
            chars = range(position, position + len(piece))
            position += len(piece)
            token = enc.prompt_len + index
            if enc.tool_name.start <= token < enc.tool_name.end:
                continue
            inside = [c for c in chars if call_start <= c < call_end]
            if any(text[c] in '{}[]:,"' or c in key_chars for c in inside):
                expected.append(token)
        assert list(enc.tool_structure) == expected
        _, _, kinds = enc.annotations()
        assert all(kinds[t - 1] == KIND_TOOL_STRUCTURE for t in enc.tool_structure)
        assert all(kinds[t] == KIND_TOOL_NAME for t in enc.tool_name.label_positions)
        assert enc.steps == () and enc.answer is None


def test_json_structure_chars_on_a_call_and_malformed_text() -> None:
    text = '{"name": "a:b", "arguments": {"n": 5}}'
    flags = json_structure_chars(text)
    structure = "".join(c if f else "." for c, f in zip(text, flags, strict=True))
    assert structure == '{"name":."...",."arguments":.{"n":..}}'
    # unterminated strings and stray characters never raise; an escaped quote does not close a string
    flags = json_structure_chars('{"k": "x\\"')
    assert flags[:5] == [True, True, True, True, True] and flags[6] is True and not any(flags[7:])
    assert json_structure_chars("") == []


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text("abcdefgh", min_size=1, max_size=5),
                       st.one_of(st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=6),
                                 st.integers(-999, 999)), max_size=4))
def test_json_structure_chars_keep_keys_and_punctuation_only(data: dict[str, Any]) -> None:
    """On compact JSON the structure characters spell the object with every value's content removed."""
    text = json.dumps(data, separators=(",", ":"))
    kept = "".join(c for c, f in zip(text, json_structure_chars(text), strict=True) if f)
    expected = "{" + ",".join(f'"{k}":' + ('""' if isinstance(v, str) else "") for k, v in data.items()) + "}"
    assert kept == expected


def test_truncation_keeps_spans_on_the_label_positions(tiny_tokenizer: DistilleryTokenizer) -> None:
    example = arithmetic_examples(1)[1]  # corrupted: labels [.., 0, ..]
    full = encode_steps(example, tiny_tokenizer, 256)
    # cut the prompt: spans shift left with it and still hold the step tokens
    cut = len(tiny_tokenizer.encode(example["prompt"])) - 2
    shorter = encode_steps(example, tiny_tokenizer, full.full_length - cut, truncate=True)
    assert [s.start for s in shorter.steps] == [s.start - cut for s in full.steps]
    for k, span in enumerate(shorter.steps):
        assert [shorter.labels[t] for t in span.label_positions] == tiny_tokenizer.encode(example["steps"][k])
    # cut the end inside step 1: step 1 keeps the tokens predicted inside the window, later steps vanish
    no_prompt = {**example, "prompt": ""}
    untruncated = encode_steps(no_prompt, tiny_tokenizer, 256)
    window = untruncated.steps[1].start + 1  # its first two tokens are predicted at positions window-2, window-1
    end_cut = encode_steps(no_prompt, tiny_tokenizer, window, truncate=True)
    assert len(end_cut.input_ids) == window
    assert len(end_cut.steps) == 2 and end_cut.step_scores == untruncated.step_scores[:2]
    last = end_cut.steps[1]
    assert last.start == untruncated.steps[1].start and last.end == window + 1
    assert list(last.label_positions) == [window - 2, window - 1]
    step_tokens = tiny_tokenizer.encode(example["steps"][1])
    assert [end_cut.labels[t] for t in last.label_positions] == step_tokens[:2]
    assert end_cut.answer is None and end_cut.answer_score == min(example["step_labels"])


def test_step_scorer_replaces_labels_and_is_checked(tiny_tokenizer: DistilleryTokenizer) -> None:
    example = arithmetic_examples(1)[0]
    seen: list[tuple[str, list[str]]] = []

    def scorer(prompt: str, steps: list[str]) -> list[float]:
        seen.append((prompt, steps))
        return [0.25 * (i + 1) for i in range(len(steps))]

    enc = encode_steps(example, tiny_tokenizer, 128, step_scorer=scorer)
    assert seen == [(example["prompt"], example["steps"])]
    assert enc.step_scores == tuple(0.25 * (i + 1) for i in range(len(example["steps"])))
    assert enc.answer_score == 0.25
    with pytest.raises(ValueError, match="scores for"):
        encode_steps(example, tiny_tokenizer, 128, step_scorer=lambda p, s: [1.0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        encode_steps(example, tiny_tokenizer, 128, step_scorer=lambda p, s: [2.0] * len(s))


def test_misaligned_steps_are_refused(tiny_tokenizer: DistilleryTokenizer) -> None:
    example = arithmetic_examples(1)[0]
    with pytest.raises(StepAlignmentError, match="do not match"):
        encode_steps({**example, "steps": ["1+1=2", *example["steps"][1:]]}, tiny_tokenizer, 128)
    # without a steps field the steps come from the markup, scored 1.0
    bare = {k: v for k, v in example.items() if k not in ("steps", "step_labels")}
    enc = encode_steps(bare, tiny_tokenizer, 128)
    assert len(enc.steps) == len(example["steps"]) and set(enc.step_scores) == {1.0}


def test_token_span_validation() -> None:
    assert list(TokenSpan(3, 6).label_positions) == [2, 3, 4] and len(TokenSpan(3, 6)) == 3
    with pytest.raises(ValueError):
        TokenSpan(0, 2)
    with pytest.raises(ValueError):
        TokenSpan(4, 3)


def test_step_stream_batches_and_exact_resume(tiny_tokenizer: DistilleryTokenizer, tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    write_jsonl(path, arithmetic_examples(10))
    config = StreamConfig(max_length=96, batch_size=4, shuffle_buffer=6, bucket_pool_batches=2, seed=3)

    def make() -> StepExampleStream:
        return StepExampleStream([path], tiny_tokenizer, config, quarantine=QuarantineLog(tmp_path / "q.jsonl"))

    reference = make()
    it = iter(reference)
    batches = [next(it) for _ in range(4)]
    assert {"step_index", "step_weight", "span_kind"} <= set(batches[0])
    assert any(bool((b["step_weight"][b["span_kind"] == KIND_STEP] == 0).any()) for b in batches)
    first = make()
    it = iter(first)
    next(it)
    next(it)
    state = json.loads(json.dumps(first.state_dict()))
    resumed = make()
    resumed.load_state_dict(state)
    it = iter(resumed)
    for expected in batches[2:]:
        got = next(it)
        assert got.keys() == expected.keys()
        for key in expected:
            assert torch.equal(got[key], expected[key]), key
    with pytest.raises(ValueError, match="bucket"):
        StepExampleStream([path], tiny_tokenizer, StreamConfig(max_length=96, batch_size=2, batching="pack"))


def test_step_stream_judge_scores_are_cached(tiny_tokenizer: DistilleryTokenizer, tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    write_jsonl(path, arithmetic_examples(3))
    calls: list[str] = []

    def scorer(prompt: str, steps: list[str]) -> list[float]:
        calls.append(prompt)
        return [0.5] * len(steps)

    stream = StepExampleStream([path], tiny_tokenizer, StreamConfig(max_length=96, batch_size=6, shuffle=False),
                               step_scorer=scorer)
    for _ in range(2):  # two epochs
        (batch,) = list(stream)
        step = batch["span_kind"] == KIND_STEP
        assert torch.all(batch["step_weight"][step] == 0.5)
    assert len(calls) == 6  # one call per distinct (prompt, steps), not per epoch


def test_mix_corrupted_add_and_replace() -> None:
    clean = get_task("arithmetic").generate(40, 1)
    added = mix_corrupted(clean, 0.5, seed=2)
    again = mix_corrupted(clean, 0.5, seed=2)
    assert added == again
    corrupted = [e for e in added if 0.0 in e["step_labels"]]
    assert 5 < len(corrupted) < 35 and len(added) == len(clean) + len(corrupted)
    assert [e for e in added if e not in corrupted] == clean
    for example in corrupted:
        labels = example["step_labels"]
        first_wrong = labels.index(0.0)
        assert labels == [0.0 if i == first_wrong else 1.0 for i in range(len(labels))]
        assert arithmetic.local_step_verdicts(example["prompt"], example["steps"]) == [x == 1.0 for x in labels]
    replaced = mix_corrupted(clean, 1.0, seed=2, mode="replace")
    assert len(replaced) == len(clean) and all(0.0 in e["step_labels"] for e in replaced)
    assert mix_corrupted(clean, 0.0, seed=2) == clean
    with pytest.raises(ValueError):
        mix_corrupted(clean, 1.5, seed=0)


def test_step_data_cli_writes_labelled_splits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--n", "60", "--corrupt-fraction", "0.5", "--out", str(tmp_path), "--seed", "4"]) == 0
    train, val = read_jsonl(tmp_path / "train.jsonl"), read_jsonl(tmp_path / "val.jsonl")
    assert any(0.0 in e["step_labels"] for e in train)
    assert all(0.0 not in e["step_labels"] for e in val)
    assert not {e["prompt"] for e in train} & {e["prompt"] for e in val}
    assert "with a wrong step" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--task", "toolcall", "--n", "10", "--corrupt-fraction", "0.2", "--out", str(tmp_path / "x")])


def test_step_encoded_is_an_encoded_example(tiny_tokenizer: DistilleryTokenizer) -> None:
    enc = encode_steps(arithmetic_examples(1)[0], tiny_tokenizer, 128)
    assert isinstance(enc, StepEncoded)
    assert enc.position_ids == list(range(len(enc.input_ids))) and not enc.truncated
