"""A lone surrogate ("\\ud800" in JSON) in a record is quarantined with file and line, like any malformed
record: it used to crash training with a TypeError from the tokenizer, and made the queue refuse the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from training.data import ExampleStream, QuarantineLog, StreamConfig
from training.data.schema import Example
from training.kd.config import KDConfig
from training.ops.queue_validate import validate_file
from training.tokenizer import DistilleryTokenizer

GOOD = [{"id": f"g{i}", "prompt": f"{i}+1=", "completion": str(i + 1)} for i in range(40)]


@pytest.mark.parametrize("record, where", [
    ({"id": "a", "prompt": "x\ud800y", "completion": "2"}, "prompt"),
    ({"id": "a", "prompt": "x", "completion": "2", "steps": ["ok", "\udfff"]}, "steps.1"),
    ({"id": "a", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "\ud83d"}]},
     "messages.1.content"),
])
def test_lone_surrogates_are_refused_naming_the_field(record: dict, where: str) -> None:
    with pytest.raises(ValidationError, match=f"{where.replace('.', '[.]')} contains a lone surrogate"):
        Example.model_validate(record)


def test_valid_astral_characters_are_fine() -> None:
    assert Example.model_validate({"id": "a", "prompt": "emoji \U0001f600", "completion": "x"}).prompt.endswith("\U0001f600")


def _write(path: Path, bad_line: int) -> Path:
    lines = [json.dumps(r) for r in GOOD]
    lines.insert(bad_line - 1, '{"id": "bad", "prompt": "x\\ud800y", "completion": "2"}')
    path.write_text("\n".join(lines) + "\n")
    return path


def test_training_stream_quarantines_the_record(tiny_tokenizer: DistilleryTokenizer, tmp_path: Path) -> None:
    data = _write(tmp_path / "d.jsonl", bad_line=3)
    quarantine = QuarantineLog(tmp_path / "q.jsonl", max_bad_fraction=0.1)
    stream = ExampleStream([data], tiny_tokenizer, StreamConfig(max_length=32, batch_size=8, shuffle=False),
                           quarantine=quarantine)
    assert sum(int(b["input_ids"].shape[0]) for b in stream) == len(GOOD)
    bad = [json.loads(line) for line in (tmp_path / "q.jsonl").read_text().splitlines()]
    assert [(b["line"], "lone surrogate" in b["reason"]) for b in bad] == [(3, True)]


def test_queue_admits_the_file_and_quarantines_the_line(tiny_tokenizer: DistilleryTokenizer, tmp_path: Path) -> None:
    data = _write(tmp_path / "d.jsonl", bad_line=5)
    tiny_tokenizer.save(tmp_path / "tok")
    cfg = KDConfig.model_validate({"out_dir": str(tmp_path / "run"), "tokenizer": str(tmp_path / "tok"),
                                   "data": {"train": [str(data)], "max_length": 32, "batch_size": 4,
                                            "max_bad_fraction": 0.1}})
    verdict = validate_file(data, cfg, tiny_tokenizer, tmp_path / "q.jsonl")
    assert verdict.ok, verdict.reason
    assert "lone surrogate" in (tmp_path / "q.jsonl").read_text()
