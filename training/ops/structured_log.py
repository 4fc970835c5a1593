"""Structured JSON-lines logs shared by run control, the status server, versions, the queue and compare.

Every line is one JSON object with the same keys as the trainer's ``logs/train.jsonl``
(:class:`training.kd.trainer.JsonlLogger`): ``time`` (unix seconds), ``run_id``, ``event``, plus ``component``
(which tool wrote it) and ``level``, then the event's own fields. Keys are sorted, so lines diff cleanly.
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


def format_record(component: str, run_id: str, event: str, level: Level, fields: dict[str, Any]) -> str:
    """One log line (no newline). Reserved keys in ``fields`` are refused rather than silently overwritten."""
    reserved = {"time", "run_id", "event", "component", "level"} & set(fields)
    if reserved:
        raise ValueError(f"log fields may not use reserved keys {sorted(reserved)}")
    record = {"time": round(time.time(), 3), "run_id": run_id, "event": event, "component": component,
              "level": level, **_jsonable(fields)}
    return json.dumps(record, sort_keys=True, default=str)


class StructuredLogger:
    """Appends JSON lines to a file and/or a text stream; safe to share between threads.

    Args:
        component: the writing tool, e.g. ``"runctl"``, ``"queue"``.
        run_id: put on every line; :meth:`bind` gives a logger with another id on the same outputs.
        path: a JSONL file (parents created; opened per line so several processes can append).
        stream: e.g. ``sys.stderr``, for logs a person watches.
    """

    def __init__(self, component: str, run_id: str, path: str | Path | None = None,
                 stream: TextIO | None = None) -> None:
        self.component = component
        self.run_id = run_id
        self.path = Path(path) if path is not None else None
        self.stream = stream
        self._lock = threading.Lock()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def bind(self, run_id: str) -> StructuredLogger:
        """The same outputs under another run id (e.g. a training run started by the queue)."""
        return StructuredLogger(self.component, run_id, self.path, self.stream)

    def log(self, event: str, level: Level = "info", **fields: Any) -> str:
        """Write one line and return it."""
        line = format_record(self.component, self.run_id, event, level, fields)
        with self._lock:
            if self.path is not None:
                with open(self.path, "a", encoding="utf-8") as handle:
                    handle.write(line + "\n")
            if self.stream is not None:
                self.stream.write(line + "\n")
                self.stream.flush()
        return line

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
