"""Latent token layout: stages, latent counts, stage mixing, and the left/right-padded batch."""

from __future__ import annotations

import random

import pytest

from training.data import IGNORE_INDEX
from training.reasoning.latent_data import (
    BOT_ID,
    EOT_ID,
    LatentRow,
    collate_latent,
    encode_latent_example,
    latent_count,
    latent_row,
    sample_stages,
    suffix_labels,
    thought_slot,
)
from training.tasks.arithmetic import generate
from training.tasks.markup import format_completion
from training.tokenizer import DistilleryTokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def examples() -> list[dict]:
    return [dict(e) for e in generate(12, 3)]


def test_suffixes_drop_steps_from_the_front(tiny_tokenizer: DistilleryTokenizer, examples: list[dict]) -> None:
    """suffixes[k] is <eot> + the completion without its first k steps + eos; the prompt starts with bos."""
    example = next(e for e in examples if len(e["steps"]) == 3)
    enc = encode_latent_example(example, tiny_tokenizer)
    assert enc.n_steps == 3
    assert enc.prompt_ids[0] == tiny_tokenizer.bos_id
    assert tiny_tokenizer.decode(enc.prompt_ids[1:]) == example["prompt"]
    for k, suffix in enumerate(enc.suffixes):
        assert suffix[0] == EOT_ID and suffix[-1] == tiny_tokenizer.eos_id
        rest = example["steps"][k:]
        assert tiny_tokenizer.decode(suffix[1:-1]) == format_completion(rest, example["answer"], bool(rest))
    assert tiny_tokenizer.decode(enc.suffixes[3][1:-1]) == f"<answer>{example['answer']}</answer>"
    assert tiny_tokenizer.decode(enc.suffixes[0][1:-1]) == example["completion"]


def test_latent_count_uniform_and_adaptive() -> None:
    assert latent_count(2, 3, 2) == 4
    assert latent_count(3, 2, 2) == 6  # Coconut: the stage decides, even past the example's steps
    assert latent_count(3, 2, 2, adaptive=True) == 4
    assert latent_count(0, 3, 1) == 0
    with pytest.raises(ValueError):
        latent_count(1, 2, 0)


def test_latent_row_layout(tiny_tokenizer: DistilleryTokenizer, examples: list[dict]) -> None:
    enc = encode_latent_example(next(e for e in examples if len(e["steps"]) == 2), tiny_tokenizer)
    row0 = latent_row(enc, 0, 1)
    assert row0.prefix == [*enc.prompt_ids, BOT_ID] and row0.n_latents == 0 and row0.suffix == enc.suffixes[0]
    row1 = latent_row(enc, 1, 2)
    assert row1.n_latents == 2 and row1.suffix == enc.suffixes[1]
    row3 = latent_row(enc, 3, 1)
    assert row3.n_latents == 3 and row3.suffix == enc.suffixes[2] and row3.stage == 3


def test_sample_stages_mixing() -> None:
    rng = random.Random(0)
    assert sample_stages(50, 2, 0.0, rng) == [2] * 50
    mixed = sample_stages(200, 3, 1.0, rng)
    assert set(mixed) == {0, 1, 2}
    assert sample_stages(20, 0, 1.0, rng) == [0] * 20
    some = sample_stages(2000, 2, 0.25, random.Random(1))
    assert 0.2 < sum(s < 2 for s in some) / 2000 < 0.3
    with pytest.raises(ValueError):
        sample_stages(1, 1, 1.5, rng)


def test_collate_pads_prefix_left_and_suffix_right() -> None:
    rows = [LatentRow(prefix=[1, 40, 41, BOT_ID], n_latents=2, suffix=[EOT_ID, 50, 51, 2], stage=2),
            LatentRow(prefix=[1, 40, 41, 42, 43, BOT_ID], n_latents=0, suffix=[EOT_ID, 2], stage=0)]
    batch = collate_latent(rows, pad_id=0)
    assert batch.prefix_ids.tolist() == [[0, 0, 1, 40, 41, BOT_ID], [1, 40, 41, 42, 43, BOT_ID]]
    assert batch.prefix_mask.tolist() == [[0, 0, 1, 1, 1, 1], [1] * 6]
    assert batch.suffix_ids.tolist() == [[EOT_ID, 50, 51, 2], [EOT_ID, 2, 0, 0]]
    assert batch.suffix_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch.labels.tolist() == [[50, 51, 2, IGNORE_INDEX], [2, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch.latent_counts.tolist() == [2, 0] and batch.stages.tolist() == [2, 0]
    assert batch.num_target_tokens == 4
    assert suffix_labels([EOT_ID, 7, 2]) == [7, 2, IGNORE_INDEX]


def test_labels_never_target_markers_or_question(tiny_tokenizer: DistilleryTokenizer, examples: list[dict]) -> None:
    rows = [latent_row(encode_latent_example(e, tiny_tokenizer), s, 1) for e, s in zip(examples, [0, 1, 2, 3] * 3,
                                                                                         strict=True)]
    batch = collate_latent(rows, tiny_tokenizer.pad_id)
    targets = batch.labels[batch.labels != IGNORE_INDEX]
    assert not bool(((targets == BOT_ID) | (targets == EOT_ID)).any())
    assert batch.num_target_tokens == sum(len(r.suffix) - 1 for r in rows)
    assert bool((batch.prefix_ids[:, -1] == BOT_ID).all())


def test_collate_refuses_rows_without_markers() -> None:
    with pytest.raises(ValueError, match="<bot>"):
        collate_latent([LatentRow(prefix=[1, 5], n_latents=1, suffix=[EOT_ID, 2], stage=1)], 0)
    with pytest.raises(ValueError):
        collate_latent([], 0)


def test_thought_slot_is_the_last_latent_of_each_step() -> None:
    assert [thought_slot(i, 1) for i in range(3)] == [0, 1, 2]
    assert [thought_slot(i, 2) for i in range(3)] == [1, 3, 5]
    with pytest.raises(ValueError):
        thought_slot(0, 0)


def test_rows_carry_the_replaced_steps_as_decoder_targets(tiny_tokenizer: DistilleryTokenizer,
                                                          examples: list[dict]) -> None:
    """Stage s supervises exactly the first min(s, n) steps, each with its own text; collation indexes the
    thought slot of each and pads the step ids on the right."""
    encoded = [encode_latent_example(e, tiny_tokenizer) for e in examples[:3]]
    for enc, example in zip(encoded, examples[:3], strict=True):
        assert [tiny_tokenizer.decode(ids) for ids in enc.step_ids] == [f"<step>{s}</step>" for s in example["steps"]]
    rows = [latent_row(enc, stage, 2) for enc, stage in zip(encoded, (0, 1, 3), strict=True)]
    assert [len(r.latent_steps) for r in rows] == [0, 1, min(3, encoded[2].n_steps)]
    batch = collate_latent(rows, tiny_tokenizer.pad_id, latents_per_step=2)
    assert batch.thought_index is not None and batch.thought_ids is not None and batch.thought_mask is not None
    expected = [(1, 1)] + [(2, thought_slot(i, 2)) for i in range(len(rows[2].latent_steps))]
    assert batch.thought_index.tolist() == [list(p) for p in expected]
    targets = [*rows[1].latent_steps, *rows[2].latent_steps]
    for n, target in enumerate(targets):
        length = int(batch.thought_mask[n].sum())
        assert batch.thought_ids[n, :length].tolist() == target and length == len(target)
        assert bool((batch.thought_ids[n, length:] == tiny_tokenizer.pad_id).all())
    assert collate_latent(rows, tiny_tokenizer.pad_id).thought_index is None  # off unless asked for
    empty = collate_latent(rows[:1], tiny_tokenizer.pad_id, latents_per_step=2)
    assert empty.thought_index is not None and empty.thought_index.shape == (0, 2)
