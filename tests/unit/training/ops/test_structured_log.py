"""One logger for every JSON-lines log: buffered trainer records, TensorBoard scalars, per-line tool logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.ops.structured_log import StructuredLogger, read_log


def test_buffered_records_wait_for_flush_and_keep_their_own_times(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "train.jsonl"
    log = StructuredLogger("trainer", "run1", path, buffered=True)
    log.buffer("train", at=100.0, step=1, loss=2.5)
    log.buffer("train", at=101.0, step=2, loss=2.0)
    assert read_log(path) == []  # nothing written per step
    log.flush()
    records = read_log(path)
    assert [(r["event"], r["step"], r["time"], r["loss"]) for r in records] == [("train", 1, 100.0, 2.5),
                                                                              ("train", 2, 101.0, 2.0)]
    assert all(r["component"] == "trainer" and r["level"] == "info" and r["run_id"] == "run1" for r in records)
    log.buffer("train", at=102.0, step=3, loss=1.5)
    log.log("eval", step=3, val_loss=1.7)  # a direct line writes the pending ones first, in order
    log.close()
    assert [r["event"] for r in read_log(path)] == ["train", "train", "train", "eval"]


def test_unbuffered_logger_writes_each_line_and_refuses_reserved_keys(tmp_path: Path) -> None:
    path = tmp_path / "control.jsonl"
    log = StructuredLogger("runctl", "r", path)
    log.buffer("pause", step=4)
    assert [r["event"] for r in read_log(path)] == ["pause"]
    with pytest.raises(ValueError, match="reserved"):
        log.log("x", level="info", run_id="other")


def test_logger_without_outputs_writes_nothing(tmp_path: Path) -> None:
    log = StructuredLogger("trainer", "r")
    log.buffer("train", step=1, loss=1.0)
    line = log.log("end", step=1)
    log.close()
    assert json.loads(line)["event"] == "end" and list(tmp_path.iterdir()) == []


def test_tensorboard_scalars_follow_the_step_field(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = tmp_path / "tb"
    log = StructuredLogger("trainer", "r", tmp_path / "train.jsonl", tensorboard_dir=tb, buffered=True)
    log.buffer("train", at=1.0, step=1, loss=3.0, note="text is not plotted")
    log.buffer("train", at=2.0, step=2, loss=2.0, grad_norm=float("nan"))
    log.log("start", params=10)  # no step: not plotted
    log.close()
    acc = EventAccumulator(str(tb))
    acc.Reload()
    assert acc.Tags()["scalars"] == ["train/loss"]
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(1, 3.0), (2, 2.0)]
