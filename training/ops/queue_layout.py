"""The on-disk layout of a training queue, priorities, and atomic moves within it.

``QUEUE_DIR`` holds::

    inbox/            data files dropped or submitted here (write elsewhere, then rename in);
                      symbolic links are moved to failed/ unread
    high/ normal/ low/  validated files waiting, named SEQ-NAME (SEQ orders them within a priority)
    active/           the one file being trained
    done/             trained files (+ NAME.result.json)
    failed/           refused or failed files (+ NAME.reason.json: why, at which stage, after how many
                      attempts)
                      (names ending in .reason.json or .result.json are reserved for these sidecars)
    runs/NAME/attempt-K/  the training run of each attempt (checkpoints, logs, student)
    quarantine/       bad records found while validating each file (NAME.quarantine.jsonl)
    logs/queue.jsonl  the daemon's structured log
    journal.json      the daemon's state (see :mod:`training.ops.queue_journal`)
    base.yaml         the base training config when ``serve`` is not given ``--config``

A file's priority, first match wins: a sidecar ``inbox/NAME.priority`` holding ``high``, ``normal`` or
``low`` (write it before the data file appears); else the name's last suffix before the data extension
(``batch7.high.jsonl``); else ``normal``. ``python -m training.queue submit`` uses the name convention.
All moves are ``os.rename`` within ``QUEUE_DIR`` (atomic on one file system), followed by an fsync of both
directories so a crash cannot undo a completed move.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

Priority = Literal["high", "normal", "low"]
PRIORITIES: tuple[Priority, ...] = get_args(Priority)
# the extensions training.data.reader reads (kept here so submitting does not import torch; a test pins them)
DATA_SUFFIXES = frozenset({".jsonl", ".ndjson", ".json", ".parquet", ".pq"})
SIDECAR_SUFFIX = ".priority"
REASON_SUFFIX = ".reason.json"
RESULT_SUFFIX = ".result.json"


@dataclass(frozen=True)
class QueueLayout:
    """Paths of one queue directory."""

    root: Path

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def active(self) -> Path:
        return self.root / "active"

    @property
    def done(self) -> Path:
        return self.root / "done"

    @property
    def failed(self) -> Path:
        return self.root / "failed"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def journal(self) -> Path:
        return self.root / "journal.json"

    @property
    def lock(self) -> Path:
        return self.root / "daemon.lock"

    @property
    def log(self) -> Path:
        return self.root / "logs" / "queue.jsonl"

    @property
    def base_config(self) -> Path:
        return self.root / "base.yaml"

    def priority_dir(self, priority: Priority) -> Path:
        return self.root / priority

    def ensure(self) -> QueueLayout:
        """Create every directory (idempotent)."""
        for path in (self.inbox, self.active, self.done, self.failed, self.runs, self.quarantine,
                     *(self.priority_dir(p) for p in PRIORITIES)):
            path.mkdir(parents=True, exist_ok=True)
        return self

    def holding_dirs(self) -> dict[str, Path]:
        """Every directory a data file can sit in, by name."""
        dirs = {"inbox": self.inbox, **{p: self.priority_dir(p) for p in PRIORITIES}, "active": self.active,
                "done": self.done, "failed": self.failed}
        return dirs


def is_data_file(path: Path) -> bool:
    """A regular, non-hidden file with a data extension. Temporary files (``.name``), symbolic links (their
    targets are never read) and the queue's own sidecars (``*.reason.json``, ``*.result.json``: reserved
    names) are not."""
    name = path.name
    return (path.is_file() and not path.is_symlink() and not name.startswith(".")
            and path.suffix.lower() in DATA_SUFFIXES
            and not name.endswith((REASON_SUFFIX, RESULT_SUFFIX)))


def data_files(directory: Path) -> list[Path]:
    """Data files of a directory in name order."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if is_data_file(p))


def priority_from_name(name: str) -> Priority | None:
    """``batch.high.jsonl`` -> ``"high"``; None without a priority suffix."""
    stem = Path(name).stem
    tag = Path(stem).suffix.lstrip(".").lower()
    return tag if tag in PRIORITIES else None  # type: ignore[return-value]


def sidecar_of(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def read_sidecar_priority(path: Path) -> Priority | None:
    """The priority in ``NAME.priority`` beside ``path``.

    Raises:
        ValueError: when the sidecar holds anything but high/normal/low.
    """
    sidecar = sidecar_of(path)
    if sidecar.is_symlink():
        raise ValueError(f"{sidecar} is a symbolic link; write the priority into a regular file")
    if not sidecar.is_file():
        return None
    text = sidecar.read_text(encoding="utf-8").strip().lower()
    if text not in PRIORITIES:
        raise ValueError(f"{sidecar} says {text!r}; expected one of {', '.join(PRIORITIES)}")
    return text  # type: ignore[return-value]


def file_priority(path: Path) -> Priority:
    """Sidecar, then name convention, then ``normal`` (see the module docstring)."""
    return read_sidecar_priority(path) or priority_from_name(path.name) or "normal"


def fsync_dir(path: Path) -> None:
    """Flush a directory entry change (rename, create) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def move(src: Path, dst_dir: Path, name: str | None = None) -> Path:
    """Atomically rename ``src`` into ``dst_dir`` (same file system); refuses to overwrite."""
    dst = dst_dir / (name or src.name)
    if dst.exists():
        raise FileExistsError(f"{dst} already exists; refusing to overwrite it with {src}")
    os.rename(src, dst)
    fsync_dir(dst_dir)
    if src.parent != dst_dir:
        fsync_dir(src.parent)
    return dst


def submit(root: Path, file: Path, priority: Priority) -> Path:
    """Copy ``file`` into the queue's inbox as ``STEM.PRIORITY.EXT``, atomically and never over another file.

    The copy is written to a hidden temporary name first and then hard-linked to its final name (which
    fails rather than replaces when the name is taken; ``-1``, ``-2``, ... are tried next).
    """
    file = Path(file)
    if file.suffix.lower() not in DATA_SUFFIXES:
        raise ValueError(f"{file}: not a data file (expected one of {sorted(DATA_SUFFIXES)})")
    if priority not in PRIORITIES:
        raise ValueError(f"priority must be one of {PRIORITIES}, got {priority!r}")
    layout = QueueLayout(Path(root)).ensure()
    tmp = layout.inbox / f".submit-{uuid.uuid4().hex}.tmp"
    shutil.copyfile(file, tmp)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    stem = file.stem
    try:
        for n in range(10_000):
            name = f"{stem}{'' if n == 0 else f'-{n}'}.{priority}{file.suffix}"
            try:
                os.link(tmp, layout.inbox / name)
            except FileExistsError:
                continue
            fsync_dir(layout.inbox)
            return layout.inbox / name
        raise FileExistsError(f"no free name for {file.name} in {layout.inbox}")
    finally:
        tmp.unlink(missing_ok=True)
