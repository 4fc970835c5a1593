"""The queue daemon's journal: the state that lets it survive its own restart (even SIGKILL).

``journal.json`` (replaced atomically on every change) records the next admission number, the file in
progress (its name, priority, attempt number, run directory and the student it started from), the
number of attempts of every file not yet finished, the current student, and every outcome.

Write ordering makes every crash recoverable: the journal is written *before* the move it announces
(``in_progress`` before ``high/X -> active/X``), and an outcome is journaled *after* ``active/X`` has moved
to ``done/`` or ``failed/``. On restart the directory a file is found in decides: still in ``active/`` ->
resume its run (same run directory, ``resume: auto``), already in ``done/``/``failed/`` -> only the
journal entry is completed, back in its priority directory -> it never started.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from training.ops.queue_layout import Priority
from training.ops.run_control import read_json, write_json_atomic

JOURNAL_FORMAT = "distillery-queue-journal"


class InProgress(BaseModel):
    """The file the daemon is training (or was, when it died)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    priority: Priority
    attempt: int = Field(ge=1)
    out_dir: str = Field(description="the run directory, relative to QUEUE_DIR")
    init_from: str | None = Field(description="the student it started from (absolute), fixed for resumes")
    started_at: float
    halted: bool = Field(False, description="checkpointed by a graceful stop: resuming is not a new attempt")


class Outcome(BaseModel):
    """How a file ended."""

    model_config = ConfigDict(extra="forbid")

    name: str
    outcome: Literal["done", "failed"]
    at: float
    attempts: int
    out_dir: str | None = None
    reason: str | None = None


class Journal(BaseModel):
    """Everything the daemon must remember across restarts."""

    model_config = ConfigDict(extra="forbid")

    format: str = JOURNAL_FORMAT
    next_seq: int = Field(1, ge=1)
    in_progress: InProgress | None = None
    attempts: dict[str, int] = {}
    current_student: str | None = Field(None, description="student artifact the next file starts from")
    history: list[Outcome] = []

    def record(self, name: str, outcome: Literal["done", "failed"], out_dir: str | None,
               reason: str | None = None) -> None:
        """Close a file: drop it from ``in_progress`` and ``attempts``, append its outcome."""
        self.history.append(Outcome(name=name, outcome=outcome, at=time.time(),
                                    attempts=self.attempts.pop(name, 0), out_dir=out_dir, reason=reason))
        if self.in_progress is not None and self.in_progress.name == name:
            self.in_progress = None


def load_journal(path: Path) -> Journal:
    """The journal at ``path`` (a fresh one when absent).

    Raises:
        ValueError: when the file exists but is not a journal (never silently start over).
    """
    if not path.exists():
        return Journal()
    data = read_json(path)
    if data is None or data.get("format") != JOURNAL_FORMAT:
        raise ValueError(f"{path} is not a queue journal; move it away only if you know the queue is empty")
    return Journal.model_validate(data)


def save_journal(path: Path, journal: Journal) -> None:
    write_json_atomic(path, journal.model_dump(mode="json"))
