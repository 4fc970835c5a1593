"""The shared verification pieces: error statistics, the greedy loop, prompts and output directories."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from conversion.verify_common import (
    ErrorStats,
    StepFn,
    check_greedy,
    check_output_dir,
    copy_companion_files,
    eager_step,
    encode_prompts,
    greedy_generate,
    load_prompts,
    measure_errors,
    reference_batches,
    resolve_prompts,
    verify_step,
)
from training.model import Student


def test_error_stats_abs_rel_and_argmax_on_real_positions() -> None:
    ref = np.array([[[1.0, 4.0, 2.0], [0.5, 0.1, 0.2]]], dtype=np.float32)  # (1, 2, 3)
    got = ref.copy()
    got[0, 0, 2] = 4.5  # position 0: argmax flips, abs error 2.5
    got[0, 1, 0] = 0.0  # position 1 (padding): argmax flips too, but it is not real
    stats = ErrorStats()
    cache = [np.zeros((1, 1, 2, 2), dtype=np.float32)]
    stats.update(ref, got, np.array([[True, False]]), cache, [cache[0] + 0.25])
    assert stats.max_abs_error == pytest.approx(2.5)
    assert stats.max_rel_error == pytest.approx(2.5 / 4.0)
    assert stats.max_abs_error_present == pytest.approx(0.25)
    assert (stats.argmax_agree, stats.argmax_total) == (0, 1)
    stats.update(ref, ref, np.array([[True, True]]), cache, cache)
    assert stats.argmax_agreement == pytest.approx(2 / 3)
    assert stats.max_abs_error == pytest.approx(2.5)  # a running maximum


def test_error_stats_rejects_shape_mismatch() -> None:
    stats = ErrorStats()
    with pytest.raises(ValueError, match="shape"):
        stats.update(np.zeros((1, 2, 3)), np.zeros((1, 3, 3)), np.ones((1, 2), bool), [], [])


def test_reference_batches_cover_batch_sizes_and_left_padding() -> None:
    batches = {b.name: b for b in reference_batches(vocab_size=50, pad_id=0)}
    shapes = {name: b.input_ids.shape for name, b in batches.items()}
    assert shapes == {"fixed_b1_t12": (1, 12), "fixed_b1_t1": (1, 1), "random_b3_t10_left_padded": (3, 10),
                      "random_b2_t16": (2, 16)}
    padded = batches["random_b3_t10_left_padded"]
    assert padded.attention_mask.sum(1).tolist() == [10, 7, 4]
    assert (padded.input_ids[padded.attention_mask == 0] == 0).all()
    assert all(b.input_ids.dtype == np.int64 and b.input_ids.max() < 50 for b in batches.values())


def test_eager_against_itself_has_zero_error(tiny_student: Student) -> None:
    stats, names = measure_errors(tiny_student, eager_step(tiny_student), decode_steps=2, chunk=2)
    assert stats.max_abs_error == 0.0 and stats.max_abs_error_present == 0.0
    assert stats.argmax_agreement == 1.0
    assert stats.cached_steps == len(names) * 3


def test_greedy_loop_matches_generate_and_a_wrong_backend_is_caught(tiny_student: Student) -> None:
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12]]
    assert check_greedy(tiny_student, eager_step(tiny_student), prompts, max_new_tokens=5).identical
    reference = eager_step(tiny_student)

    def off_by_one(ids: np.ndarray, mask: np.ndarray,
                   past: list[np.ndarray] | None) -> tuple[np.ndarray, list[np.ndarray]]:
        logits, cache = reference(ids, mask, past)
        return np.roll(logits, 1, axis=-1), cache

    result = check_greedy(tiny_student, off_by_one, prompts, max_new_tokens=5)
    assert not result.identical and result.mismatches[0].startswith("batched")


def test_greedy_loop_pads_finished_rows_and_stops_when_all_finish() -> None:
    vocab = 6

    def scripted(ids: np.ndarray, mask: np.ndarray,
                 past: list[np.ndarray] | None) -> tuple[np.ndarray, list[np.ndarray]]:
        """Row 0 always predicts token 2 (eos), row 1 predicts 4 then eos once its mask is 5 long."""
        logits = np.zeros((ids.shape[0], ids.shape[1], vocab), dtype=np.float32)
        logits[0, -1, 2] = 1.0
        logits[1, -1, 2 if mask.shape[1] >= 5 else 4] = 1.0
        return logits, []

    out = greedy_generate(scripted, np.array([[1, 1, 1], [1, 1, 1]]), np.ones((2, 3), np.int64),
                          max_new_tokens=10, eos_token_id=2, pad_token_id=0)
    assert out.tolist() == [[1, 1, 1, 2, 0, 0], [1, 1, 1, 4, 4, 2]]


def test_prompts_file_and_fallback_ids(tmp_path: Path) -> None:
    path = tmp_path / "prompts.txt"
    path.write_text("first\\nline\n\n  \nsecond\n")
    assert load_prompts(path) == ["first\nline", "second"]
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="no prompts"):
        load_prompts(tmp_path / "empty.txt")
    ids = encode_prompts(None, ["a", "b"], vocab_size=40)
    assert [len(p) for p in ids] == [3, 6] and all(0 <= t < 40 for p in ids for t in p)


def test_output_dir_rules(tmp_path: Path) -> None:
    source = tmp_path / "runs" / "student"
    source.mkdir(parents=True)
    (source / "config.json").write_text("{}")
    check_output_dir(tmp_path / "fresh", source)  # missing: fine
    previous = tmp_path / "previous"
    previous.mkdir()
    (previous / "report.json").write_text("{}")
    check_output_dir(previous, source)  # a previous export: replaceable
    with pytest.raises(ValueError, match="student directory"):
        check_output_dir(tmp_path / "runs", source)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        check_output_dir(tmp_path / "file", source)
    assert copy_companion_files(source, previous) == ["config.json"]


def test_resolve_prompts_with_and_without_tokenizer(tiny_artifact: Path, tmp_path: Path) -> None:
    prompts_file = tmp_path / "p.txt"
    prompts_file.write_text("Set a timer\n")
    with_tok = resolve_prompts(tiny_artifact, prompts_file, vocab_size=320)
    assert with_tok.source == "tokenizer" and with_tok.texts == ["Set a timer"]
    assert with_tok.tokenizer is not None and with_tok.ids == [with_tok.tokenizer.encode("Set a timer")]
    sample = with_tok.samples([[40, 2, 0, 0]], eos_token_id=2)[0]
    assert sample["token_ids"] == [40, 2]  # cut after eos
    assert sample["completion"] == with_tok.tokenizer.decode([40, 2])
    bare = tmp_path / "bare"
    bare.mkdir()
    without = resolve_prompts(bare, None, vocab_size=320)
    assert without.source == "token_ids" and without.texts is None and len(without.ids) == 4
    assert without.samples([[1], [2], [3], [4]], eos_token_id=2)[0] == {
        "prompt": None, "prompt_ids": without.ids[0], "token_ids": [1], "completion": None}
    with pytest.raises(ValueError, match="needs a tokenizer"):
        resolve_prompts(bare, prompts_file, vocab_size=320)


def _scaled(step: StepFn, factor: float) -> StepFn:
    """``step`` with logits multiplied by ``factor`` (caches unchanged)."""

    def run(ids: np.ndarray, mask: np.ndarray,
            past: list[np.ndarray] | None) -> tuple[np.ndarray, list[np.ndarray]]:
        logits, cache = step(ids, mask, past)
        return logits * np.float32(factor), cache

    return run


@pytest.mark.parametrize(("factor", "passed"), [(1 + 3e-6, True), (1 + 5e-5, False)])
def test_verify_step_is_relative_to_the_logit_scale(tiny_student: Student, factor: float, passed: bool) -> None:
    """A student with logits in the hundreds: an fp32-round-off-sized relative error passes even though its
    absolute error is above the old 1e-4 rule; a 5e-5 relative error fails."""
    big = copy.deepcopy(tiny_student)
    with torch.no_grad():
        big.model.norm.weight.mul_(1000.0)  # logits x1000, same tokens
    checks, _ = verify_step(big, _scaled(eager_step(big), factor), [[5, 6, 7]], max_new_tokens=3,
                            decode_steps=1, chunk=0)
    assert checks.max_abs_error > 1e-4  # the old absolute rule failed both
    assert checks.passed is passed and checks.greedy_tokens_identical
    assert checks.rtol == 1e-5 and checks.atol is None
    assert checks.max_rel_error == pytest.approx(factor - 1, rel=0.05)
    assert checks.failures == ([] if passed else [f"max_rel_error {checks.max_rel_error:.3g} exceeds the tolerance 1e-05"])
    with_atol, _ = verify_step(big, _scaled(eager_step(big), factor), [[5, 6, 7]], atol=1e-4, max_new_tokens=3,
                               decode_steps=1, chunk=0)
    assert not with_atol.passed and "absolute bound" in with_atol.failures[-1]  # --atol still bounds when asked
