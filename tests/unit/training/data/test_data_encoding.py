"""Tokenization: the next-token label alignment, prompt masking, and the truncation policy."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_data_support import CharTokenizer

from training.data import IGNORE_INDEX, Example, SequenceTooLongError, encode_example

TOK = CharTokenizer()
M = IGNORE_INDEX


def ids(text: str) -> list[int]:
    return TOK.encode(text)


def example(prompt: str, completion: str) -> Example:
    return Example(id="x", prompt=prompt, completion=completion)


def test_labels_are_next_tokens_of_the_completion_and_eos_with_the_prompt_masked() -> None:
    encoded = encode_example(example("ab", "cd"), TOK, max_length=16, truncate=False)
    a, b, c, d = ids("abcd")
    assert encoded.input_ids == [TOK.bos_id, a, b, c, d, TOK.eos_id]
    assert encoded.labels == [M, M, c, d, TOK.eos_id, M]
    assert encoded.prompt_len == 3
    assert encoded.num_targets == 3
    assert not encoded.truncated


def test_empty_prompt_lets_bos_predict_the_first_completion_token() -> None:
    encoded = encode_example(example("", "c"), TOK, max_length=8, truncate=False)
    assert encoded.input_ids == [TOK.bos_id, *ids("c"), TOK.eos_id]
    assert encoded.labels == [*ids("c"), TOK.eos_id, M]
    assert encoded.prompt_len == 1


@given(prompt=st.text(max_size=20), completion=st.text(max_size=20))
def test_alignment_holds_for_any_example(prompt: str, completion: str) -> None:
    encoded = encode_example(example(prompt, completion), TOK, max_length=64, truncate=False)
    n = len(encoded.input_ids)
    assert n == len(prompt) + len(completion) + 2 == len(encoded.labels)
    for t in range(n):
        expected = encoded.input_ids[t + 1] if encoded.prompt_len - 1 <= t <= n - 2 else M
        assert encoded.labels[t] == expected
    assert encoded.num_targets == len(completion) + 1


def test_too_long_without_truncation_raises() -> None:
    with pytest.raises(SequenceTooLongError, match="example 'x' has 8 tokens, over max_length=7"):
        encode_example(example("abc", "def"), TOK, max_length=7, truncate=False)


def test_truncation_drops_the_left_of_the_prompt_first() -> None:
    encoded = encode_example(example("abcdef", "xy"), TOK, max_length=7, truncate=True)
    assert encoded.input_ids == [TOK.bos_id, *ids("def"), *ids("xy"), TOK.eos_id]
    assert encoded.labels == [M, M, M, *ids("xy"), TOK.eos_id, M]
    assert encoded.prompt_len == 4
    assert (encoded.full_length, encoded.truncated) == (10, True)


def test_truncation_cuts_the_completion_end_once_the_prompt_is_gone() -> None:
    encoded = encode_example(example("ab", "uvwxyz"), TOK, max_length=5, truncate=True)
    assert encoded.input_ids == [TOK.bos_id, *ids("uvwx")]
    assert encoded.labels == ids("uvwxy")
    assert encoded.prompt_len == 1


def test_cutting_only_eos_still_targets_eos() -> None:
    encoded = encode_example(example("", "uvw"), TOK, max_length=4, truncate=True)
    assert encoded.input_ids == [TOK.bos_id, *ids("uvw")]
    assert encoded.labels == [*ids("uvw"), TOK.eos_id]


@given(prompt=st.text(max_size=30), completion=st.text(max_size=30), max_length=st.integers(2, 40))
def test_truncated_examples_fit_and_keep_labels_of_the_full_sequence(prompt: str, completion: str,
                                                                     max_length: int) -> None:
    full = encode_example(example(prompt, completion), TOK, max_length=100, truncate=False)
    cut = encode_example(example(prompt, completion), TOK, max_length=max_length, truncate=True)
    assert len(cut.input_ids) == len(cut.labels) == min(max_length, full.full_length)
    assert cut.input_ids[0] == TOK.bos_id
    completion_ids = ids(completion) + [TOK.eos_id]
    targets = [label for label in cut.labels if label != M]
    assert targets == completion_ids[:len(targets)]
    assert len(targets) >= 1
    if len(prompt) + len(completion) + 2 <= max_length:
        assert cut == full


def test_max_length_below_two_is_refused() -> None:
    with pytest.raises(ValueError, match="max_length must be >= 2"):
        encode_example(example("", ""), TOK, max_length=1, truncate=True)
