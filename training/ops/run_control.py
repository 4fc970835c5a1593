"""Run control: the protocol between a training run and ``python -m training.runctl`` (the command).

The protocol, shared with :class:`training.ops.run_hooks.RunControlHook` (which runs inside the trainer):

* ``RUN_DIR/run_state.json`` is written by the trainer (atomically, on every state change and at most every
  half second while steps advance): pid, run id, ``state`` (``running``, ``paused``, ``stopping``,
  ``finished``), step, loss, throughput, the status server's URL, the last control command consumed.
* ``RUN_DIR/control.json`` is written by ``training.runctl`` (atomically): ``{"command": "pause"|"resume"|"stop",
  "seq": n, ...}``. The trainer reads it after every optimizer step and acts on each new ``seq`` once.
  Commands are refused when no live training process owns ``RUN_DIR`` (nothing is left to surprise the
  next run).
* Signals do the same without a file: ``SIGUSR1`` toggles pause/resume, ``SIGTERM`` (or SIGINT) finishes
  the current step, checkpoints and exits (the trainer's ``interrupted`` status, exit code 130), also
  while paused. ``--via signal`` sends them; the toggle is only sent when ``run_state.json`` says the
  run is not already in the wanted state.

``pause`` keeps the process and all its state; ``stop`` checkpoints and ends the run with status
``stopped`` (rerun the same training command to continue from that checkpoint). Every command is logged
as a JSON line with the run's id in ``RUN_DIR/logs/control.jsonl``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from training.ops.structured_log import StructuredLogger

CONTROL_FILE = "control.json"
RUN_STATE_FILE = "run_state.json"
RUN_CONFIG_FILE = "run_config.json"  # the validated config of the run, written by RunConfigHook
CONTROL_LOG = Path("logs") / "control.jsonl"
_LOCK_FILE = ".control.lock"

Command = Literal["pause", "resume", "stop"]
RunStateName = Literal["running", "paused", "stopping", "finished"]


class ControlCommand(BaseModel):
    """One command in ``control.json``; ``seq`` grows by one with every command issued for a run dir."""

    model_config = ConfigDict(extra="forbid")

    command: Command
    seq: int = Field(ge=1)
    issued_at: float
    reason: str | None = None
    issuer_pid: int | None = None


class RunState(BaseModel):
    """``run_state.json`` as the trainer writes it (unknown keys are kept for forward compatibility)."""

    model_config = ConfigDict(extra="allow")

    pid: int
    pid_start_ticks: int | None = None
    run_id: str
    state: RunStateName
    step: int = 0
    max_steps: int | None = None
    control_seq: int = 0
    status_url: str | None = None
    result_status: str | None = None
    updated_at: float = 0.0


class RunControlError(RuntimeError):
    """The run cannot be controlled (no run state, no live process, bad control file)."""


# ---- files -------------------------------------------------------------------------------------------
def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to ``path`` via a temporary sibling, fsync and ``os.replace``: never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(data, indent=1, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when the file is absent or is not a JSON object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def read_run_state(run_dir: Path) -> RunState | None:
    """The trainer's ``run_state.json`` (None when absent or malformed)."""
    data = read_json(run_dir / RUN_STATE_FILE)
    if data is None:
        return None
    try:
        return RunState.model_validate(data)
    except ValidationError:
        return None


def read_control(run_dir: Path) -> ControlCommand | None:
    """The last command written to ``control.json`` (None when absent).

    Raises:
        RunControlError: when the file exists but is not a valid command.
    """
    path = run_dir / CONTROL_FILE
    if not path.exists():
        return None
    data = read_json(path)
    try:
        return ControlCommand.model_validate(data)
    except ValidationError as exc:
        raise RunControlError(f"{path} is not a valid control command: {exc.errors()[0]['msg']}") from exc


@contextlib.contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    """An exclusive lock on the run dir's control sequence (several runctl calls at once stay ordered)."""
    with open(run_dir / _LOCK_FILE, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# ---- processes ---------------------------------------------------------------------------------------
def process_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (``/proc/PID/stat`` field 22), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its closing parenthesis
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[19])


def pid_alive(pid: int, start_ticks: int | None = None) -> bool:
    """Whether ``pid`` is a live (not zombie) process, and the same one when ``start_ticks`` is given."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: os.kill's answer is all there is
    if stat[stat.rindex(")") + 2:].split()[0] == "Z":
        return False
    return start_ticks is None or process_start_ticks(pid) == start_ticks


def live_run_state(run_dir: Path) -> RunState:
    """The run state of a run whose process is alive and not finished.

    Raises:
        RunControlError: naming what is missing.
    """
    state = read_run_state(run_dir)
    if state is None:
        raise RunControlError(f"{run_dir / RUN_STATE_FILE} is missing or unreadable: no run to control "
                              "(was the trainer started with run control?)")
    if state.state == "finished":
        raise RunControlError(f"run {state.run_id} in {run_dir} has finished ({state.result_status})")
    if not pid_alive(state.pid, state.pid_start_ticks):
        raise RunControlError(f"run {state.run_id} in {run_dir}: process {state.pid} is not running "
                              f"(last state {state.state!r} at step {state.step})")
    return state


# ---- commands ----------------------------------------------------------------------------------------
def issue_command(run_dir: Path, command: Command, reason: str | None = None) -> ControlCommand:
    """Write the next command for a live run to ``control.json`` and log it.

    Raises:
        RunControlError: when no live process owns the run dir.
    """
    run_dir = Path(run_dir)
    state = live_run_state(run_dir)
    with _locked(run_dir):
        previous = read_control(run_dir) if (run_dir / CONTROL_FILE).exists() else None
        seq = max(previous.seq if previous else 0, state.control_seq) + 1
        cmd = ControlCommand(command=command, seq=seq, issued_at=time.time(), reason=reason,
                             issuer_pid=os.getpid())
        write_json_atomic(run_dir / CONTROL_FILE, cmd.model_dump())
    control_logger(run_dir, state.run_id).info("command_issued", command=command, seq=seq, reason=reason,
                                               via="file", target_pid=state.pid)
    return cmd


def send_signal(run_dir: Path, command: Command) -> int | None:
    """Signal a live run: SIGUSR1 to toggle pause (only when not already in the wanted state), SIGTERM to
    stop. Returns the signal sent, or None when the run already is in the wanted state."""
    run_dir = Path(run_dir)
    state = live_run_state(run_dir)
    sig: int | None
    if command == "stop":
        sig = signal.SIGTERM
    elif (command == "pause") == (state.state == "paused"):
        sig = None
    else:
        sig = signal.SIGUSR1
    if sig is not None:
        os.kill(state.pid, sig)
    control_logger(run_dir, state.run_id).info("command_issued", command=command, via="signal",
                                               signal=signal.Signals(sig).name if sig else None,
                                               target_pid=state.pid)
    return sig


def wait_for(run_dir: Path, command: Command, seq: int | None, timeout: float,
             poll: float = 0.05) -> RunState:
    """Wait until the run has acted on ``command`` (paused / running again / finished).

    Raises:
        RunControlError: when the process goes away first, or on timeout.
    """
    deadline = time.monotonic() + timeout
    wanted = {"pause": "paused", "resume": "running", "stop": "finished"}[command]
    while True:
        state = read_run_state(run_dir)
        if state is not None:
            consumed = seq is None or state.control_seq >= seq
            if consumed and (state.state == wanted or (command == "resume" and state.state == "finished")):
                return state
            if state.state != "finished" and not pid_alive(state.pid, state.pid_start_ticks):
                if command == "stop":
                    return state
                raise RunControlError(f"process {state.pid} exited before the run was {wanted}")
        if time.monotonic() >= deadline:
            raise RunControlError(f"the run did not become {wanted} within {timeout:g}s "
                                  f"(state: {state.state if state else 'unknown'})")
        time.sleep(poll)


def control_logger(run_dir: Path, run_id: str) -> StructuredLogger:
    """The run's control log (``RUN_DIR/logs/control.jsonl``), with the run's id on every line."""
    return StructuredLogger("runctl", run_id, Path(run_dir) / CONTROL_LOG)


def status_report(run_dir: Path) -> dict[str, Any]:
    """``run_state.json`` plus whether its process is alive and the last control command."""
    data = read_json(Path(run_dir) / RUN_STATE_FILE)
    if data is None:
        raise RunControlError(f"{Path(run_dir) / RUN_STATE_FILE} is missing or unreadable")
    state = RunState.model_validate(data)
    report = dict(data)
    report["alive"] = pid_alive(state.pid, state.pid_start_ticks)
    control = read_control(Path(run_dir))
    report["control"] = control.model_dump() if control else None
    return report
