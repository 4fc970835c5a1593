"""Chat records (``messages``): rendered with the tokenizer's chat template, loss on assistant turns only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.hf_helpers import build_foreign_tokenizer
from training.data import IGNORE_INDEX, SequenceTooLongError, encode_example, example_length
from training.data.schema import Example
from training.tokenizer import DistilleryTokenizer

transformers = pytest.importorskip("transformers")

# ChatML with TRL's {% generation %} marks around what an assistant turn adds: transformers' own
# assistant-token mask is the brute-force reference for ours.
CHATML_MARKED = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}"
    "{% generation %}{{ message['content'] + '<|im_end|>\n' }}{% endgeneration %}"
    "{% else %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
    {"role": "user", "content": "And of Italy?"},
    {"role": "assistant", "content": "Rome."},
]


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_foreign_tokenizer(tmp_path_factory.mktemp("chat"), vocab_size=600, chat_template=CHATML_MARKED)


@pytest.fixture(scope="module")
def tok(chat_dir: Path) -> DistilleryTokenizer:
    return DistilleryTokenizer.load(chat_dir)


def _chat(messages: list[dict[str, str]], **extra: object) -> Example:
    return Example.model_validate({"id": "c1", "messages": messages, **extra})


def test_ids_equal_transformers_chat_ids(tok: DistilleryTokenizer, chat_dir: Path) -> None:
    encoded = encode_example(_chat(CONVERSATION), tok, max_length=512, truncate=False)
    hf = transformers.PreTrainedTokenizerFast.from_pretrained(str(chat_dir))
    assert encoded.input_ids == list(hf.apply_chat_template(CONVERSATION, tokenize=True, return_dict=True)["input_ids"])
    assert example_length(_chat(CONVERSATION), tok) == len(encoded.input_ids)


def test_targets_are_exactly_transformers_assistant_mask(tok: DistilleryTokenizer, chat_dir: Path) -> None:
    encoded = encode_example(_chat(CONVERSATION), tok, max_length=512, truncate=False)
    hf = transformers.PreTrainedTokenizerFast.from_pretrained(str(chat_dir))
    out = hf.apply_chat_template(CONVERSATION, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    mask = list(out["assistant_masks"])
    ours = [0] + [int(label != IGNORE_INDEX) for label in encoded.labels[:-1]]  # label t targets token t+1
    assert ours == mask and sum(mask) > 0


def test_labels_are_next_tokens_of_assistant_turns_only(tok: DistilleryTokenizer) -> None:
    encoded = encode_example(_chat(CONVERSATION), tok, max_length=512, truncate=False)
    ids, labels = encoded.input_ids, encoded.labels
    for t, label in enumerate(labels):
        if label != IGNORE_INDEX:
            assert label == ids[t + 1]
    targets = [label for label in labels if label != IGNORE_INDEX]
    text = tok.decode(targets)
    assert text == "The capital of France is Paris.<|im_end|>\nRome.<|im_end|>\n"
    assert encoded.prompt_len == next(t for t, label in enumerate([IGNORE_INDEX, *labels]) if label != IGNORE_INDEX)
    assert labels[-1] == IGNORE_INDEX and len(labels) == len(ids)


def test_no_extra_start_token(tok: DistilleryTokenizer) -> None:
    encoded = encode_example(_chat(CONVERSATION), tok, max_length=512, truncate=False)
    assert encoded.input_ids[0] == tok.token_id("<|im_start|>") and encoded.input_ids[1] != encoded.input_ids[0]


def test_truncation_keeps_the_beginning_and_too_long_is_refused(tok: DistilleryTokenizer) -> None:
    full = encode_example(_chat(CONVERSATION), tok, max_length=512, truncate=False)
    cut = encode_example(_chat(CONVERSATION), tok, max_length=20, truncate=True)
    assert cut.input_ids == full.input_ids[:20] and cut.labels == full.labels[:20] and cut.truncated
    with pytest.raises(SequenceTooLongError, match="max_length=20"):
        encode_example(_chat(CONVERSATION), tok, max_length=20, truncate=False)


def test_records_need_prompt_and_completion_or_messages() -> None:
    with pytest.raises(ValidationError, match="missing completion"):
        Example.model_validate({"id": "x", "prompt": "hi"})
    with pytest.raises(ValidationError, match="no assistant turn"):
        _chat([{"role": "user", "content": "hi"}])
    with pytest.raises(ValidationError):
        _chat([{"role": "wizard", "content": "hi"}, {"role": "assistant", "content": "x"}])
    extra = _chat([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo", "name": "bot"}],
                  source="web")
    assert extra.chat()[1] == {"role": "assistant", "content": "yo", "name": "bot"}
    assert extra.model_extra == {"source": "web"} and extra.is_chat


def test_template_that_rewrites_earlier_turns_is_refused(tmp_path: Path) -> None:
    rewriting = ("{% for m in messages %}{{ m['role'] + ':' + m['content'] }}"
                 "{% if loop.last %}{{ '<|im_end|>' }}{% else %}|{% endif %}{% endfor %}"
                 "{% if add_generation_prompt %}assistant:{% endif %}")
    bad = DistilleryTokenizer.load(build_foreign_tokenizer(tmp_path, vocab_size=400, chat_template=rewriting))
    with pytest.raises(ValueError, match="prefix-stable"):
        encode_example(_chat(CONVERSATION), bad, max_length=512, truncate=False)


def test_prompt_records_with_a_tokenizer_without_bos_start(tmp_path: Path) -> None:
    plain = DistilleryTokenizer.load(build_foreign_tokenizer(tmp_path, vocab_size=400))
    assert not plain.adds_bos
    ex = Example(id="p", prompt="Hello", completion=" there")
    encoded = encode_example(ex, plain, max_length=64, truncate=False)
    assert encoded.input_ids == [*plain.encode("Hello"), *plain.encode(" there"), plain.eos_id]
    assert encoded.prompt_len == len(plain.encode("Hello"))
    assert [x for x in encoded.labels if x != IGNORE_INDEX] == [*plain.encode(" there"), plain.eos_id]
    assert example_length(ex, plain) == len(encoded.input_ids)
    with pytest.raises(ValueError, match="empty prompt"):
        encode_example(Example(id="e", prompt="", completion="x"), plain, max_length=64, truncate=False)


def test_chat_jsonl_streams_through_the_data_pipeline(tok: DistilleryTokenizer, tmp_path: Path) -> None:
    from training.data import ExampleStream, StreamConfig

    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps({"id": f"c{i}", "messages": CONVERSATION}) + "\n" for i in range(4)))
    stream = ExampleStream([path], tok, StreamConfig(max_length=256, batch_size=2, shuffle_buffer=1))
    batches = list(stream)
    assert sum(int(b["num_target_tokens"]) for b in batches) == 4 * len(
        [x for x in encode_example(_chat(CONVERSATION), tok, 256, False).labels if x != IGNORE_INDEX])
    assert all(int(b["input_ids"][0, 0]) == tok.token_id("<|im_start|>") for b in batches)
