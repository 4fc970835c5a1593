"""Collation into right-padded tensors, packed rows, and the document attention mask."""

from __future__ import annotations

import pytest
import torch
from test_data_support import CharTokenizer

from training.data import EncodedExample, Example, PackedRow, block_causal_mask, collate, encode_example

TOK = CharTokenizer()


def enc(prompt: str, completion: str) -> EncodedExample:
    return encode_example(Example(id="x" + prompt, prompt=prompt, completion=completion), TOK, 32, truncate=False)


def test_collate_right_pads_every_field() -> None:
    short, long = enc("a", ""), enc("ab", "cde")
    batch = collate([short, long], pad_id=TOK.pad_id)
    assert set(batch) == {"input_ids", "labels", "attention_mask", "position_ids", "sequence_ids",
                          "num_target_tokens"}
    for name in ("input_ids", "labels", "attention_mask", "position_ids", "sequence_ids"):
        assert batch[name].shape == (2, 7) and batch[name].dtype == torch.long
    assert batch["input_ids"][0].tolist() == short.input_ids + [TOK.pad_id] * 4
    assert batch["labels"][0].tolist() == short.labels + [-100] * 4
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0, 0], [1] * 7]
    assert batch["position_ids"][0].tolist() == [0, 1, 2, 0, 0, 0, 0]
    assert batch["input_ids"][1].tolist() == long.input_ids
    assert int(batch["num_target_tokens"]) == 1 + 4 == int((batch["labels"] != -100).sum())


def test_packed_rows_restart_positions_and_number_documents() -> None:
    first, second = enc("ab", "c"), enc("d", "ef")
    row = PackedRow.pack([first, second])
    assert row.input_ids == first.input_ids + second.input_ids
    assert row.labels == first.labels + second.labels
    assert row.position_ids == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]
    assert row.sequence_ids == [1] * 5 + [2] * 5
    batch = collate([row, PackedRow.pack([enc("", "")])], pad_id=TOK.pad_id)
    assert batch["sequence_ids"][1].tolist() == [1, 1] + [0] * 8
    assert int(batch["num_target_tokens"]) == 2 + 3 + 1


def test_block_causal_mask_keeps_attention_inside_each_document() -> None:
    sequence_ids = torch.tensor([[1, 1, 2, 2, 2, 0]])
    mask = block_causal_mask(sequence_ids)[0]
    expected = torch.tensor([
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [0, 0, 1, 0, 0, 0],
        [0, 0, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 0],
        [0, 0, 0, 0, 0, 1],
    ], dtype=torch.bool)
    assert torch.equal(mask, expected)


def test_collate_refuses_empty_and_ragged_rows() -> None:
    with pytest.raises(ValueError, match="empty batch"):
        collate([], pad_id=0)
    with pytest.raises(ValueError, match="differ in length"):
        collate([PackedRow([1, 2], [2, -100], [0], [1, 1])], pad_id=0)
