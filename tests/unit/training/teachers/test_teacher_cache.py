"""Top-k cache: build from a live teacher, look up by token ids, resume after a crash, and its KD loss."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from training.data import Example, collate, encode_example
from training.losses import forward_kl, sparse_topk_kl
from training.model import Student
from training.model_config import ModelConfig
from training.teachers.base import TeacherTargets
from training.teachers.cache_builder import CacheBuildError, CacheSettings, build_topk_cache
from training.teachers.cache_teacher import CacheMissError, CacheTeacher
from training.teachers.checkpoint_teacher import CheckpointTeacher
from training.teachers.topk_storage import CacheFormatError, read_manifest
from training.tokenizer import DistilleryTokenizer


def _records(n: int, offset: int = 0) -> list[dict[str, str]]:
    return [
        {"id": f"ex{i}", "prompt": f"Q: {i**3}+{i % 7}=?", "completion": f"<answer>{i**3 + i % 7}</answer>"}
        for i in range(offset, offset + n)
    ]


def _write(path: Path, records: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def teacher_dir(
    tmp_path_factory: pytest.TempPathFactory, tiny_config: ModelConfig, tiny_tokenizer: DistilleryTokenizer
) -> Path:
    """A tiny teacher with peaked (large-init) output distributions."""
    import dataclasses

    torch.manual_seed(3)
    out = tmp_path_factory.mktemp("cache_teacher") / "teacher"
    Student(dataclasses.replace(tiny_config, initializer_range=0.2)).save_pretrained(
        out, tokenizer=tiny_tokenizer
    )
    return out


@pytest.fixture(scope="module")
def teacher(teacher_dir: Path) -> CheckpointTeacher:
    return CheckpointTeacher(teacher_dir)


def _batch(tokenizer: DistilleryTokenizer, records: list[dict[str, str]], max_length: int = 128) -> dict:
    encoded = [encode_example(Example(**r), tokenizer, max_length, False) for r in records]
    return collate(encoded, tokenizer.pad_id)


class CountingTeacher:
    """Wraps a teacher; counts sequences sent, and raises after ``fail_after`` calls (a simulated crash)."""

    def __init__(self, inner: CheckpointTeacher, fail_after: int | None = None) -> None:
        self.inner = inner
        self.tokenizer = inner.tokenizer
        self.vocab_size = inner.vocab_size
        self.calls = 0
        self.sequences = 0
        self.fail_after = fail_after

    def targets(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> TeacherTargets:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated crash")
        self.calls += 1
        self.sequences += input_ids.shape[0]
        return self.inner.targets(input_ids, attention_mask)

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.inner.logits(input_ids, attention_mask)


def _build(teacher, data: Path, out: Path, **kw) -> object:
    settings = CacheSettings(**{"k": 16, "shard_size": 4, "batch_size": 3, **kw})
    return build_topk_cache(
        teacher, [data], out, settings, teacher_description={"kind": "test"}, progress=False
    )


def test_cache_targets_equal_teacher_topk(tmp_path: Path, teacher: CheckpointTeacher) -> None:
    records = _records(10)
    manifest = _build(teacher, _write(tmp_path / "d.jsonl", records), tmp_path / "cache", k=16)
    assert manifest.complete and manifest.totals["entries"] == 10 and len(manifest.shards) == 3
    assert manifest.bytes_per_token == TopK_bytes(teacher.vocab_size, 16)
    cache = CacheTeacher(tmp_path / "cache")
    batch = _batch(teacher.tokenizer, records[2:7])
    got = cache.targets(batch["input_ids"], batch["attention_mask"])
    assert got.is_sparse and got.topk_ids.shape == (5, batch["input_ids"].shape[1], 16)
    logp = torch.log_softmax(teacher.logits(batch["input_ids"], batch["attention_mask"]).double(), -1)
    values, ids = logp.topk(16, dim=-1)
    real = batch["attention_mask"].bool()
    assert torch.equal(got.topk_ids[real], ids[real])
    # q8: each probability within a few percent, relative to the row's top probability
    p, p_hat = values[real].exp(), got.topk_logprobs[real].double().exp()
    assert ((p - p_hat).abs() / p[:, :1]).max() < 0.02
    # padding positions: distinct ids 0..K-1 with -inf
    pad = ~real
    assert torch.isneginf(got.topk_logprobs[pad]).all()
    assert torch.equal(got.topk_ids[pad][0], torch.arange(16))


def TopK_bytes(vocab: int, k: int) -> int:  # noqa: N802 - reads as the quantity
    return -(-k * max(1, (vocab - 1).bit_length()) // 8) + k + 2


def test_manifest_records_compression_kl(tmp_path: Path, teacher: CheckpointTeacher) -> None:
    _build(teacher, _write(tmp_path / "d.jsonl", _records(6)), tmp_path / "cache", k=32)
    kl = read_manifest(tmp_path / "cache").kl
    assert 0 < kl["kl_quantization_mean"] < 1e-3
    assert kl["kl_truncation_mean"] <= kl["kl_full_mean"] + 1e-9
    assert kl["kl_full_mean"] - kl["kl_truncation_mean"] < 2e-3


def test_left_padded_batches_find_the_same_entries(tmp_path: Path, teacher: CheckpointTeacher) -> None:
    records = _records(3)
    _build(teacher, _write(tmp_path / "d.jsonl", records), tmp_path / "cache")
    cache = CacheTeacher(tmp_path / "cache")
    right = _batch(teacher.tokenizer, records)
    ids, mask = right["input_ids"], right["attention_mask"]
    lengths = mask.sum(-1)
    left_ids, left_mask = torch.zeros_like(ids), torch.zeros_like(mask)
    for b, n in enumerate(lengths.tolist()):
        left_ids[b, ids.shape[1] - n :] = ids[b, :n]
        left_mask[b, ids.shape[1] - n :] = 1
    a = cache.targets(ids, mask)
    b = cache.targets(left_ids, left_mask)
    assert torch.equal(a.topk_ids[mask.bool()], b.topk_ids[left_mask.bool()])
    assert torch.equal(a.topk_logprobs[mask.bool()], b.topk_logprobs[left_mask.bool()])


def test_missing_sequence_and_logits_are_clear_errors(tmp_path: Path, teacher: CheckpointTeacher) -> None:
    _build(teacher, _write(tmp_path / "d.jsonl", _records(3)), tmp_path / "cache")
    cache = CacheTeacher(tmp_path / "cache")
    batch = _batch(teacher.tokenizer, _records(1, offset=50))
    with pytest.raises(CacheMissError, match="not in the top-k cache"):
        cache.targets(batch["input_ids"], batch["attention_mask"])
    with pytest.raises(NotImplementedError, match="use targets"):
        cache.logits(batch["input_ids"])


def test_sparse_loss_with_full_k_equals_dense_kl(tmp_path: Path, teacher: CheckpointTeacher) -> None:
    """k = V: the cached top-k loss equals the dense forward KL up to the quantization error."""
    records = _records(4)
    vocab = teacher.vocab_size
    data = _write(tmp_path / "d.jsonl", records)
    batch = _batch(teacher.tokenizer, records)
    target = batch["labels"] != -100
    torch.manual_seed(0)
    student_logits = torch.randn(*batch["input_ids"].shape, vocab) * 2
    dense = forward_kl(
        student_logits, teacher.logits(batch["input_ids"], batch["attention_mask"]), mask=target
    )
    for logprobs, tol in (("fp16", 1e-4), ("q8", 5e-4)):
        _build(teacher, data, tmp_path / logprobs, k=vocab, logprobs=logprobs)
        got = CacheTeacher(tmp_path / logprobs).targets(batch["input_ids"], batch["attention_mask"])
        sparse = sparse_topk_kl(student_logits, got.topk_ids, got.topk_logprobs, mask=target)
        assert abs(float(sparse) - float(dense)) < tol * float(dense)


def test_sparse_loss_at_k32_is_close_to_dense_and_trains(tmp_path: Path, teacher: CheckpointTeacher) -> None:
    records = _records(4)
    _build(teacher, _write(tmp_path / "d.jsonl", records), tmp_path / "cache", k=32)
    cache = CacheTeacher(tmp_path / "cache")
    batch = _batch(teacher.tokenizer, records)
    target = batch["labels"] != -100
    teacher_logits = teacher.logits(batch["input_ids"], batch["attention_mask"])
    got = cache.targets(batch["input_ids"], batch["attention_mask"])
    # a student near the teacher: the sparse loss tracks the dense one
    student = (teacher_logits + 0.3 * torch.randn_like(teacher_logits)).requires_grad_(True)
    dense = forward_kl(student.detach(), teacher_logits, mask=target)
    sparse = sparse_topk_kl(student, got.topk_ids, got.topk_logprobs, mask=target)
    assert float(sparse.detach()) <= float(dense) + 1e-3  # bucketing the tail can only lose information
    assert float(sparse.detach()) > 0.3 * float(dense)
    sparse.backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0


def test_resume_after_crash_keeps_finished_shards(tmp_path: Path, teacher: CheckpointTeacher) -> None:
    records = _records(11)
    data = _write(tmp_path / "d.jsonl", records)
    out = tmp_path / "cache"
    crashing = CountingTeacher(teacher, fail_after=2)  # 2 batches of 3 = 6 sequences, one shard of 4 finished
    with pytest.raises(KeyboardInterrupt):
        _build(crashing, data, out)
    partial = read_manifest(out)
    assert not partial.complete and [s.name for s in partial.shards] == ["shard-00000"]
    first_shard = (out / "shard-00000" / "ids.npy").stat().st_mtime_ns
    with pytest.raises(CacheFormatError, match="incomplete"):
        CacheTeacher(out)
    resumed = CountingTeacher(teacher)
    manifest = _build(resumed, data, out)
    assert manifest.complete and manifest.totals["entries"] == 11
    assert resumed.sequences == 11 - 4  # the finished shard's sequences are not asked again
    assert manifest.totals["resumed_entries"] == 4
    assert (out / "shard-00000" / "ids.npy").stat().st_mtime_ns == first_shard
    fresh = _build(teacher, data, tmp_path / "fresh")
    batch = _batch(teacher.tokenizer, records)
    a = CacheTeacher(out).targets(batch["input_ids"], batch["attention_mask"])
    b = CacheTeacher(tmp_path / "fresh").targets(batch["input_ids"], batch["attention_mask"])
    assert torch.equal(a.topk_ids, b.topk_ids) and torch.equal(a.topk_logprobs, b.topk_logprobs)
    assert fresh.totals["entries"] == 11
    # a finished cache is left alone; a rerun asks the teacher nothing
    again = CountingTeacher(teacher)
    _build(again, data, out)
    assert again.sequences == 0


def test_corrupt_finished_shard_is_redone(tmp_path: Path, teacher: CheckpointTeacher) -> None:
    data = _write(tmp_path / "d.jsonl", _records(10))
    out = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        _build(CountingTeacher(teacher, fail_after=3), data, out)  # 9 sequences: shards 0 and 1 finished
    assert len(read_manifest(out).shards) == 2
    path = out / "shard-00001" / "tail.npy"
    path.write_bytes(path.read_bytes()[:-2] + b"\x00\x00")
    resumed = CountingTeacher(teacher)
    manifest = _build(resumed, data, out)
    assert resumed.sequences == 10 - 4 and manifest.complete
    CacheTeacher(out)  # verifies every hash


def test_different_settings_are_refused(tmp_path: Path, teacher: CheckpointTeacher) -> None:
    data = _write(tmp_path / "d.jsonl", _records(3))
    _build(teacher, data, tmp_path / "cache", k=16)
    with pytest.raises(CacheBuildError, match="other settings"):
        _build(teacher, data, tmp_path / "cache", k=8)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(CacheBuildError, match="not empty"):
        _build(teacher, data, tmp_path / "other")


def test_duplicates_stored_once_and_too_long_skipped(tmp_path: Path, teacher: CheckpointTeacher) -> None:
    records = _records(3) + [{**_records(1)[0], "id": "dup"}]
    records.append({"id": "long", "prompt": "x" * 400, "completion": "y"})
    manifest = _build(teacher, _write(tmp_path / "d.jsonl", records), tmp_path / "cache", max_length=64)
    assert manifest.totals["entries"] == 3
    assert manifest.totals["duplicates"] == 1 and manifest.totals["too_long"] == 1


def test_completion_positions_store_only_targets(tmp_path: Path, teacher: CheckpointTeacher) -> None:
    records = _records(3)
    all_m = _build(teacher, _write(tmp_path / "d.jsonl", records), tmp_path / "all")
    comp_m = _build(teacher, tmp_path / "d.jsonl", tmp_path / "comp", positions="completion")
    assert comp_m.totals["tokens"] < all_m.totals["tokens"]
    batch = _batch(teacher.tokenizer, records)
    target = batch["labels"] != -100
    a = CacheTeacher(tmp_path / "all").targets(batch["input_ids"], batch["attention_mask"])
    c = CacheTeacher(tmp_path / "comp").targets(batch["input_ids"], batch["attention_mask"])
    assert torch.equal(a.topk_ids[target], c.topk_ids[target])
    assert torch.isneginf(c.topk_logprobs[~target & batch["attention_mask"].bool()][:, 0]).any()


def test_tempered_cache_needs_matching_temperature(tmp_path: Path, teacher: CheckpointTeacher) -> None:
    records = _records(2)
    _build(
        teacher,
        _write(tmp_path / "d.jsonl", records),
        tmp_path / "cache",
        temperature=2.0,
        k=teacher.vocab_size,
        logprobs="fp16",
    )
    with pytest.raises(CacheFormatError, match="temperature 2.0"):
        CacheTeacher(tmp_path / "cache")
    cache = CacheTeacher(tmp_path / "cache", temperature=2.0)
    batch = _batch(teacher.tokenizer, records)
    got = cache.targets(batch["input_ids"], batch["attention_mask"])
    want = torch.log_softmax(teacher.logits(batch["input_ids"], batch["attention_mask"]) / 2.0, -1)
    real = batch["attention_mask"].bool()
    gathered = want.gather(-1, got.topk_ids)[real]
    assert np.allclose(gathered.numpy(), got.topk_logprobs[real].numpy(), rtol=1e-3, atol=1e-3)


def test_cache_cli(tmp_path: Path, teacher_dir: Path, capsys: pytest.CaptureFixture) -> None:
    from training.teacher_cache import main

    data = _write(tmp_path / "d.jsonl", _records(3))
    args = ["--data", str(data), "--top-k", "8", "--no-progress", "--threads", "1"]
    assert main(["--teacher", f"checkpoint:{teacher_dir}", "--out", str(tmp_path / "c"), *args]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["entries"] == 3 and summary["k"] == 8 and "kl_full_mean" in summary
    assert main(["--teacher", f"cache:{tmp_path / 'c'}", "--out", str(tmp_path / "d"), *args]) == 2
    assert "live source" in capsys.readouterr().err


def test_too_many_bad_lines_stop_the_build(tmp_path: Path, teacher_dir: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    """The trainer's max-bad-share threshold: 1 malformed line in 4 is over the default 1%."""
    from training.teacher_cache import main

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _records(3)) + "{not json\n")
    args = ["--teacher", f"checkpoint:{teacher_dir}", "--data", str(data), "--top-k", "8", "--no-progress",
            "--threads", "1"]
    assert main([*args, "--out", str(tmp_path / "strict")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert "1 of 4 records (25.00%) are bad" in err and str(tmp_path / "strict" / "quarantine.jsonl") in err
    assert main([*args, "--out", str(tmp_path / "lenient"), "--max-bad-fraction", "0.5"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["bad_records"] == 1 and summary["entries"] == 3
