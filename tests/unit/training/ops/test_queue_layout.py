"""Queue building blocks: priorities, atomic submit and moves, the journal, admission validation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from training.data.reader import JSONL_SUFFIXES, PARQUET_SUFFIXES
from training.data.toy_data import write_jsonl
from training.kd.config import KDConfig
from training.ops.queue_journal import InProgress, Journal, load_journal, save_journal
from training.ops.queue_layout import (
    DATA_SUFFIXES,
    QueueLayout,
    data_files,
    file_priority,
    is_data_file,
    move,
    priority_from_name,
    submit,
)
from training.ops.queue_validate import validate_file
from training.tasks import get_task
from training.tokenizer import DistilleryTokenizer


def test_data_suffixes_match_the_reader() -> None:
    assert DATA_SUFFIXES == JSONL_SUFFIXES | PARQUET_SUFFIXES


@pytest.mark.parametrize(("name", "expected"), [("a.high.jsonl", "high"), ("a.LOW.parquet", "low"),
                                                ("a.jsonl", None), ("high.jsonl", None),
                                                ("a.urgent.jsonl", None)])
def test_priority_from_name(name: str, expected: str | None) -> None:
    assert priority_from_name(name) == expected


def test_sidecar_beats_the_name_and_normal_is_the_default(tmp_path: Path) -> None:
    plain, tagged = tmp_path / "a.jsonl", tmp_path / "b.low.jsonl"
    plain.write_text("")
    tagged.write_text("")
    assert file_priority(plain) == "normal" and file_priority(tagged) == "low"
    (tmp_path / "b.low.jsonl.priority").write_text("high\n")
    assert file_priority(tagged) == "high"
    (tmp_path / "a.jsonl.priority").write_text("asap")
    with pytest.raises(ValueError, match="asap"):
        file_priority(plain)


def test_is_data_file_skips_hidden_sidecars_and_other_types(tmp_path: Path) -> None:
    names = ("ok.jsonl", ".tmp.jsonl", "x.jsonl.reason.json", "x.jsonl.result.json", "notes.txt", "d.parquet")
    for name in names:
        (tmp_path / name).write_text("")
    assert [p.name for p in data_files(tmp_path)] == ["d.parquet", "ok.jsonl"]
    assert not is_data_file(tmp_path / "missing.jsonl")


def test_submit_names_by_priority_and_never_overwrites(tmp_path: Path) -> None:
    source = tmp_path / "batch.jsonl"
    source.write_text('{"id": "1", "prompt": "p", "completion": "c"}\n')
    queue = tmp_path / "q"
    first = submit(queue, source, "high")
    second = submit(queue, source, "high")
    assert (first.name, second.name) == ("batch.high.jsonl", "batch-1.high.jsonl")
    assert first.read_bytes() == second.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in (queue / "inbox").iterdir()) == ["batch-1.high.jsonl", "batch.high.jsonl"]
    assert file_priority(first) == "high"
    with pytest.raises(ValueError, match="not a data file"):
        submit(queue, tmp_path / "notes.txt", "low")


def test_move_is_a_rename_that_refuses_to_overwrite(tmp_path: Path) -> None:
    layout = QueueLayout(tmp_path).ensure()
    src = layout.inbox / "a.jsonl"
    src.write_text("x")
    inode = src.stat().st_ino
    moved = move(src, layout.done, "001-a.jsonl")
    assert moved.stat().st_ino == inode and not src.exists()
    (layout.inbox / "b.jsonl").write_text("y")
    with pytest.raises(FileExistsError):
        move(layout.inbox / "b.jsonl", layout.done, "001-a.jsonl")
    assert moved.read_text() == "x"


def test_journal_round_trip_and_refuses_foreign_files(tmp_path: Path) -> None:
    path = tmp_path / "journal.json"
    assert load_journal(path) == Journal()
    journal = Journal(next_seq=4, attempts={"001-a.jsonl": 2})
    journal.in_progress = InProgress(name="001-a.jsonl", priority="high", attempt=2,
                                     out_dir="runs/x/attempt-2", init_from=None, started_at=1.0)
    save_journal(path, journal)
    loaded = load_journal(path)
    assert loaded == journal
    loaded.record("001-a.jsonl", "done", "runs/x/attempt-2")
    assert loaded.in_progress is None and loaded.attempts == {}
    assert loaded.history[0].attempts == 2 and loaded.history[0].outcome == "done"
    path.write_text(json.dumps({"something": "else"}))
    with pytest.raises(ValueError, match="not a queue journal"):
        load_journal(path)


@pytest.fixture
def tokenizer(tmp_path: Path, tiny_tokenizer: DistilleryTokenizer) -> DistilleryTokenizer:
    tiny_tokenizer.save(tmp_path / "tok")
    return tiny_tokenizer


def _cfg(tmp_path: Path, **data: object) -> KDConfig:
    return KDConfig.model_validate({"out_dir": str(tmp_path / "run"), "tokenizer": str(tmp_path / "tok"),
                                    "data": {"train": ["x"], "max_length": 128, "batch_size": 4, **data}})


def test_validation_accepts_good_files(tmp_path: Path, tokenizer: DistilleryTokenizer) -> None:
    good = tmp_path / "good.jsonl"
    write_jsonl(good, get_task("arithmetic").generate(12, 0))
    verdict = validate_file(good, _cfg(tmp_path), tokenizer, tmp_path / "q.jsonl")
    assert verdict.ok and verdict.details["lengths"]["n_examples"] == 12


def test_validation_refuses_bad_records_long_examples_and_tiny_files(tmp_path: Path,
                                                                     tokenizer: DistilleryTokenizer) -> None:
    examples = get_task("arithmetic").generate(12, 0)
    bad = tmp_path / "bad.jsonl"
    write_jsonl(bad, examples)
    with open(bad, "a") as handle:
        handle.write('{"id": 3, "prompt": "p"}\n')
    verdict = validate_file(bad, _cfg(tmp_path), tokenizer, tmp_path / "q.jsonl")
    assert not verdict.ok and verdict.error_type == "DataQualityError"
    quarantined = [json.loads(line) for line in (tmp_path / "q.jsonl").read_text().splitlines()]
    assert [q["line"] for q in quarantined] == [13] and "completion" in quarantined[0]["reason"]
    long = tmp_path / "long.jsonl"
    write_jsonl(long, examples)
    verdict = validate_file(long, _cfg(tmp_path, max_length=8), tokenizer, tmp_path / "q2.jsonl")
    assert not verdict.ok and verdict.error_type == "SequenceTooLongError"
    assert verdict.reason is not None and "max_length=8" in verdict.reason
    small = tmp_path / "small.jsonl"
    write_jsonl(small, examples[:3])
    verdict = validate_file(small, _cfg(tmp_path), tokenizer, tmp_path / "q3.jsonl")
    assert not verdict.ok and verdict.error_type == "TooFewExamples"
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(os.urandom(64))
    verdict = validate_file(garbage, _cfg(tmp_path), tokenizer, tmp_path / "q4.jsonl")
    assert not verdict.ok and verdict.reason
