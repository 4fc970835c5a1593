"""The state of a training queue as one report (``python -m training.queue status QUEUE_DIR``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.ops.queue_journal import load_journal
from training.ops.queue_layout import QueueLayout, data_files
from training.ops.run_control import pid_alive


def daemon_pid(layout: QueueLayout) -> int | None:
    """The pid of the live daemon serving ``layout`` (from its lock file), or None."""
    try:
        text = layout.lock.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and pid_alive(int(text)) else None


def queue_status(root: Path) -> dict[str, Any]:
    """Files per directory, the journal's view, and the daemon's pid."""
    layout = QueueLayout(Path(root).resolve())
    journal = load_journal(layout.journal)
    files = {name: [p.name for p in data_files(path)] for name, path in layout.holding_dirs().items()}
    return {
        "queue_dir": str(layout.root),
        "daemon_pid": daemon_pid(layout),
        "counts": {name: len(names) for name, names in files.items()},
        "files": files,
        "in_progress": journal.in_progress.model_dump() if journal.in_progress else None,
        "attempts": journal.attempts,
        "current_student": journal.current_student,
        "finished": len(journal.history),
    }
