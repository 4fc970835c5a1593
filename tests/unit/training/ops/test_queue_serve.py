"""The queue daemon in-process on tiny runs: priority order, chained students, retries, recovery, the CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from training import queue as queue_cli
from training.data.toy_data import write_jsonl
from training.ops.queue_daemon import DaemonOptions, QueueDaemon, QueueError
from training.ops.queue_journal import InProgress, load_journal, save_journal
from training.ops.queue_layout import QueueLayout, submit
from training.ops.queue_status import daemon_pid
from training.tasks import get_task
from training.tokenizer import DistilleryTokenizer


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """KDTrainer sets the process-wide thread count from the config; give it back afterwards."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def base(tmp_path: Path, tiny_tokenizer: DistilleryTokenizer) -> Path:
    tiny_tokenizer.save(tmp_path / "tok")
    cfg: dict[str, Any] = {
        "tokenizer": str(tmp_path / "tok"), "teacher": None,
        "student": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                    "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 128},
        "data": {"max_length": 128, "batch_size": 4, "shuffle_buffer": 8},
        "optim": {"max_steps": 2, "warmup_steps": 0},
        "eval": {"every": 100, "max_batches": 1, "generate_examples": 0},
        "checkpoint": {"every": 100}, "num_threads": 1, "progress": False, "tensorboard": False,
    }
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _data(tmp_path: Path, name: str, n: int = 8, seed: int = 0) -> Path:
    path = tmp_path / "src" / name
    write_jsonl(path, get_task("arithmetic").generate(n, seed))
    return path


def _daemon(queue: Path, config: Path, **options: Any) -> QueueDaemon:
    return QueueDaemon(DaemonOptions(queue_dir=queue, config=config, once=True, settle_seconds=0, **options),
                       stream=None)


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_files_train_in_priority_order_each_from_the_previous_student(tmp_path: Path, base: Path) -> None:
    queue = tmp_path / "q"
    submit(queue, _data(tmp_path, "low.jsonl", seed=1), "low")
    submit(queue, _data(tmp_path, "plain.jsonl", seed=2), "normal")
    submit(queue, _data(tmp_path, "urgent.jsonl", seed=3), "high")
    bad = tmp_path / "src" / "bad.jsonl"
    bad.write_text('{"id": "x", "prompt": 1, "completion": "c"}\n' * 8)
    submit(queue, bad, "high")
    summary = _daemon(queue, base).serve()
    assert summary["done"] == 3 and summary["failed"] == 1 and not summary["halted"]
    journal = load_journal(queue / "journal.json")
    order = [(h.name.split("-", 1)[1], h.outcome) for h in journal.history]
    assert order == [("bad.high.jsonl", "failed"), ("urgent.high.jsonl", "done"),
                     ("plain.normal.jsonl", "done"), ("low.low.jsonl", "done")]
    results = {p.name: json.loads(p.read_text()) for p in (queue / "done").glob("*.result.json")}
    by_file = {name.split("-", 1)[1].split(".")[0]: r for name, r in results.items()}
    assert by_file["urgent"]["init_from"] is None
    assert by_file["plain"]["init_from"] == by_file["urgent"]["student"]
    assert by_file["low"]["init_from"] == by_file["plain"]["student"]
    assert journal.current_student == by_file["low"]["student"]
    assert all(r["step"] == 2 for r in results.values())
    reason = json.loads(next((queue / "failed").glob("*.reason.json")).read_text())
    assert reason["stage"] == "validation" and reason["error_type"] == "DataQualityError"
    for folder in ("inbox", "high", "normal", "low", "active"):
        assert _names(queue / folder) == []
    log = [json.loads(line) for line in (queue / "logs" / "queue.jsonl").read_text().splitlines()]
    assert {r["run_id"] for r in log} == {summary["session"]}


def test_a_failing_file_is_retried_then_failed_with_its_reason(tmp_path: Path, base: Path) -> None:
    cfg = yaml.safe_load(base.read_text())
    cfg["init_from"] = str(tmp_path / "no-such-student")
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(cfg))
    queue = tmp_path / "q"
    submit(queue, _data(tmp_path, "a.jsonl"), "normal")
    summary = _daemon(queue, broken, max_attempts=2).serve()
    assert summary == {**summary, "done": 0, "failed": 1, "retried": 1}
    (name,) = [p.name for p in (queue / "failed").iterdir() if not p.name.endswith(".reason.json")]
    reason = json.loads((queue / "failed" / f"{name}.reason.json").read_text())
    assert reason["stage"] == "training" and reason["attempts"] == 2
    assert "failed 2 time(s)" in reason["reason"]
    assert _names(queue / "runs" / name.removesuffix(".jsonl")) == ["attempt-1", "attempt-2"]
    journal = load_journal(queue / "journal.json")
    assert journal.attempts == {} and journal.history[-1].attempts == 2 and journal.in_progress is None


def test_a_halted_run_resumes_without_a_new_attempt(tmp_path: Path, base: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    queue = tmp_path / "q"
    submit(queue, _data(tmp_path, "a.jsonl"), "normal")
    first = _daemon(queue, base)
    admit = first.admit_inbox

    def admit_then_signal() -> None:  # as if SIGTERM came while the run was loading its data
        admit()
        first.stop_signal = 15

    monkeypatch.setattr(first, "admit_inbox", admit_then_signal)
    summary = first.serve()
    assert summary["halted"] and summary["in_progress"] is not None
    journal = load_journal(queue / "journal.json")
    assert journal.in_progress is not None and journal.in_progress.halted and journal.attempts == {
        journal.in_progress.name: 1}
    assert len(_names(queue / "active")) == 1
    out_dir = queue / journal.in_progress.out_dir
    assert [p.name for p in (out_dir / "checkpoints").iterdir()] == ["step-00000001"]
    summary = _daemon(queue, base).serve()
    assert summary["done"] == 1
    journal = load_journal(queue / "journal.json")
    assert journal.history[-1].attempts == 1
    assert journal.history[-1].out_dir == str(out_dir.relative_to(queue))
    starts = [json.loads(line) for line in (out_dir / "logs" / "train.jsonl").read_text().splitlines()
              if '"start"' in line]
    assert starts[-1]["resumed_from"].endswith("step-00000001")


def _journal_with(queue: Path, name: str, attempts: int, **fields: Any) -> None:
    journal = load_journal(queue / "journal.json")
    journal.attempts[name] = attempts
    journal.in_progress = InProgress(name=name, priority="normal", attempt=attempts, out_dir=f"runs/{name}/a",
                                     init_from=None, started_at=time.time(), **fields)
    save_journal(queue / "journal.json", journal)


def test_recovery_completes_or_clears_what_a_crash_left(tmp_path: Path, base: Path) -> None:
    queue = tmp_path / "q"
    layout = QueueLayout(queue).ensure()
    (layout.done / "000001-a.jsonl").write_text("x")
    _journal_with(queue, "000001-a.jsonl", 1)
    (queue / "runs" / "000001-a.jsonl" / "a" / "student").mkdir(parents=True)
    daemon = _daemon(queue, base)
    daemon.recover()
    journal = load_journal(queue / "journal.json")
    assert journal.in_progress is None and journal.history[-1].outcome == "done"
    assert journal.current_student == str(queue / "runs" / "000001-a.jsonl" / "a" / "student")

    (layout.priority_dir("normal") / "000002-b.jsonl").write_text("x")
    _journal_with(queue, "000002-b.jsonl", 1)
    (layout.active / "000009-stray.jsonl").write_text("x")
    (layout.failed / "000007-gone.jsonl.reason.json").write_text("{}")
    daemon = _daemon(queue, base)
    daemon.recover()
    journal = load_journal(queue / "journal.json")
    assert journal.in_progress is None and journal.attempts["000002-b.jsonl"] == 1
    assert (layout.priority_dir("normal") / "000002-b.jsonl").exists()
    assert _names(layout.active) == []
    assert (layout.failed / "000009-stray.jsonl").exists()
    assert "without a journal entry" in (layout.failed / "000009-stray.jsonl.reason.json").read_text()
    assert not (layout.failed / "000007-gone.jsonl.reason.json").exists()


def test_recovery_resumes_a_crashed_file_until_the_attempt_limit(tmp_path: Path, base: Path) -> None:
    queue = tmp_path / "q"
    layout = QueueLayout(queue).ensure()
    (layout.active / "000001-a.jsonl").write_text("x")
    _journal_with(queue, "000001-a.jsonl", 1)
    _daemon(queue, base, max_attempts=2).recover()
    journal = load_journal(queue / "journal.json")
    assert journal.in_progress is not None and journal.in_progress.attempt == 2
    assert journal.attempts == {"000001-a.jsonl": 2} and (layout.active / "000001-a.jsonl").exists()
    _daemon(queue, base, max_attempts=2).recover()
    assert not (layout.active / "000001-a.jsonl").exists()
    reason = json.loads((layout.failed / "000001-a.jsonl.reason.json").read_text())
    assert reason["error_type"] == "Interrupted" and reason["attempts"] == 2


def test_only_one_daemon_serves_a_queue(tmp_path: Path, base: Path) -> None:
    queue = tmp_path / "q"
    first = _daemon(queue, base)
    with first._exclusive():
        with pytest.raises(QueueError, match="another daemon"):
            _daemon(queue, base).serve()
        assert daemon_pid(QueueLayout(queue)) is not None


def test_unsupported_files_and_bad_sidecars_are_refused(tmp_path: Path, base: Path) -> None:
    queue = tmp_path / "q"
    layout = QueueLayout(queue).ensure()
    (layout.inbox / "notes.txt").write_text("hello")
    (layout.inbox / "x.jsonl.priority").write_text("yesterday")
    write_jsonl(layout.inbox / "x.jsonl", get_task("arithmetic").generate(8, 0))
    daemon = _daemon(queue, base)
    daemon.admit_inbox()
    reasons = {p.name: json.loads(p.read_text()) for p in layout.failed.glob("*.reason.json")}
    assert {r["error_type"] for r in reasons.values()} == {"UnsupportedFile", "BadPrioritySidecar"}
    assert _names(layout.inbox) == []


def test_cli_submit_status_and_serve_errors(tmp_path: Path, base: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    queue = tmp_path / "q"
    assert queue_cli.main(["submit", str(queue), str(_data(tmp_path, "a.jsonl")), "--priority", "low"]) == 0
    assert json.loads(capsys.readouterr().out)["submitted"].endswith("inbox/a.low.jsonl")
    assert queue_cli.main(["status", str(queue)]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["counts"]["inbox"] == 1 and status["daemon_pid"] is None and status["in_progress"] is None
    assert queue_cli.main(["serve", str(queue), "--once"]) == 2  # no base.yaml in the queue
    assert "base config" in capsys.readouterr().err
    assert queue_cli.main(["serve", str(queue), "--once", "--max-attempts", "0", "--config", str(base)]) == 2
    assert "max_attempts" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        queue_cli.main(["--help"])
    assert exc.value.code == 0


def test_a_symlink_in_the_inbox_goes_to_failed_without_reading_its_target(tmp_path: Path, base: Path) -> None:
    queue = tmp_path / "q"
    QueueLayout(queue).ensure()
    secret = tmp_path / "secret.jsonl"
    secret.write_text("password=hunter2\n" * 8)
    (queue / "inbox" / "link.jsonl").symlink_to(secret)
    (queue / "inbox" / "dangling.jsonl").symlink_to(tmp_path / "gone.jsonl")
    summary = _daemon(queue, base).serve()
    assert summary["failed"] == 2 and summary["done"] == 0
    assert _names(queue / "inbox") == []
    links = [p for p in (queue / "failed").iterdir() if not p.name.endswith(".reason.json")]
    assert len(links) == 2 and all(p.is_symlink() for p in links)  # the links moved, not copies
    reasons = [json.loads(p.read_text()) for p in (queue / "failed").glob("*.reason.json")]
    assert {r["error_type"] for r in reasons} == {"SymlinkRefused"} and {r["stage"] for r in reasons} == {"admission"}
    for path in queue.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert "hunter2" not in path.read_text(errors="replace"), path
    assert secret.read_text() == "password=hunter2\n" * 8
