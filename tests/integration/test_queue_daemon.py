"""End to end: the queue daemon is SIGKILLed while training a file and restarted; every file ends in done/ or
failed/ exactly once, the killed file resumes from its checkpoint, and the queue's state is consistent."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from run_fixtures import (
    build_tokenizer,
    kd_config,
    read_json,
    run_module,
    start_module,
    stop_process,
    wait_for,
    write_config,
    write_task_data,
)

from training.ops.queue_layout import REASON_SUFFIX, RESULT_SUFFIX, data_files, submit
from training.ops.structured_log import read_log

STEPS_PER_FILE = 60


def _original(name: str) -> str:
    """``000003-batch.high.jsonl`` -> ``batch``."""
    return name.split("-", 1)[1].split(".", 1)[0]


def _in_progress_checkpointed(queue: Path) -> dict[str, Any] | None:
    journal = read_json(queue / "journal.json")
    job = journal.get("in_progress") if journal else None
    if not job:
        return None
    checkpoints = queue / job["out_dir"] / "checkpoints"
    return job if (checkpoints / "step-00000010").is_dir() else None


def test_sigkill_mid_file_then_restart_finishes_every_file_exactly_once(tmp_path: Path) -> None:
    tokenizer = build_tokenizer(tmp_path / "tokenizer")
    val = write_task_data(tmp_path / "val.jsonl", 8, seed=99)
    base = kd_config(tmp_path, tokenizer, [val], [val], checkpoint={"every": 5, "keep_last": 2},
                     optim={"max_steps": STEPS_PER_FILE, "warmup_steps": 2})
    del base["out_dir"], base["data"]["train"]  # set per file by the daemon
    config = write_config(tmp_path / "base.yaml", base)
    queue = tmp_path / "queue"
    sources = {name: write_task_data(tmp_path / "src" / f"{name}.jsonl", 64, seed=i)
               for i, name in enumerate(("first", "second", "third"))}
    submit(queue, sources["first"], "high")
    submitted = run_module("training.queue", "submit", str(queue), str(sources["second"]),
                           "--priority", "normal")
    assert submitted.returncode == 0, submitted.stderr
    submit(queue, sources["third"], "low")
    bad = tmp_path / "src" / "broken.jsonl"
    bad.write_text('{"id": "b", "prompt": 3, "completion": "x"}\n' * 10)
    submit(queue, bad, "high")

    log = tmp_path / "daemon1.log"
    daemon = start_module("training.queue", "serve", str(queue), "--config", str(config),
                          "--poll-seconds", "0.2", "--settle-seconds", "0", log=log)
    try:
        job = wait_for(lambda: _in_progress_checkpointed(queue), 180, "a checkpoint of the first file",
                       proc=daemon, log=log)
        daemon.send_signal(signal.SIGKILL)
        assert daemon.wait(timeout=30) == -signal.SIGKILL
    finally:
        stop_process(daemon)
    killed = job["name"]
    assert _original(killed) == "first"  # high priority went first (the broken high file was refused)
    assert [p.name for p in data_files(queue / "active")] == [killed]
    # a file arrives while the daemon is down, prioritised by a sidecar
    late = write_task_data(tmp_path / "src" / "late.jsonl", 64, seed=7)
    (queue / "inbox" / "late.jsonl.priority").write_text("high\n")
    (queue / "inbox" / "late.jsonl").write_bytes(late.read_bytes())

    restarted = run_module("training.queue", "serve", str(queue), "--config", str(config), "--once",
                           "--settle-seconds", "0", timeout=300)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    summary = json.loads(restarted.stdout)
    assert summary["done"] == 4 and summary["failed"] == 0 and not summary["halted"]

    finished = {folder: [p.name for p in data_files(queue / folder)] for folder in ("done", "failed")}
    everything = finished["done"] + finished["failed"]
    assert sorted(_original(n) for n in everything) == ["broken", "first", "late", "second", "third"]
    assert sorted(_original(n) for n in finished["failed"]) == ["broken"]
    for folder in ("inbox", "high", "normal", "low", "active"):
        assert data_files(queue / folder) == [], folder
    reason = read_json(queue / "failed" / f"{finished['failed'][0]}{REASON_SUFFIX}")
    assert reason is not None and reason["stage"] == "validation" and reason["reason"]
    for name in finished["done"]:
        result = read_json(queue / "done" / f"{name}{RESULT_SUFFIX}")
        assert result is not None and result["step"] == STEPS_PER_FILE

    killed_result = read_json(queue / "done" / f"{killed}{RESULT_SUFFIX}")
    assert killed_result is not None and killed_result["attempts"] == 2
    assert killed_result["out_dir"] == job["out_dir"]  # resumed in place, not retrained elsewhere
    starts = [r for r in read_log(queue / job["out_dir"] / "logs" / "train.jsonl") if r["event"] == "start"]
    assert len(starts) == 2 and starts[0]["resumed_from"] is None
    assert starts[1]["resumed_from"] is not None and starts[1]["step"] >= 10

    journal = read_json(queue / "journal.json")
    assert journal is not None and journal["in_progress"] is None and journal["attempts"] == {}
    history = [h["name"] for h in journal["history"]]
    assert sorted(history) == sorted(everything) and len(set(history)) == len(history)
    order = [_original(h["name"]) for h in journal["history"] if h["outcome"] == "done"]
    assert order == ["first", "late", "second", "third"]  # resumed file, then high, normal, low
    done_results = {_original(h["name"]): read_json(queue / "done" / f"{h['name']}{RESULT_SUFFIX}")
                    for h in journal["history"] if h["outcome"] == "done"}
    assert done_results["late"]["init_from"] == done_results["first"]["student"]  # type: ignore[index]
    assert journal["current_student"] == done_results["third"]["student"]  # type: ignore[index]

    status = run_module("training.queue", "status", str(queue))
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["daemon_pid"] is None and report["counts"]["done"] == 4 and report["counts"]["failed"] == 1
    events = read_log(queue / "logs" / "queue.jsonl")
    assert all(e["run_id"] for e in events)
    assert [e["file"] for e in events if e["event"] == "resuming_interrupted_file"] == [killed]
