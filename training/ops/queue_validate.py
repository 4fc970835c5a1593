"""Validation of a data file before it enters the queue: schema, bad-record budget, lengths, enough rows.

The same checks the trainer would run at start-up (:class:`training.kd.data_adapter.TrainStream`), done
once at admission so a bad file is refused with a reason instead of failing training later:

1. every record parses as an :class:`~training.data.schema.Example` (``read_examples`` with a
   :class:`~training.data.quarantine.QuarantineLog`: bad records are written to
   ``QUEUE_DIR/quarantine/NAME.quarantine.jsonl``; more than ``data.max_bad_fraction`` of them refuses
   the file);
2. the length guardrail (``length_report`` + ``check_lengths`` with the base config's ``max_length``,
   ``max_truncated_share`` and ``truncate``);
3. at least one full optimizer step of examples (``batch_size * grad_accum``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.data import QuarantineLog, check_lengths, count_records, length_report
from training.kd.config import KDConfig
from training.tokenizer import DistilleryTokenizer


@dataclass
class Validation:
    """The verdict on one file: ``ok``, else ``reason``; figures either way."""

    ok: bool
    reason: str | None = None
    error_type: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def validate_file(path: Path, cfg: KDConfig, tokenizer: DistilleryTokenizer,
                  quarantine_path: Path) -> Validation:
    """Run the admission checks on ``path`` with the training settings of ``cfg``."""
    data = cfg.data
    try:
        expected = count_records(path)
        quarantine = QuarantineLog(quarantine_path, max_bad_fraction=data.max_bad_fraction,
                                   expected_records=expected)
        report = length_report([path], tokenizer, data.max_length, quarantine)
        quarantine.check()
        check_lengths(report, data.max_truncated_share, data.truncate)
    except Exception as exc:  # any reader, pyarrow or schema error refuses the file, never stops the daemon
        return Validation(False, str(exc), type(exc).__name__, {"quarantine": str(quarantine_path)})
    details = {"records": expected, "quarantine": quarantine.as_dict(), "lengths": report.as_dict()}
    needed = data.batch_size * cfg.optim.grad_accum
    if report.n_examples < needed:
        reason = (f"{report.n_examples} valid examples, fewer than one optimizer step needs "
                  f"(data.batch_size * optim.grad_accum = {needed})")
        return Validation(False, reason, "TooFewExamples", details)
    return Validation(True, details=details)
