"""A quarantine for malformed records: every bad record is written down with where it came from and why."""

from __future__ import annotations

import json
from pathlib import Path

from training.data.errors import DataQualityError


class QuarantineLog:
    """Counts good and bad records and appends each bad one to a JSONL file.

    Each quarantined record becomes one line ``{"file", "line", "reason", "raw"}``. A record is counted
    once however often it is read (several epochs, a resumed stream re-reading its prefix): records are
    read in increasing line order within a file, so a per-file high-water mark is enough to tell a new
    record from a re-read one.

    The file is truncated when the log is created and opened in append mode for each bad record, so a log
    can be pickled into ``DataLoader`` workers. Give each DDP rank its own path.

    Args:
        path: the quarantine file to write.
        max_bad_fraction: the largest tolerated share of bad records, checked by :meth:`check` after a
            full pass.
        expected_records: the number of records the pass will see, if known (e.g. from
            :func:`training.data.reader.count_records`); then the budget is also enforced as soon as the
            bad count alone exceeds ``max_bad_fraction * expected_records``.
    """

    def __init__(self, path: str | Path, max_bad_fraction: float = 0.01,
                 expected_records: int | None = None) -> None:
        if not 0.0 <= max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
        if expected_records is not None and expected_records < 0:
            raise ValueError(f"expected_records must be >= 0, got {expected_records}")
        self.path = Path(path)
        self.max_bad_fraction = max_bad_fraction
        self.expected_records = expected_records
        self.n_good = 0
        self.n_bad = 0
        self._high_water: dict[str, int] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("", encoding="utf-8")

    @property
    def n_total(self) -> int:
        return self.n_good + self.n_bad

    def _is_new(self, file: str, line: int) -> bool:
        if line <= self._high_water.get(file, 0):
            return False
        self._high_water[file] = line
        return True

    def record_good(self, file: str, line: int) -> None:
        """Count a record that parsed and validated."""
        if self._is_new(file, line):
            self.n_good += 1

    def record_bad(self, file: str, line: int, reason: str, raw: str) -> None:
        """Write a bad record to the quarantine file, count it, and enforce the early budget.

        Raises:
            DataQualityError: when ``expected_records`` is known and the bad count alone exceeds the budget.
        """
        if not self._is_new(file, line):
            return
        self.n_bad += 1
        entry = json.dumps({"file": file, "line": line, "reason": reason, "raw": raw}, ensure_ascii=False)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(entry + "\n")
        if self.expected_records is not None and self.n_bad > self.max_bad_fraction * self.expected_records:
            raise DataQualityError(self.n_bad, self.n_total, self.max_bad_fraction, self.path,
                                   expected_total=self.expected_records)

    def check(self) -> None:
        """Enforce ``max_bad_fraction`` over everything counted so far (call after a full pass).

        Raises:
            DataQualityError: with the counts and the quarantine path when the bad share is over the limit.
        """
        if self.n_total and self.n_bad / self.n_total > self.max_bad_fraction:
            raise DataQualityError(self.n_bad, self.n_total, self.max_bad_fraction, self.path)

    def as_dict(self) -> dict[str, int | float | str]:
        """Counts for run reports."""
        return {"good": self.n_good, "bad": self.n_bad, "total": self.n_total,
                "bad_fraction": self.n_bad / self.n_total if self.n_total else 0.0,
                "quarantine_path": str(self.path)}
