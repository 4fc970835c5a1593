"""Generation: KV cache vs recompute, batching with left padding, eos handling, top-k/top-p, sampling."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import Tensor

from training.generation import SamplingConfig, filter_logits, generate, left_pad, next_token
from training.model import Student
from training.model_config import ModelConfig

PROMPTS = [[17, 40, 99, 5, 230, 8, 77], [64], [300, 12, 45], [9, 9, 150, 151, 152]]


@pytest.fixture(scope="module")
def gen_model(tiny_config: ModelConfig) -> Student:
    """A tiny student with a wide initialisation, so greedy choices are not near-ties and outputs vary."""
    torch.manual_seed(11)
    return Student(dataclasses.replace(tiny_config, initializer_range=0.25)).eval()


def _no_eos(model: Student, rows: Tensor) -> int:
    """A token id that never appears in ``rows`` (used as eos so that no row stops)."""
    used = set(rows.flatten().tolist())
    return next(i for i in range(3, model.config.vocab_size) if i not in used)


def _greedy_reference(model: Student, prompt: list[int], steps: int) -> list[int]:
    """Greedy continuation of one unpadded prompt by repeated full forwards (no cache, no mask, no eos)."""
    ids = torch.tensor([prompt])
    out: list[int] = []
    for _ in range(steps):
        nxt = int(model(ids)[0, -1].argmax())
        out.append(nxt)
        ids = torch.cat((ids, torch.tensor([[nxt]])), dim=1)
    return out


def test_left_pad_layout() -> None:
    """left_pad right-aligns sequences, fills pad_id on the left and marks real tokens with 1."""
    ids, mask = left_pad([[5, 6, 7], [8], []], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8], [0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]


def test_kv_cache_generation_equals_no_cache_generation(gen_model: Student) -> None:
    """Greedy, batched, left-padded prompts of varying length: KV cache and recompute agree exactly."""
    ids, mask = left_pad(PROMPTS, pad_id=0)
    eos = 2
    cached = generate(gen_model, ids, attention_mask=mask, max_new_tokens=12, eos_token_id=eos)
    slow = generate(gen_model, ids, attention_mask=mask, max_new_tokens=12, eos_token_id=eos, use_cache=False)
    assert cached.shape[0] == len(PROMPTS) and cached.shape[1] > ids.shape[1]
    assert torch.equal(cached, slow)
    assert torch.equal(cached[:, : ids.shape[1]], ids), "the prompt is returned unchanged"


def test_batched_generation_equals_per_example_generation(gen_model: Student) -> None:
    """Each row of a left-padded batch continues exactly as the prompt alone (and as full-forward argmax)."""
    ids, mask = left_pad(PROMPTS, pad_id=0)
    eos = _no_eos(gen_model, ids)
    steps = 10
    batched = generate(gen_model, ids, attention_mask=mask, max_new_tokens=steps, eos_token_id=eos)
    assert batched.shape == (len(PROMPTS), ids.shape[1] + steps)
    continuations = batched[:, ids.shape[1] :]
    for row, prompt in enumerate(PROMPTS):
        alone = generate(gen_model, torch.tensor([prompt]), max_new_tokens=steps, eos_token_id=eos)
        assert alone[0, len(prompt) :].tolist() == continuations[row].tolist()
        assert continuations[row].tolist() == _greedy_reference(gen_model, prompt, steps)
    assert len({tuple(r) for r in continuations.tolist()}) > 1, "rows should differ (non-degenerate model)"


def test_eos_stops_row_and_pads_the_rest(gen_model: Student) -> None:
    """A row that emits eos gets pad ids afterwards; other rows are unaffected and run to max_new_tokens."""
    ids, mask = left_pad(PROMPTS[:2], pad_id=0)
    width, steps = ids.shape[1], 8
    free = generate(
        gen_model, ids, attention_mask=mask, max_new_tokens=steps, eos_token_id=_no_eos(gen_model, ids)
    )
    row0 = free[0, width:].tolist()
    row1 = free[1, width:].tolist()
    # eos := the first token of row 0 (after step 0) that row 1 never produces
    stop = next(i for i in range(1, steps - 1) if row0[i] not in row1 and row0[i] not in row0[:i])
    eos, pad = row0[stop], 7
    out = generate(
        gen_model, ids, attention_mask=mask, max_new_tokens=steps, eos_token_id=eos, pad_token_id=pad
    )
    assert out.shape == free.shape, "row 1 never finishes, so generation runs to max_new_tokens"
    assert out[0, width:].tolist() == row0[: stop + 1] + [pad] * (steps - stop - 1)
    assert out[1, width:].tolist() == row1


def test_generation_stops_early_when_all_rows_finished(gen_model: Student) -> None:
    """When every row has emitted eos the output is shorter than max_new_tokens; finished rows hold pad."""
    ids, mask = left_pad(PROMPTS[:2], pad_id=0)
    width = ids.shape[1]
    free = generate(
        gen_model, ids, attention_mask=mask, max_new_tokens=6, eos_token_id=_no_eos(gen_model, ids)
    )
    # eos := row 1's third token (this seeded model's row 0 produces it too, within 50 steps)
    eos = int(free[1, width + 2])
    out = generate(gen_model, ids, attention_mask=mask, max_new_tokens=50, eos_token_id=eos, pad_token_id=5)
    rows = out[:, width:].tolist()
    assert all(eos in r for r in rows), "generation returned before every row emitted eos"
    assert out.shape[1] - width == max(r.index(eos) for r in rows) + 1 < 50
    for r in rows:
        assert all(t == 5 for t in r[r.index(eos) + 1 :])


def test_single_prompt_stops_after_first_token_if_it_is_eos(gen_model: Student) -> None:
    """eos as the first generated token ends generation after one step."""
    prompt = torch.tensor([PROMPTS[0]])
    first = int(gen_model(prompt)[0, -1].argmax())
    out = generate(gen_model, prompt, max_new_tokens=20, eos_token_id=first)
    assert out.tolist() == [PROMPTS[0] + [first]]


def test_generate_defaults_to_config_eos_and_restores_training_mode(tiny_config: ModelConfig) -> None:
    """Without explicit ids the config's eos/pad are used; a model in train mode is returned in train mode."""
    torch.manual_seed(12)
    model = Student(dataclasses.replace(tiny_config, initializer_range=0.25))
    model.train()
    prompt = torch.tensor([PROMPTS[2]])
    with torch.no_grad():
        model.eval()
        first = int(model(prompt)[0, -1].argmax())
        model.train()
    model.config = dataclasses.replace(model.config, eos_token_id=first)
    out = generate(model, prompt, max_new_tokens=5)
    assert out.tolist() == [PROMPTS[2] + [first]]
    assert model.training


def test_max_new_tokens_zero_returns_prompt(gen_model: Student) -> None:
    """max_new_tokens=0 returns the prompt unchanged."""
    ids, mask = left_pad(PROMPTS, pad_id=0)
    assert torch.equal(generate(gen_model, ids, attention_mask=mask, max_new_tokens=0), ids)


# ---- filter_logits --------------------------------------------------------------------------------------


def _survivors(logits: Tensor) -> list[set[int]]:
    return [set(torch.nonzero(torch.isfinite(row)).flatten().tolist()) for row in logits]


PROBS = [0.10, 0.50, 0.15, 0.25]  # sorted: id1 .50, id3 .25, id2 .15, id0 .10
LOGITS = torch.tensor([[math.log(p) for p in PROBS]])


@pytest.mark.parametrize(
    ("top_k", "expected"),
    [(1, {1}), (2, {1, 3}), (3, {1, 2, 3}), (4, {0, 1, 2, 3}), (0, {0, 1, 2, 3}), (99, {0, 1, 2, 3})],
)
def test_filter_logits_top_k_exact_sets(top_k: int, expected: set[int]) -> None:
    """top_k keeps the k largest logits (0 or >= V keeps all)."""
    assert _survivors(filter_logits(LOGITS, top_k=top_k)) == [expected]


@pytest.mark.parametrize(
    ("top_p", "expected"),
    [
        (0.01, {1}),
        (0.45, {1}),
        (0.6, {1, 3}),
        (0.7, {1, 3}),
        (0.8, {1, 2, 3}),
        (0.95, {0, 1, 2, 3}),
        (1.0, {0, 1, 2, 3}),
    ],
)
def test_filter_logits_top_p_exact_sets(top_p: float, expected: set[int]) -> None:
    """top_p keeps the smallest most-likely set whose probability mass reaches top_p."""
    assert _survivors(filter_logits(LOGITS, top_p=top_p)) == [expected]


def test_filter_logits_top_p_applies_to_the_top_k_renormalised_distribution() -> None:
    """After top_k=3 the mass of {1, 3} is .75/.90 > .8, so top_p=.8 keeps two tokens (three without it)."""
    assert _survivors(filter_logits(LOGITS, top_k=3, top_p=0.8)) == [{1, 3}]
    assert _survivors(filter_logits(LOGITS, top_p=0.8)) == [{1, 2, 3}]


def test_filter_logits_keeps_values_rows_independent_and_input_untouched() -> None:
    """Survivors keep their logits, dropped ones become -inf, rows are filtered alone, input is unchanged."""
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.5], [4.0, -1.0, 0.0, 5.0]])
    before = logits.clone()
    out = filter_logits(logits, top_k=2)
    assert torch.equal(logits, before)
    assert _survivors(out) == [{1, 2}, {0, 3}]
    assert out[0, 1] == 3.0 and out[1, 3] == 5.0
    assert out[0, 0] == float("-inf")


def test_filter_logits_always_keeps_argmax() -> None:
    """A dominant token survives even with a tiny top_p; ties at the k-th value are all kept."""
    logits = torch.tensor([[0.0, 10.0, 0.0]])
    assert _survivors(filter_logits(logits, top_p=1e-6)) == [{1}]
    tied = torch.tensor([[2.0, 1.0, 2.0, 0.0]])
    assert _survivors(filter_logits(tied, top_k=1)) == [{0, 2}]


# ---- sampling -------------------------------------------------------------------------------------------


def test_sampling_is_reproducible_with_a_seeded_generator(gen_model: Student) -> None:
    """The same seed gives the same samples; a different seed gives different ones."""
    ids, mask = left_pad(PROMPTS, pad_id=0)
    eos = _no_eos(gen_model, ids)

    def sample(seed: int) -> Tensor:
        gen = torch.Generator().manual_seed(seed)
        return generate(
            gen_model,
            ids,
            attention_mask=mask,
            max_new_tokens=10,
            do_sample=True,
            temperature=1.5,
            eos_token_id=eos,
            generator=gen,
        )

    assert torch.equal(sample(123), sample(123))
    assert not torch.equal(sample(123), sample(124))


def test_sampling_with_top_k_1_equals_greedy(gen_model: Student) -> None:
    """do_sample with top_k=1 picks the argmax every step, whatever the temperature."""
    ids, mask = left_pad(PROMPTS, pad_id=0)
    eos = _no_eos(gen_model, ids)
    greedy = generate(gen_model, ids, attention_mask=mask, max_new_tokens=8, eos_token_id=eos)
    sampled = generate(
        gen_model,
        ids,
        attention_mask=mask,
        max_new_tokens=8,
        eos_token_id=eos,
        do_sample=True,
        top_k=1,
        temperature=5.0,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(greedy, sampled)


def test_sampled_tokens_stay_in_the_filtered_set_with_softmax_frequencies() -> None:
    """Samples only come from the top-k set, at about the renormalised softmax frequencies."""
    logits = torch.log(torch.tensor([0.1, 0.5, 0.15, 0.25])).expand(4000, 4)
    gen = torch.Generator().manual_seed(0)
    picks = next_token(logits, SamplingConfig(do_sample=True, top_k=2), gen)
    assert set(picks.tolist()) == {1, 3}
    assert abs((picks == 1).float().mean().item() - 0.5 / 0.75) < 0.03


def test_low_temperature_concentrates_on_the_argmax() -> None:
    """Temperature divides logits: at T=0.05 nearly every sample is the argmax, at T=1 many are not."""
    logits = torch.tensor([[1.0, 1.5, 0.5, 1.2]]).expand(2000, 4)
    cold = next_token(
        logits, SamplingConfig(do_sample=True, temperature=0.05), torch.Generator().manual_seed(1)
    )
    warm = next_token(
        logits, SamplingConfig(do_sample=True, temperature=1.0), torch.Generator().manual_seed(1)
    )
    assert (cold == 1).float().mean() > 0.99
    assert (warm == 1).float().mean() < 0.5


def test_greedy_next_token_is_argmax() -> None:
    """do_sample=False returns the row-wise argmax."""
    logits = torch.tensor([[0.1, 0.9, 0.3], [2.0, -1.0, 1.0]])
    assert next_token(logits, SamplingConfig()).tolist() == [1, 0]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": 0.0},
        {"temperature": -1.0},
        {"temperature": float("nan")},
        {"temperature": float("inf")},
        {"top_k": -1},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"top_p": -0.1},
        {"top_p": float("nan")},
    ],
)
def test_sampling_config_validation(kwargs: dict[str, float]) -> None:
    """Out-of-range temperature / top_k / top_p raise ValueError (also via generate)."""
    with pytest.raises(ValueError):
        SamplingConfig(**kwargs)  # type: ignore[arg-type]


def test_sampling_config_accepts_valid_values_and_generate_validates(gen_model: Student) -> None:
    """Valid settings construct; generate refuses an invalid temperature before running the model."""
    assert SamplingConfig(do_sample=True, temperature=0.7, top_k=50, top_p=0.9).top_p == 0.9
    with pytest.raises(ValueError, match="temperature"):
        generate(gen_model, torch.tensor([[5, 6]]), temperature=0.0)
