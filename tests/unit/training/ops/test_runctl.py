"""Run control: the control-file protocol, liveness checks, the CLI, and RunControlHook on a stand-in
trainer."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from training import runctl
from training.ops import run_control
from training.ops.run_hooks import (
    ProgressHook,
    RunConfigHook,
    RunControlHook,
    StatusServerHook,
    add_run_control_args,
    hooks_from_args,
)
from training.ops.run_status import RunTracker
from training.ops.structured_log import read_log


def _state(run_dir: Path, **fields: Any) -> None:
    data = {"pid": os.getpid(), "run_id": "abc123", "state": "running", "step": 3,
            "pid_start_ticks": run_control.process_start_ticks(os.getpid()), **fields}
    run_control.write_json_atomic(run_dir / run_control.RUN_STATE_FILE, data)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


class FakeTrainer:
    """What the hooks read from a KDTrainer."""

    def __init__(self, out: Path, max_steps: int = 10) -> None:
        self.out = out
        self.step = 0
        self.run_id = "feedbeef0001"
        self.cfg = SimpleNamespace(optim=SimpleNamespace(max_steps=max_steps))
        self.last_metrics: dict[str, float] = {}
        self.tokens_seen = 0.0
        self.stream = SimpleNamespace(stream=SimpleNamespace(epoch=0, batches_yielded=0))
        self.stop_reasons: list[str] = []

    def request_stop(self, reason: str = "stop requested") -> None:
        self.stop_reasons.append(reason)

    def advance(self) -> dict[str, float]:
        self.step += 1
        self.tokens_seen += 100
        return {"loss": 1.0 / self.step, "lr": 1e-3, "tokens": 100.0}


@pytest.fixture
def control(tmp_path: Path):
    """A started RunControlHook (after ProgressHook) on a fake trainer; restores signal handlers."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)}
    tracker = RunTracker()
    progress = ProgressHook(tracker)
    hook = RunControlHook(tmp_path, tracker, poll_seconds=0.02, state_interval=0.0)
    trainer = FakeTrainer(tmp_path)
    progress.on_train_start(trainer)  # type: ignore[arg-type]
    hook.on_train_start(trainer)  # type: ignore[arg-type]

    def step() -> None:
        terms = trainer.advance()
        progress.on_step_end(trainer, terms)  # type: ignore[arg-type]
        hook.on_step_end(trainer, terms)  # type: ignore[arg-type]

    yield SimpleNamespace(hook=hook, trainer=trainer, tracker=tracker, step=step, dir=tmp_path)
    hook.close("completed")
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def _command(run_dir: Path, command: str, seq: int) -> None:
    run_control.write_json_atomic(run_dir / run_control.CONTROL_FILE,
                             {"command": command, "seq": seq, "issued_at": time.time()})


# ---- protocol ----------------------------------------------------------------------------------------
def test_write_json_atomic_round_trips_and_leaves_no_temporary(tmp_path: Path) -> None:
    run_control.write_json_atomic(tmp_path / "a.json", {"x": 1})
    run_control.write_json_atomic(tmp_path / "a.json", {"x": 2})
    assert run_control.read_json(tmp_path / "a.json") == {"x": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    (tmp_path / "b.json").write_text("[1, 2]")
    assert run_control.read_json(tmp_path / "b.json") is None
    assert run_control.read_json(tmp_path / "missing.json") is None


def test_pid_alive_tells_live_dead_and_reused_pids() -> None:
    ticks = run_control.process_start_ticks(os.getpid())
    assert ticks is not None and ticks > 0
    assert run_control.pid_alive(os.getpid(), ticks)
    assert not run_control.pid_alive(os.getpid(), ticks + 1)  # same pid number, another process
    assert not run_control.pid_alive(_dead_pid())


def test_commands_are_refused_without_a_live_run(tmp_path: Path) -> None:
    with pytest.raises(run_control.RunControlError, match="missing"):
        run_control.issue_command(tmp_path, "pause")
    _state(tmp_path, pid=_dead_pid(), pid_start_ticks=None)
    with pytest.raises(run_control.RunControlError, match="not running"):
        run_control.issue_command(tmp_path, "pause")
    _state(tmp_path, state="finished", result_status="completed")
    with pytest.raises(run_control.RunControlError, match="finished"):
        run_control.issue_command(tmp_path, "stop")
    assert not (tmp_path / run_control.CONTROL_FILE).exists()


def test_issue_command_numbers_commands_after_both_files(tmp_path: Path) -> None:
    _state(tmp_path, control_seq=7)
    first = run_control.issue_command(tmp_path, "pause", reason="look at the loss")
    assert first.seq == 8
    second = run_control.issue_command(tmp_path, "resume")
    assert second.seq == 9
    stored = run_control.read_control(tmp_path)
    assert stored is not None and stored.command == "resume" and stored.seq == 9
    logged = read_log(tmp_path / "logs" / "control.jsonl")
    assert [r["command"] for r in logged] == ["pause", "resume"]
    assert all(r["run_id"] == "abc123" for r in logged)


def test_read_control_rejects_a_malformed_file(tmp_path: Path) -> None:
    (tmp_path / run_control.CONTROL_FILE).write_text(json.dumps({"command": "explode", "seq": 1, "issued_at": 0}))
    with pytest.raises(run_control.RunControlError, match="not a valid control command"):
        run_control.read_control(tmp_path)


def test_send_signal_toggles_only_when_needed_and_stops_with_sigterm(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _state(tmp_path, pid=child.pid, pid_start_ticks=run_control.process_start_ticks(child.pid), state="paused")
        assert run_control.send_signal(tmp_path, "pause") is None  # already paused: nothing sent
        assert child.poll() is None
        assert run_control.send_signal(tmp_path, "stop") == signal.SIGTERM
        assert child.wait(timeout=10) == -signal.SIGTERM
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ticks = run_control.process_start_ticks(other.pid)
        _state(tmp_path, pid=other.pid, pid_start_ticks=ticks, state="running")
        assert run_control.send_signal(tmp_path, "pause") == signal.SIGUSR1
        assert other.wait(timeout=10) == -signal.SIGUSR1  # no handler in the child: the default ends it
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()


def test_wait_for_sees_the_state_change_and_times_out(tmp_path: Path) -> None:
    _state(tmp_path, state="running", control_seq=0)

    def later() -> None:
        time.sleep(0.2)
        _state(tmp_path, state="paused", control_seq=1)

    thread = threading.Thread(target=later)
    thread.start()
    state = run_control.wait_for(tmp_path, "pause", seq=1, timeout=10)
    thread.join()
    assert state.state == "paused" and state.control_seq == 1
    with pytest.raises(run_control.RunControlError, match="did not become running"):
        run_control.wait_for(tmp_path, "resume", seq=2, timeout=0.2)


def test_cli_status_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert runctl.main(["status", str(tmp_path)]) == 2
    assert "missing" in capsys.readouterr().err
    _state(tmp_path)
    assert runctl.main(["pause", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out) == {"command": "pause", "seq": 1, "via": "file"}
    assert runctl.main(["status", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["alive"] is True and report["pid"] == os.getpid()
    assert report["control"]["command"] == "pause"
    assert runctl.main(["resume", str(tmp_path), "--wait", "0.2"]) == 1  # nobody acts on it here
    with pytest.raises(SystemExit) as exc:
        runctl.main(["--help"])
    assert exc.value.code == 0


# ---- RunControlHook ------------------------------------------------------------------------------------
def test_hook_writes_run_state_with_pid_and_progress(control: SimpleNamespace) -> None:
    control.step()
    control.step()
    state = run_control.read_run_state(control.dir)
    assert state is not None
    assert state.pid == os.getpid() and state.run_id == "feedbeef0001" and state.state == "running"
    assert state.step == 2 and state.max_steps == 10
    assert state.pid_start_ticks == run_control.process_start_ticks(os.getpid())


def test_pause_blocks_the_step_until_resume(control: SimpleNamespace) -> None:
    control.step()
    _command(control.dir, "pause", 1)
    worker = threading.Thread(target=control.step)
    worker.start()
    deadline = time.monotonic() + 10
    while (state := run_control.read_run_state(control.dir)) is None or state.state != "paused":
        assert time.monotonic() < deadline, "never paused"
        time.sleep(0.01)
    time.sleep(0.3)
    assert worker.is_alive(), "on_step_end returned while paused"
    assert state.step == 2 and control.trainer.step == 2
    _command(control.dir, "resume", 2)
    worker.join(timeout=10)
    assert not worker.is_alive()
    state = run_control.read_run_state(control.dir)
    assert state is not None and state.state == "running" and state.control_seq == 2
    events = [r["event"] for r in read_log(control.dir / "logs" / "control.jsonl")]
    assert events.index("paused") < events.index("resumed")


def test_stop_command_requests_a_checkpointed_stop(control: SimpleNamespace) -> None:
    _command(control.dir, "stop", 1)
    control.step()
    assert control.trainer.stop_reasons == ["runctl stop (seq 1)"]
    state = run_control.read_run_state(control.dir)
    assert state is not None and state.state == "stopping"


def test_stop_while_paused_ends_the_pause(control: SimpleNamespace) -> None:
    _command(control.dir, "pause", 1)
    worker = threading.Thread(target=control.step)
    worker.start()
    time.sleep(0.2)
    assert worker.is_alive()
    _command(control.dir, "stop", 2)
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert control.trainer.stop_reasons and control.hook.stop_reason is not None


def test_commands_from_before_the_run_started_are_not_replayed(tmp_path: Path) -> None:
    _command(tmp_path, "stop", 4)
    tracker = RunTracker()
    hook = RunControlHook(tmp_path, tracker, poll_seconds=0.02)
    trainer = FakeTrainer(tmp_path)
    saved = signal.getsignal(signal.SIGUSR1)
    try:
        hook.on_train_start(trainer)  # type: ignore[arg-type]
        hook.on_step_end(trainer, trainer.advance())  # type: ignore[arg-type]
        assert trainer.stop_reasons == []
        _command(tmp_path, "stop", 5)
        hook.on_step_end(trainer, trainer.advance())  # type: ignore[arg-type]
        assert trainer.stop_reasons == ["runctl stop (seq 5)"]
    finally:
        hook.close("stopped")
        signal.signal(signal.SIGUSR1, saved)


def test_sigusr1_toggles_pause_in_the_main_thread(control: SimpleNamespace) -> None:
    os.kill(os.getpid(), signal.SIGUSR1)
    os.kill(os.getpid(), signal.SIGUSR1)
    control.step()  # two toggles cancel out: no pause
    assert control.hook.paused is False
    os.kill(os.getpid(), signal.SIGUSR1)
    timer = threading.Timer(0.4, os.kill, (os.getpid(), signal.SIGUSR1))
    timer.start()
    started = time.monotonic()
    control.step()  # paused until the timer's SIGUSR1
    assert time.monotonic() - started >= 0.3
    timer.join()
    events = read_log(control.dir / "logs" / "control.jsonl")
    assert [e["command"] for e in events if e["event"] == "command_received"] == ["pause", "resume", "pause",
                                                                                  "resume"]


def test_sigterm_while_paused_reaches_the_trainer_handler(control: SimpleNamespace) -> None:
    received: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))  # the trainer's handler
    control.hook._chained = False
    _command(control.dir, "pause", 1)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    control.step()
    timer.join()
    assert received == [signal.SIGTERM]
    state = run_control.read_run_state(control.dir)
    assert state is not None and state.state == "stopping"


def test_close_records_the_end_and_restores_sigusr1(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGUSR1)
    tracker = RunTracker()
    hook = RunControlHook(tmp_path, tracker)
    hook.on_train_start(FakeTrainer(tmp_path))  # type: ignore[arg-type]
    assert signal.getsignal(signal.SIGUSR1) != before
    hook.close("error")
    hook.close("completed")  # idempotent: the first status stays
    assert signal.getsignal(signal.SIGUSR1) == before
    state = run_control.read_run_state(tmp_path)
    assert state is not None and state.state == "finished" and state.result_status == "error"


def test_run_config_hook_records_the_config(tmp_path: Path) -> None:
    trainer = FakeTrainer(tmp_path)
    trainer.cfg = SimpleNamespace(model_dump=lambda mode: {"out_dir": str(tmp_path)},
                                  fingerprint=lambda: "f" * 64)
    RunConfigHook(tmp_path).on_train_start(trainer)  # type: ignore[arg-type]
    saved = run_control.read_json(tmp_path / run_control.RUN_CONFIG_FILE)
    assert saved is not None
    assert saved["config"] == {"out_dir": str(tmp_path)} and saved["fingerprint"] == "f" * 64
    assert saved["cwd"] == os.getcwd() and saved["run_id"] == "feedbeef0001"


# ---- CLI wiring ----------------------------------------------------------------------------------------
def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_run_control_args(parser)
    return parser.parse_args(list(argv))


def test_hooks_from_args_builds_the_requested_hooks(tmp_path: Path) -> None:
    kinds = [type(h) for h in hooks_from_args(_parse(), tmp_path)]
    assert kinds == [ProgressHook, RunConfigHook, RunControlHook]
    kinds = [type(h) for h in hooks_from_args(_parse("--status-port", "0"), tmp_path)]
    assert kinds == [ProgressHook, StatusServerHook, RunConfigHook, RunControlHook]
    assert hooks_from_args(_parse("--no-run-control"), tmp_path) == []
    hooks = hooks_from_args(_parse("--no-run-control", "--status-port", "0"), tmp_path)
    assert [type(h) for h in hooks] == [ProgressHook, StatusServerHook]
    assert hooks[1].server.host == "127.0.0.1"  # type: ignore[attr-defined]


@pytest.mark.parametrize("argv", [["--status-port", "70000"], ["--status-port", "x"],
                                  ["--status-host", "localhost"]])
def test_bad_run_control_flags_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _parse(*argv)
    assert exc.value.code == 2


# ---- structured logs (shared by every tool above) -------------------------------------------------------
def test_structured_log_lines_carry_the_run_id_and_refuse_reserved_keys(tmp_path: Path) -> None:
    import io

    from training.ops.structured_log import StructuredLogger, format_record

    stream = io.StringIO()
    log = StructuredLogger("runctl", "r1", tmp_path / "logs" / "x.jsonl", stream)
    log.info("hello", path=tmp_path, loss=float("nan"), steps=(1, 2))
    log.bind("r2").error("bye")
    records = read_log(tmp_path / "logs" / "x.jsonl")
    assert [(r["run_id"], r["event"], r["level"], r["component"]) for r in records] == [
        ("r1", "hello", "info", "runctl"), ("r2", "bye", "error", "runctl")]
    assert records[0]["path"] == str(tmp_path) and records[0]["loss"] is None
    assert records[0]["steps"] == [1, 2]
    assert [json.loads(line)["event"] for line in stream.getvalue().splitlines()] == ["hello", "bye"]
    with pytest.raises(ValueError, match="reserved"):
        format_record("c", "r", "e", "info", {"run_id": "other"})
    with open(tmp_path / "logs" / "x.jsonl", "a") as handle:
        handle.write('{"torn": ')  # a crash mid-line
    assert len(read_log(tmp_path / "logs" / "x.jsonl")) == 2
    assert read_log(tmp_path / "missing.jsonl") == []
