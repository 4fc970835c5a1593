"""Trainer hooks for run control and live status, and the CLI wiring ``training.distill_kd`` uses.

* :class:`ProgressHook` feeds a :class:`~training.ops.run_status.RunTracker` (step, loss, lr, epoch, throughput,
  evaluations, checkpoints).
* :class:`StatusServerHook` serves the tracker over HTTP (``/status``, ``/metrics``) while the run trains.
* :class:`RunConfigHook` records the validated config in ``RUN_DIR/run_config.json``.
* :class:`RunControlHook` writes ``RUN_DIR/run_state.json``, reads ``RUN_DIR/control.json`` after every
  optimizer step, and handles signals: SIGUSR1 toggles pause; SIGTERM/SIGINT also end a pause (the
  trainer then checkpoints and returns ``interrupted``). While paused the hook blocks in ``on_step_end``,
  sleeping between polls (no busy loop) with the process, model and optimizer kept as they are.

Signal handlers only set attributes: setting a ``threading.Event`` from a handler can deadlock when the
signal lands while the main thread holds the event's internal lock, so the pause loop polls (every
``poll_seconds``, 0.1 s by default) instead of waiting on an event.

``add_run_control_args(parser)`` adds ``--status-port``, ``--status-host`` and ``--no-run-control``;
``hooks_from_args(args, run_dir)`` turns them into the hook list for ``KDTrainer(cfg, hooks=...)``.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ipaddress
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from training.config_base import StrictModel
from training.kd.trainer import KDTrainer, TrainerHook, TrainResult
from training.ops.run_control import (
    CONTROL_FILE,
    RUN_CONFIG_FILE,
    RUN_STATE_FILE,
    ControlCommand,
    control_logger,
    process_start_ticks,
    read_json,
    write_json_atomic,
)
from training.ops.run_status import RunTracker, StatusServer
from training.ops.structured_log import StructuredLogger


def _epoch_position(trainer: KDTrainer) -> tuple[int | None, int | None]:
    """(epoch, batches yielded in it) of the trainer's data stream, when it exposes them."""
    stream = getattr(trainer.stream, "stream", None)
    epoch = getattr(stream, "epoch", None)
    batches = getattr(stream, "batches_yielded", None)
    return (int(epoch) if epoch is not None else None, int(batches) if batches is not None else None)


class ProgressHook(TrainerHook):
    """Keeps a :class:`RunTracker` up to date from the trainer's callbacks."""

    def __init__(self, tracker: RunTracker) -> None:
        self.tracker = tracker

    def on_train_start(self, trainer: KDTrainer) -> None:
        self.tracker.start(trainer.run_id, trainer.step, trainer.cfg.optim.max_steps, trainer.last_metrics)

    def on_step_end(self, trainer: KDTrainer, terms: dict[str, float]) -> None:
        epoch, batches = _epoch_position(trainer)
        self.tracker.record_step(trainer.step, terms, epoch, batches, trainer.tokens_seen)

    def on_eval(self, trainer: KDTrainer, metrics: dict[str, float]) -> None:
        self.tracker.record_eval(trainer.step, metrics)

    def on_checkpoint(self, trainer: KDTrainer, path: Path) -> None:
        self.tracker.record_checkpoint(path)

    def on_train_end(self, trainer: KDTrainer, result: TrainResult) -> None:
        self.tracker.finish(result.status, result.step)


class StatusServerHook(TrainerHook):
    """Runs a :class:`StatusServer` from the start to the end of training."""

    def __init__(self, tracker: RunTracker, host: str = "127.0.0.1", port: int = 0) -> None:
        self.tracker = tracker
        self.server = StatusServer(tracker, host, port)
        self._running = False

    def on_train_start(self, trainer: KDTrainer) -> None:
        """Start serving. A port that cannot be bound is reported (stderr and the run's control log) and the
        run trains without live status: observability never stops a training run."""
        if self._running:
            return
        log = StructuredLogger("status", trainer.run_id, Path(trainer.out) / "logs" / "control.jsonl")
        try:
            self.tracker.status_url = self.server.start()
        except OSError as exc:
            self.tracker.status_url = None
            log.warning("status_server_failed", host=self.server.host, port=self.server.port, error=str(exc))
            print(f"warning: no status server on {self.server.host}:{self.server.port}: {exc}",
                  file=sys.stderr)
            return
        self._running = True
        log.info("status_server_started", url=self.tracker.status_url, pid=os.getpid())

    def on_train_end(self, trainer: KDTrainer, result: TrainResult) -> None:
        if self._running:
            self.server.stop()
            self._running = False


class RunConfigHook(TrainerHook):
    """Writes ``RUN_DIR/run_config.json`` at the start of training: the validated config, its fingerprint and
    the working directory its relative paths are resolved against (``training.versions`` reads it for the
    config hash and the data fingerprint of a snapshot)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)

    def on_train_start(self, trainer: KDTrainer) -> None:
        write_json_atomic(self.run_dir / RUN_CONFIG_FILE, {
            "config": trainer.cfg.model_dump(mode="json"), "fingerprint": trainer.cfg.fingerprint(),
            "cwd": os.getcwd(), "run_id": trainer.run_id, "written_at": time.time()})


class RunControlHook(TrainerHook):
    """Pause / resume / stop through ``RUN_DIR/control.json`` and signals; writes ``RUN_DIR/run_state.json``.

    Args:
        run_dir: the run's ``out_dir``.
        tracker: the run's progress (shared with :class:`ProgressHook`, which must come first in the hook
            list); its figures go into ``run_state.json``.
        poll_seconds: how often a paused run looks at the control file and its signal flags.
        state_interval: least seconds between two ``run_state.json`` writes while steps advance (state
            changes are always written at once).
    """

    def __init__(self, run_dir: str | Path, tracker: RunTracker, poll_seconds: float = 0.1,
                 state_interval: float = 0.5) -> None:
        self.run_dir = Path(run_dir)
        self.tracker = tracker
        self.poll_seconds = poll_seconds
        self.state_interval = state_interval
        self.paused = False
        self.stop_reason: str | None = None
        self.run_id: str | None = None
        self.control_seq = 0
        self._toggles = 0
        self._interrupt: int | None = None
        self._chained = False
        self._control_stamp: tuple[int, int, int] | None = None
        self._last_write = 0.0
        self._previous_usr1: Any = None
        self._pid_ticks: int | None = None
        self._log = StructuredLogger("runctl", "unknown", self.run_dir / "logs" / "control.jsonl")
        self._finished = True  # nothing to close before on_train_start

    # ---- signals -------------------------------------------------------------------------------------
    def _on_usr1(self, signum: int, frame: Any) -> None:
        self._toggles += 1

    def _chain_interrupts(self) -> None:
        """Wrap the trainer's SIGINT/SIGTERM handlers (installed once the loop starts) so that they also
        end a pause; the trainer restores its own handlers when the loop ends."""
        if self._chained:
            return
        self._chained = True
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(sig)

            def handler(signum: int, frame: Any, previous: Any = previous) -> None:
                self._interrupt = signum
                if callable(previous):
                    previous(signum, frame)
                elif previous == signal.SIG_DFL:
                    signal.signal(signum, signal.SIG_DFL)
                    os.kill(os.getpid(), signum)

            try:
                signal.signal(sig, handler)
            except ValueError:  # not the main thread: signals stay with whoever handles them
                return

    # ---- control file ----------------------------------------------------------------------------------
    def _read_new_command(self) -> ControlCommand | None:
        path = self.run_dir / CONTROL_FILE
        try:
            info = path.stat()
        except FileNotFoundError:
            return None
        stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
        if stamp == self._control_stamp:
            return None
        self._control_stamp = stamp
        data = read_json(path)
        try:
            command = ControlCommand.model_validate(data)
        except ValueError as exc:
            self._log.warning("control_file_invalid", path=str(path), error=str(exc).splitlines()[0])
            return None
        return command if command.seq > self.control_seq else None

    def _apply_pending(self, trainer: KDTrainer) -> None:
        command = self._read_new_command()
        if command is not None:
            self.control_seq = command.seq
            self._log.info("command_received", command=command.command, seq=command.seq, step=trainer.step,
                           reason=command.reason, via="file")
            if command.command == "pause":
                self.paused = True
            elif command.command == "resume":
                self.paused = False
            else:
                detail = f": {command.reason}" if command.reason else ""
                self.stop_reason = f"runctl stop (seq {command.seq}){detail}"
                trainer.request_stop(self.stop_reason)
        while self._toggles:
            self._toggles -= 1
            self.paused = not self.paused
            self._log.info("command_received", command="pause" if self.paused else "resume",
                           step=trainer.step, via="signal", signal="SIGUSR1")

    # ---- state file ----------------------------------------------------------------------------------
    def write_state(self) -> None:
        progress = self.tracker.progress()
        progress.update(run_id=self.run_id, pid=os.getpid(), pid_start_ticks=self._pid_ticks,
                        control_seq=self.control_seq, out_dir=str(self.run_dir), stop_reason=self.stop_reason)
        write_json_atomic(self.run_dir / RUN_STATE_FILE, progress)
        self._last_write = time.monotonic()

    def _set_state(self, state: str) -> None:
        if self.tracker.state != state:
            self.tracker.set_state(state)
            self.write_state()

    # ---- hook API ------------------------------------------------------------------------------------
    def on_train_start(self, trainer: KDTrainer) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_id = trainer.run_id
        self._log = control_logger(self.run_dir, trainer.run_id)
        self._pid_ticks = process_start_ticks(os.getpid())
        self._chained = False
        self._interrupt = None
        self._finished = False
        self.paused = False
        self.stop_reason = None
        # commands written before this process started belong to an earlier run: never replay them
        previous = read_json(self.run_dir / CONTROL_FILE)
        seq = previous.get("seq") if previous else None
        self.control_seq = seq if isinstance(seq, int) else 0
        self._control_stamp = None
        try:
            self._previous_usr1 = signal.signal(signal.SIGUSR1, self._on_usr1)
        except ValueError:
            self._previous_usr1 = None
        self.tracker.set_state("running")
        self.write_state()
        atexit.register(self._at_exit)
        self._log.info("run_control_started", pid=os.getpid(), step=trainer.step,
                       control_file=str(self.run_dir / CONTROL_FILE))

    def on_checkpoint(self, trainer: KDTrainer, path: Path) -> None:
        self.write_state()

    def on_step_end(self, trainer: KDTrainer, terms: dict[str, float]) -> None:
        self._chain_interrupts()
        self._apply_pending(trainer)
        if self.paused and self.stop_reason is None and self._interrupt is None:
            self._pause(trainer)
        if self.stop_reason is not None or self._interrupt is not None:
            self._set_state("stopping")
        elif time.monotonic() - self._last_write >= self.state_interval:
            self.write_state()

    def _pause(self, trainer: KDTrainer) -> None:
        started = time.monotonic()
        self._set_state("paused")
        self._log.info("paused", step=trainer.step)
        while self.paused and self.stop_reason is None and self._interrupt is None:
            time.sleep(self.poll_seconds)
            self._apply_pending(trainer)
        self.paused = False
        waited = round(time.monotonic() - started, 3)
        if self.stop_reason is None and self._interrupt is None:
            self._set_state("running")
            self._log.info("resumed", step=trainer.step, paused_seconds=waited)
        else:
            self._log.info("pause_ended_by_stop", step=trainer.step, paused_seconds=waited,
                           reason=self.stop_reason, signal=self._interrupt)

    def on_train_end(self, trainer: KDTrainer, result: TrainResult) -> None:
        self.close(result.status, result.step)

    def close(self, status: str, step: int | None = None) -> None:
        """Record the run as finished with ``status`` and restore SIGUSR1 (idempotent). Called by
        ``on_train_end``; call it with ``"error"`` when ``train()`` raised (an interpreter exit without
        either does it too)."""
        if self._finished:
            return
        self._finished = True
        if self._previous_usr1 is not None:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGUSR1, self._previous_usr1)
            self._previous_usr1 = None
        atexit.unregister(self._at_exit)
        self.tracker.finish(status, self.tracker.step if step is None else step)
        self.write_state()
        self._log.info("run_finished", status=status, step=self.tracker.step)

    def _at_exit(self) -> None:
        self.close("error")


# ---- CLI wiring ------------------------------------------------------------------------------------------
class RunControlOptions(StrictModel):
    """Run control and status server settings, validated where they enter (the CLI)."""

    run_control: bool = True
    status_port: int | None = Field(None, ge=0, le=65535)
    status_host: str = "127.0.0.1"
    poll_seconds: float = Field(0.1, gt=0, le=10)

    @field_validator("status_host")
    @classmethod
    def _ip_address(cls, value: str) -> str:
        ipaddress.ip_address(value)
        return value


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 0..65535, got {port}")
    return port


def _host(text: str) -> str:
    try:
        ipaddress.ip_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address") from exc
    return text


def add_run_control_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--status-port``, ``--status-host`` and ``--no-run-control`` to a training CLI."""
    group = parser.add_argument_group("run control and live status")
    group.add_argument("--status-port", type=_port, default=None, metavar="PORT",
                       help="serve /status (JSON) and /metrics (Prometheus) on this port while training; 0 "
                            "picks a free port (its URL is written to OUT_DIR/run_state.json)")
    group.add_argument("--status-host", type=_host, default="127.0.0.1", metavar="IP",
                       help="address the status server binds (default 127.0.0.1: this machine only)")
    group.add_argument("--no-run-control", dest="run_control", action="store_false",
                       help="do not write OUT_DIR/run_state.json nor obey OUT_DIR/control.json and SIGUSR1 "
                            "(python -m training.runctl then cannot see or steer the run)")


def hooks_from_args(args: argparse.Namespace, run_dir: str | Path) -> list[TrainerHook]:
    """The hooks ``add_run_control_args``' flags ask for, in the order they must run."""
    options = RunControlOptions(run_control=getattr(args, "run_control", True),
                                status_port=getattr(args, "status_port", None),
                                status_host=getattr(args, "status_host", "127.0.0.1"))
    return hooks_from_options(options, run_dir)


def hooks_from_options(options: RunControlOptions, run_dir: str | Path) -> list[TrainerHook]:
    """Progress first (the others read it), the status server, run control last (it may block)."""
    if not options.run_control and options.status_port is None:
        return []
    tracker = RunTracker()
    hooks: list[TrainerHook] = [ProgressHook(tracker)]
    if options.status_port is not None:
        hooks.append(StatusServerHook(tracker, options.status_host, options.status_port))
    if options.run_control:
        hooks.append(RunConfigHook(run_dir))
        hooks.append(RunControlHook(run_dir, tracker, poll_seconds=options.poll_seconds))
    return hooks
