"""Sequence packing: a packed row computes exactly what its examples compute alone (model, teacher targets,
KD loss), the unpack/merge round trip, and a packed training run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kd_helpers import make_tiny_setup, tiny_config

from training.data.unpack import Unpacked
from training.kd.trainer import KDTrainer
from training.model import Student, packed_position_ids
from training.model_config import ModelConfig

CONFIG = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)


def _packed(lengths_per_row: list[list[int]], vocab: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids and sequence ids (B, T) for rows holding examples of the given lengths, right-padded."""
    gen = torch.Generator().manual_seed(seed)
    width = max(sum(row) for row in lengths_per_row)
    ids = torch.zeros((len(lengths_per_row), width), dtype=torch.long)
    seq = torch.zeros_like(ids)
    for b, row in enumerate(lengths_per_row):
        start = 0
        for number, length in enumerate(row, start=1):
            ids[b, start:start + length] = torch.randint(4, vocab, (length,), generator=gen)
            seq[b, start:start + length] = number
            start += length
    return ids, seq


rows_strategy = st.lists(st.lists(st.integers(1, 9), min_size=1, max_size=4), min_size=1, max_size=3)


@settings(max_examples=25, deadline=None)
@given(rows=rows_strategy, seed=st.integers(0, 1000))
def test_split_then_merge_restores_every_token(rows: list[list[int]], seed: int) -> None:
    ids, seq = _packed(rows, seed=seed)
    unpacked = Unpacked.split(ids, seq, pad_id=0)
    assert unpacked.input_ids.shape == (sum(len(r) for r in rows), max(max(r) for r in rows))
    assert unpacked.attention_mask.sum(1).tolist() == [n for r in rows for n in r]
    merged = unpacked.merge(unpacked.input_ids[..., None].float())[..., 0].long()
    assert torch.equal(torch.where(seq != 0, merged, 0), torch.where(seq != 0, ids, 0))
    assert bool((merged[seq == 0] == 0).all())


@settings(max_examples=15, deadline=None)
@given(rows=rows_strategy, seed=st.integers(0, 1000))
def test_a_packed_row_computes_what_each_example_computes_alone(rows: list[list[int]], seed: int) -> None:
    torch.manual_seed(0)
    model = Student(CONFIG).eval()
    ids, seq = _packed(rows, seed=seed)
    with torch.no_grad():
        packed = model.run(ids, sequence_ids=seq).logits
        assert packed is not None
        for b, row in enumerate(rows):
            start = 0
            for length in row:
                alone = model(ids[b:b + 1, start:start + length])[0]
                assert torch.allclose(packed[b, start:start + length], alone, atol=1e-5), (rows, b, start)
                start += length


def test_packed_position_ids_restart_per_example() -> None:
    _, seq = _packed([[3, 2, 1], [4]])
    assert packed_position_ids(seq).tolist() == [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 0]]
    with pytest.raises(ValueError, match="KV cache"):
        model = Student(CONFIG)
        cache = model.run(torch.ones((1, 2), dtype=torch.long), use_cache=True).past_key_values
        model.run(torch.ones((1, 2), dtype=torch.long), sequence_ids=torch.ones((1, 2), dtype=torch.long),
                  past_key_values=cache)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_tiny_setup(tmp_path_factory.mktemp("pack"))


def _unpacked_batch(batch: dict[str, torch.Tensor], pad_id: int) -> dict[str, torch.Tensor]:
    """The examples of a packed batch one a row (right-padded), as the bucketing path would collate them."""
    unpacked = Unpacked.split(batch["input_ids"], batch["sequence_ids"], pad_id)
    labels = torch.full_like(unpacked.input_ids, -100)
    for i, (b, start, length) in enumerate(zip(unpacked.rows.tolist(), unpacked.starts.tolist(),
                                               unpacked.lengths.tolist(), strict=True)):
        labels[i, :length] = batch["labels"][b, start:start + length]
    return {"input_ids": unpacked.input_ids, "attention_mask": unpacked.attention_mask, "labels": labels,
            "position_ids": packed_position_ids(unpacked.attention_mask),
            "sequence_ids": unpacked.attention_mask.clone(), "num_target_tokens": (labels != -100).sum()}


@pytest.mark.parametrize("chunked", [False, True])
def test_packed_kd_loss_equals_the_unpacked_loss(setup: dict[str, Path], tmp_path: Path, chunked: bool) -> None:
    loss = {"chunked": chunked, "chunk_size": 16}
    packed_trainer = KDTrainer(tiny_config(setup, tmp_path / "p", data={"batching": "pack"}, loss=loss))
    bucket_trainer = KDTrainer(tiny_config(setup, tmp_path / "b", loss=loss))
    batch = next(iter(packed_trainer.stream))
    assert int(batch["sequence_ids"].max()) >= 2  # rows really hold several examples
    plain = _unpacked_batch(batch, packed_trainer.tokenizer.pad_id)
    assert int(plain["num_target_tokens"]) == int(batch["num_target_tokens"])
    normalizer = float(batch["num_target_tokens"])
    a, terms_a = packed_trainer.micro_batch_loss(batch, normalizer)
    b, terms_b = bucket_trainer.micro_batch_loss(plain, normalizer)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), (terms_a, terms_b)
    a.backward()
    b.backward()
    for (name, pa), pb in zip(packed_trainer.student.named_parameters(), bucket_trainer.student.parameters(),
                              strict=True):
        assert torch.allclose(pa.grad, pb.grad, rtol=1e-4, atol=1e-6), name


def test_packed_training_runs_and_resumes_exactly(setup: dict[str, Path], tmp_path: Path) -> None:
    overrides = {"data": {"batching": "pack", "batch_size": 2}, "eval": {"generate_examples": 0}}
    full = KDTrainer(tiny_config(setup, tmp_path / "full", **overrides)).train()
    part = KDTrainer(tiny_config(setup, tmp_path / "split", **overrides), stop_after_steps=3).train()
    rest = KDTrainer(tiny_config(setup, tmp_path / "split", **overrides)).train()
    assert full.status == rest.status == "completed" and part.step == 3 and rest.step == 8
    assert full.student_dir is not None and rest.student_dir is not None
    a = Student.from_pretrained(full.student_dir).state_dict()
    b = Student.from_pretrained(rest.student_dir).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
