"""The training-queue daemon: admit files from the inbox, train the current student on them in priority
order, and move each to ``done/`` or ``failed/`` exactly once, across restarts and crashes.

One file at a time, highest priority first (``high`` > ``normal`` > ``low``; admission order within a
priority). Each file is a training run of its own in ``QUEUE_DIR/runs/NAME/attempt-K``: the base config
with ``data.train = [the file]``, ``resume: auto``, and ``init_from`` = the student produced by the
previous successful file (the base config's own ``init_from`` for the first one), so the student keeps
learning file after file. ``optim.max_steps`` of the base config is the number of steps per file.

Failures: a training error (diverged loss, unreadable data, a locked key changed...) is retried in a fresh
run directory until the file has been started ``max_attempts`` times, then the file goes to ``failed/``
with ``NAME.reason.json``. A daemon killed mid-file (even with SIGKILL) resumes that file from its last
checkpoint when restarted (same run directory, counted as an attempt, so a file that crashes the daemon
every time still ends in ``failed/``). SIGTERM/SIGINT stop the daemon gracefully: a file being trained is
checkpointed (status ``interrupted``) and left in ``active/`` to be resumed on the next start; so is a file
whose run was stopped with ``python -m training.runctl stop``. Each run also obeys ``runctl pause/resume``.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import gc
import os
import signal
import stat
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import yaml
from pydantic import Field, ValidationError

from training.config_base import StrictModel
from training.kd.config import ConfigFileError, KDConfig
from training.kd.trainer import KDTrainer, TrainerHook
from training.ops.queue_journal import InProgress, Journal, load_journal, save_journal
from training.ops.queue_layout import (
    PRIORITIES,
    REASON_SUFFIX,
    RESULT_SUFFIX,
    SIDECAR_SUFFIX,
    Priority,
    QueueLayout,
    data_files,
    file_priority,
    is_data_file,
    move,
    sidecar_of,
)
from training.ops.queue_validate import validate_file
from training.ops.run_control import read_json, write_json_atomic
from training.ops.run_hooks import RunControlHook, RunControlOptions, hooks_from_options
from training.ops.structured_log import StructuredLogger, new_run_id
from training.tokenizer import DistilleryTokenizer

ORPHAN_SIDECAR_SECONDS = 60.0


class QueueError(RuntimeError):
    """The daemon cannot serve this queue (bad base config, another daemon holds the lock...)."""


class DaemonOptions(StrictModel):
    """``serve`` settings, validated at the CLI edge."""

    queue_dir: Path
    config: Path | None = Field(None, description="base training config (default QUEUE_DIR/base.yaml)")
    once: bool = Field(False, description="exit when no work is left instead of polling")
    poll_seconds: float = Field(5.0, gt=0)
    max_attempts: int = Field(3, ge=1)
    settle_seconds: float = Field(1.0, ge=0, description="inbox files younger than this are left alone")


class _StopOnDaemonSignal(TrainerHook):
    """Stops a run at its next step when the daemon got SIGTERM/SIGINT before the trainer's own handlers
    were installed (e.g. while the run was still loading its data)."""

    def __init__(self, daemon: QueueDaemon) -> None:
        self.daemon = daemon

    def on_step_end(self, trainer: KDTrainer, terms: dict[str, float]) -> None:
        if self.daemon.stop_signal is not None:
            trainer.request_stop(f"queue daemon got signal {self.daemon.stop_signal}")


class QueueDaemon:
    """Serves one queue directory; see the module docstring."""

    def __init__(self, options: DaemonOptions, stream: TextIO | None = sys.stderr) -> None:
        self.options = options
        self.layout = QueueLayout(options.queue_dir.resolve()).ensure()
        self.session_id = new_run_id()
        self.log = StructuredLogger("queue", self.session_id, self.layout.log, stream)
        self.base = self._load_base(options.config or self.layout.base_config)
        self.base_cfg = self.config_for(self.layout.root / "placeholder.jsonl",
                                        self.layout.runs / "placeholder", self.base.get("init_from"))
        self.tokenizer = DistilleryTokenizer.load(self.base_cfg.tokenizer)
        self.journal: Journal = load_journal(self.layout.journal)
        self.stop_signal: int | None = None
        self.counts: Counter[str] = Counter()

    # ---- config ------------------------------------------------------------------------------------------
    @staticmethod
    def _load_base(path: Path) -> dict[str, Any]:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise QueueError(f"cannot read the base config {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise QueueError(f"{path} must hold a mapping")
        return data

    def config_for(self, train_file: Path, out_dir: Path, init_from: str | None) -> KDConfig:
        """The base config for one file's run."""
        data = copy.deepcopy(self.base)
        data["out_dir"] = str(out_dir)
        data.setdefault("data", {})["train"] = [str(train_file)]
        data["init_from"] = init_from
        data["resume"] = "auto"
        try:
            return KDConfig.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise ConfigFileError(f"invalid base config: {problems}") from exc

    def _save(self) -> None:
        save_journal(self.layout.journal, self.journal)

    # ---- process plumbing ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        handle = open(self.layout.lock, "a+")  # noqa: SIM115 - held for the daemon's lifetime
        try:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                handle.seek(0)
                raise QueueError(f"another daemon (pid {handle.read().strip() or '?'}) serves "
                                 f"{self.layout.root}") from exc
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            yield
        finally:
            handle.close()

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        previous = {}

        def handler(signum: int, frame: Any) -> None:
            self.stop_signal = signum

        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):
                previous[sig] = signal.signal(sig, handler)
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self.stop_signal is None and time.monotonic() < deadline:
            time.sleep(min(0.2, max(deadline - time.monotonic(), 0.0)))

    # ---- the loop ------------------------------------------------------------------------------------------
    def serve(self) -> dict[str, Any]:
        """Run until stopped (or, with ``once``, until no work is left); returns a summary."""
        with self._exclusive(), self._signals():
            self.log.info("daemon_started", pid=os.getpid(), queue_dir=str(self.layout.root),
                          once=self.options.once, max_attempts=self.options.max_attempts)
            self.recover()
            halted = False
            while self.stop_signal is None:
                self.admit_inbox()
                if self.journal.in_progress is None:
                    item = self.next_queued()
                    if item is None:
                        if self.options.once and not data_files(self.layout.inbox):
                            break
                        self._sleep(self.options.poll_seconds if not self.options.once
                                    else min(self.options.poll_seconds, 0.2))
                        continue
                    self.start(*item)
                if not self.run_in_progress():
                    halted = True
                    break
            job = self.journal.in_progress
            counts = {k: self.counts[k] for k in ("done", "failed", "retried")}
            summary = {"session": self.session_id, **counts,
                       "halted": halted or self.stop_signal is not None, "signal": self.stop_signal,
                       "in_progress": job.name if job else None}
            self.log.info("daemon_stopped", **summary)
            return summary

    def next_queued(self) -> tuple[Priority, Path] | None:
        for priority in PRIORITIES:
            files = data_files(self.layout.priority_dir(priority))
            if files:
                return priority, files[0]
        return None

    # ---- admission -----------------------------------------------------------------------------------------
    def admit_inbox(self) -> None:
        """Validate settled inbox files and move each to its priority directory or to ``failed/``."""
        now = time.time()
        for path in sorted(self.layout.inbox.iterdir()):
            try:
                info = path.lstat()  # the entry itself: a symbolic link is never followed
            except FileNotFoundError:  # gone since the listing (the sidecar of a file refused just now)
                continue
            if path.name.startswith(".") or stat.S_ISDIR(info.st_mode):
                continue
            if path.name.endswith(SIDECAR_SUFFIX):
                data = path.with_name(path.name[:-len(SIDECAR_SUFFIX)])
                if (not data.exists() and not data.is_symlink()
                        and now - info.st_mtime > ORPHAN_SIDECAR_SECONDS):
                    path.unlink(missing_ok=True)
                continue
            if stat.S_ISLNK(info.st_mode):  # its target may be any file the daemon can read
                self._refuse_symlink(path)
                continue
            if not path.is_file():
                continue
            if now - path.stat().st_mtime < self.options.settle_seconds:
                continue
            self._admit(path)

    def _refuse_symlink(self, path: Path) -> None:
        """Move a symbolic link (the link, not its target, which is never read) to ``failed/``."""
        name = f"{self.journal.next_seq:06d}-{path.name}"
        self.journal.next_seq += 1
        self._save()
        self._refuse(path, name, "admission", "SymlinkRefused",
                     f"{path.name} is a symbolic link; the queue takes regular files only and does not read link "
                     "targets: copy the data in with `python -m training.queue submit QUEUE_DIR FILE`")

    def _admit(self, path: Path) -> None:
        name = f"{self.journal.next_seq:06d}-{path.name}"
        self.journal.next_seq += 1
        self._save()
        sidecar = sidecar_of(path)
        if not is_data_file(path):
            self._refuse(path, name, "admission", "UnsupportedFile",
                         f"{path.suffix!r} is not a data file extension (JSONL or Parquet)")
            return
        try:
            priority = file_priority(path)
        except ValueError as exc:
            self._refuse(path, name, "admission", "BadPrioritySidecar", str(exc))
            return
        quarantine = self.layout.quarantine / f"{name}.quarantine.jsonl"
        verdict = validate_file(path, self.base_cfg, self.tokenizer, quarantine)
        if not verdict.ok:
            self._refuse(path, name, "validation", verdict.error_type or "Invalid", verdict.reason or "",
                         verdict.details)
            return
        move(path, self.layout.priority_dir(priority), name)
        sidecar.unlink(missing_ok=True)
        self.log.info("file_admitted", file=name, priority=priority,
                      examples=verdict.details["lengths"]["n_examples"])

    def _refuse(self, path: Path, name: str, stage: str, error_type: str, reason: str,
                details: dict[str, Any] | None = None) -> None:
        self._write_reason(name, stage, error_type, reason, attempts=0, details=details)
        move(path, self.layout.failed, name)
        sidecar_of(path).unlink(missing_ok=True)
        self.journal.record(name, "failed", None, reason)
        self._save()
        self.counts["failed"] += 1
        self.log.warning("file_refused", file=name, stage=stage, error_type=error_type, reason=reason)

    def _write_reason(self, name: str, stage: str, error_type: str, reason: str, attempts: int,
                      details: dict[str, Any] | None = None, out_dir: str | None = None) -> None:
        write_json_atomic(self.layout.failed / f"{name}{REASON_SUFFIX}", {
            "file": name, "stage": stage, "error_type": error_type, "reason": reason, "attempts": attempts,
            "out_dir": out_dir, "details": details or {}, "at": time.time(),
            "daemon_session": self.session_id})

    # ---- training ------------------------------------------------------------------------------------------
    def start(self, priority: Priority, path: Path) -> None:
        """Journal the file as in progress (first), then move it to ``active/``."""
        name = path.name
        attempt = self.journal.attempts.get(name, 0) + 1
        self.journal.attempts[name] = attempt
        self.journal.in_progress = InProgress(
            name=name, priority=priority, attempt=attempt,
            out_dir=f"runs/{Path(name).stem}/attempt-{attempt}",
            init_from=self.journal.current_student or self.base.get("init_from"), started_at=time.time())
        self._save()
        move(path, self.layout.active)

    def run_in_progress(self) -> bool:
        """Train the in-progress file; False when the daemon must halt (run interrupted or stopped)."""
        job = self.journal.in_progress
        assert job is not None
        out_dir = self.layout.root / job.out_dir
        cfg = self.config_for(self.layout.active / job.name, out_dir, job.init_from)
        hooks = hooks_from_options(RunControlOptions(), out_dir)
        control = next(h for h in hooks if isinstance(h, RunControlHook))
        resuming = any((out_dir / "checkpoints").glob("step-*"))
        self.log.info("training_started", file=job.name, attempt=job.attempt, out_dir=job.out_dir,
                      init_from=job.init_from, resuming=resuming)
        trainer: KDTrainer | None = None
        try:
            trainer = KDTrainer(cfg, hooks=[*hooks, _StopOnDaemonSignal(self)])
            result = trainer.train()
        except Exception as exc:  # any training failure is the file's, never the daemon's
            control.close("error")
            self._attempt_failed(job, exc, trainer.run_id if trainer else None)
            return True
        finally:
            del trainer
            gc.collect()
        if result.status != "completed":
            job.halted = True
            self._save()
            self.log.warning("training_halted", file=job.name, status=result.status, step=result.step,
                             out_dir=job.out_dir)
            return False
        self._finish_done(job, result.step, result.metrics, control.tracker.run_id)
        return True

    def _finish_done(self, job: InProgress, step: int, metrics: dict[str, float], run_id: str | None) -> None:
        student = self.layout.root / job.out_dir / "student"
        write_json_atomic(self.layout.done / f"{job.name}{RESULT_SUFFIX}", {
            "file": job.name, "step": step, "metrics": metrics, "student": str(student), "run_id": run_id,
            "attempts": job.attempt, "out_dir": job.out_dir, "init_from": job.init_from, "at": time.time()})
        move(self.layout.active / job.name, self.layout.done)
        self._complete_done(job)
        self.log.info("file_done", file=job.name, step=step, training_run_id=run_id, student=str(student),
                      **{f"metric_{k}": v for k, v in metrics.items()})

    def _complete_done(self, job: InProgress) -> None:
        student = self.layout.root / job.out_dir / "student"
        if student.is_dir():
            self.journal.current_student = str(student)
        self.journal.record(job.name, "done", job.out_dir)
        self._save()
        self.counts["done"] += 1

    def _attempt_failed(self, job: InProgress, exc: BaseException, run_id: str | None) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        attempts = self.journal.attempts.get(job.name, job.attempt)
        self.log.error("training_failed", file=job.name, attempt=attempts, error=reason,
                       training_run_id=run_id)
        if attempts >= self.options.max_attempts:
            self._fail_active(job, "training", type(exc).__name__,
                              f"failed {attempts} time(s), last: {reason}")
            return
        move(self.layout.active / job.name, self.layout.priority_dir(job.priority))
        self.journal.in_progress = None
        self._save()
        self.counts["retried"] += 1
        self.log.warning("file_requeued", file=job.name, attempts=attempts,
                         max_attempts=self.options.max_attempts)

    def _fail_active(self, job: InProgress, stage: str, error_type: str, reason: str) -> None:
        attempts = self.journal.attempts.get(job.name, job.attempt)
        self._write_reason(job.name, stage, error_type, reason, attempts, out_dir=job.out_dir)
        move(self.layout.active / job.name, self.layout.failed)
        self.journal.record(job.name, "failed", job.out_dir, reason)
        self._save()
        self.counts["failed"] += 1
        self.log.error("file_failed", file=job.name, attempts=attempts, reason=reason)

    # ---- recovery ------------------------------------------------------------------------------------------
    def recover(self) -> None:
        """Bring the journal and the directories back in line after a crash (see :mod:`queue_journal`)."""
        job = self.journal.in_progress
        if job is not None:
            if (self.layout.active / job.name).exists():
                self._recover_active(job)
            elif (self.layout.done / job.name).exists():
                self._complete_done(job)
                self.log.info("recovered_done", file=job.name)
            elif (self.layout.failed / job.name).exists():
                reason = (read_json(self.layout.failed / f"{job.name}{REASON_SUFFIX}") or {}).get("reason")
                self.journal.record(job.name, "failed", job.out_dir, reason)
                self._save()
                self.log.info("recovered_failed", file=job.name)
            elif (self.layout.priority_dir(job.priority) / job.name).exists():
                self.journal.in_progress = None  # journaled but never moved: it did not start
                self._save()
                self.log.info("recovered_not_started", file=job.name)
            else:
                self.journal.in_progress = None
                self._save()
                self.log.error("file_missing", file=job.name, detail="in progress in the journal but in no "
                                                                    "queue directory (removed by hand?)")
        current = self.journal.in_progress.name if self.journal.in_progress else None
        for stray in data_files(self.layout.active):
            if stray.name != current:
                self._write_reason(stray.name, "recovery", "Orphaned",
                                   "found in active/ without a journal entry",
                                   self.journal.attempts.get(stray.name, 0))
                move(stray, self.layout.failed)
                self.journal.record(stray.name, "failed", None, "found in active/ without a journal entry")
                self._save()
                self.counts["failed"] += 1
        for folder, suffix in ((self.layout.failed, REASON_SUFFIX), (self.layout.done, RESULT_SUFFIX)):
            for sidecar in folder.glob(f"*{suffix}"):
                if not (folder / sidecar.name[:-len(suffix)]).exists():
                    sidecar.unlink()  # written just before a crash, its move never happened

    def _recover_active(self, job: InProgress) -> None:
        attempts = self.journal.attempts.get(job.name, job.attempt)
        if job.halted:  # checkpointed on a graceful stop: carry on, same attempt
            job.halted = False
            self._save()
            self.log.info("resuming_halted_file", file=job.name, attempt=job.attempt, out_dir=job.out_dir)
            return
        if attempts >= self.options.max_attempts:
            self._fail_active(job, "training", "Interrupted",
                              f"the daemon stopped or crashed during each of {attempts} attempt(s)")
            return
        job.attempt = self.journal.attempts[job.name] = attempts + 1
        self._save()
        self.log.warning("resuming_interrupted_file", file=job.name, attempt=job.attempt, out_dir=job.out_dir)

