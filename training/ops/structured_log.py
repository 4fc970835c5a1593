"""Structured JSON-lines logs shared by run control, the status server, versions, the queue and compare.

Every line is one JSON object: ``time`` (unix seconds), ``run_id``, ``event``, ``component`` (which tool wrote
it: ``trainer`` for ``logs/train.jsonl``, ``runctl``, ``queue``, ...) and ``level``, then the event's own fields.
Keys are sorted, so lines diff cleanly. One class writes them all: the trainer uses it buffered (per-step
records kept in memory and written every ``log_every`` steps, each with its own time) and with TensorBoard
scalars; the tools write each line at once.
The run id is on every line: a tool acting on a training run uses that run's id, a tool with a session of
its own (the queue daemon, a comparison) draws one with :func:`new_run_id`.
"""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Literal, TextIO

Level = Literal["debug", "info", "warning", "error"]


def new_run_id() -> str:
    """A fresh 12-hex-digit id, the same shape as the trainer's run ids."""
    return uuid.uuid4().hex[:12]


def _jsonable(value: Any) -> Any:
    """Values json cannot write as-is: paths become strings, non-finite floats null."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    return value


def format_record(component: str, run_id: str, event: str, level: Level, fields: dict[str, Any],
                  at: float | None = None) -> str:
    """One log line (no newline); ``at`` is the record's unix time (default: now). Reserved keys in ``fields``
    are refused rather than silently overwritten."""
    reserved = {"time", "run_id", "event", "component", "level"} & set(fields)
    if reserved:
        raise ValueError(f"log fields may not use reserved keys {sorted(reserved)}")
    record = {"time": round(time.time() if at is None else at, 3), "run_id": run_id, "event": event,
              "component": component, "level": level, **_jsonable(fields)}
    return json.dumps(record, sort_keys=True, default=str)


class StructuredLogger:
    """Appends JSON lines to a file and/or a text stream; safe to share between threads.

    With neither ``path`` nor ``stream`` it writes nothing (e.g. the trainer's non-zero ranks).

    Args:
        component: the writing tool, e.g. ``"trainer"``, ``"runctl"``, ``"queue"``.
        run_id: put on every line; :meth:`bind` gives a logger with another id on the same outputs.
        path: a JSONL file (parents created). Unbuffered loggers open it per line, so several processes can
            append; a buffered one keeps it open.
        stream: e.g. ``sys.stderr``, for logs a person watches.
        tensorboard_dir: also write every finite numeric field as a TensorBoard scalar ``event/field`` at the
            record's ``step`` field (records without a ``step`` are not plotted).
        buffered: :meth:`buffer` keeps records in memory until :meth:`flush` (or the next :meth:`log`); the
            trainer's per-step records, so a step costs no file write. Call :meth:`close` at the end.
    """

    def __init__(self, component: str, run_id: str, path: str | Path | None = None,
                 stream: TextIO | None = None, *, tensorboard_dir: str | Path | None = None,
                 buffered: bool = False) -> None:
        self.component = component
        self.run_id = run_id
        self.path = Path(path) if path is not None else None
        self.stream = stream
        self.buffered = buffered
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._scalars: list[tuple[str, float, int]] = []
        self._handle: TextIO | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if buffered:
                self._handle = open(self.path, "a", encoding="utf-8", buffering=1 << 16)  # noqa: SIM115 - close()
        self._tb: Any = None
        if tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(tensorboard_dir))

    def bind(self, run_id: str) -> StructuredLogger:
        """The same outputs under another run id (e.g. a training run started by the queue); unbuffered."""
        return StructuredLogger(self.component, run_id, self.path, self.stream)

    def _format(self, event: str, level: Level, at: float | None, fields: dict[str, Any]) -> str:
        line = format_record(self.component, self.run_id, event, level, fields, at)
        if self._tb is not None and isinstance(fields.get("step"), int):
            for key, value in fields.items():
                if key != "step" and isinstance(value, int | float) and not isinstance(value, bool) \
                        and math.isfinite(value):
                    self._scalars.append((f"{event}/{key}", float(value), fields["step"]))
        return line

    def _write(self, lines: list[str]) -> None:
        if not lines:
            return
        text = "".join(line + "\n" for line in lines)
        if self._handle is not None:
            self._handle.write(text)
            self._handle.flush()
        elif self.path is not None:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(text)
        if self.stream is not None:
            self.stream.write(text)
            self.stream.flush()
        if self._tb is not None:
            for tag, value, step in self._scalars:
                self._tb.add_scalar(tag, value, step)
            self._scalars = []

    def log(self, event: str, level: Level = "info", *, at: float | None = None, **fields: Any) -> str:
        """Write one line now (after any buffered ones) and return it; ``at``: its unix time (default now)."""
        with self._lock:
            line = self._format(event, level, at, fields)
            pending, self._pending = self._pending, []
            self._write([*pending, line])
        return line

    def buffer(self, event: str, *, at: float | None = None, **fields: Any) -> None:
        """Keep an info record, stamped ``at`` (default now), until the next :meth:`flush` or :meth:`log`; an
        unbuffered logger writes it at once."""
        with self._lock:
            line = self._format(event, "info", at, fields)
            if self.buffered:
                self._pending.append(line)
            else:
                self._write([line])

    def flush(self) -> None:
        """Write the buffered records (one file write) and their TensorBoard scalars."""
        with self._lock:
            pending, self._pending = self._pending, []
            self._write(pending)

    def close(self) -> None:
        """Flush, then close the file and TensorBoard writer (a buffered logger must be closed)."""
        self.flush()
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def info(self, event: str, **fields: Any) -> str:
        return self.log(event, "info", **fields)

    def warning(self, event: str, **fields: Any) -> str:
        return self.log(event, "warning", **fields)

    def error(self, event: str, **fields: Any) -> str:
        return self.log(event, "error", **fields)


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a JSONL log (a torn last line, from a crash mid-write, is skipped)."""
    records = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
