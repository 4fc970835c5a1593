"""Wires the data pipeline (:mod:`training.data`) to a KD config: the endless training stream with its
resumable position, validation batches, and held-out examples for task accuracy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import Tensor

from training.data import (
    ExampleStream,
    QuarantineLog,
    StreamConfig,
    check_lengths,
    length_report,
    read_examples,
)
from training.kd.config import KDConfig
from training.tokenizer import DistilleryTokenizer


class TrainStream:
    """Training batches over as many epochs as needed; ``state_dict()`` is the position after the last
    batch handed out, so a resumed run sees exactly the batches an uninterrupted run would have."""

    def __init__(self, cfg: KDConfig, tokenizer: DistilleryTokenizer, rank: int = 0, world_size: int = 1) -> None:
        """Under ``torchrun`` every rank streams the same *global* batches (``batch_size * world_size`` rows);
        the trainer keeps rows ``rank::world_size`` (see :mod:`training.kd.distributed`)."""
        data = cfg.data
        out = Path(cfg.out_dir)
        self.quarantine = QuarantineLog(out / ("quarantine.jsonl" if rank == 0 else f"quarantine.rank{rank}.jsonl"),
                                        max_bad_fraction=data.max_bad_fraction)
        self.length_report = length_report(data.train, tokenizer, data.max_length, self.quarantine)
        self.quarantine.check()
        check_lengths(self.length_report, data.max_truncated_share, data.truncate)
        stream_cfg = StreamConfig(max_length=data.max_length, batch_size=data.batch_size * world_size,
                                  truncate=data.truncate, batching=data.batching,
                                  shuffle_buffer=data.shuffle_buffer, seed=cfg.seed, drop_last=True)
        self.stream = ExampleStream(data.train, tokenizer, stream_cfg,
                                    quarantine=QuarantineLog(self.quarantine.path.with_suffix(".stream.jsonl"),
                                                             max_bad_fraction=data.max_bad_fraction))

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        empty_epochs = 0
        while True:
            produced = False
            for batch in self.stream:
                produced = True
                yield batch
            empty_epochs = 0 if produced else empty_epochs + 1
            if empty_epochs > 1:
                raise RuntimeError("the training data yields no full batch: lower data.batch_size or add data")

    def state_dict(self) -> dict[str, Any]:
        return self.stream.state_dict()

    def summary(self) -> dict[str, Any]:
        """What the data pass found, for run reports (stable keys): ``quarantined_lines`` (malformed training
        records, each counted once), ``quarantine_file``, ``examples`` (valid training examples) and
        ``val_quarantined_lines`` (malformed validation records, from ``quarantine.val.jsonl``)."""
        val_file = self.quarantine.path.parent / "quarantine.val.jsonl"
        try:
            with val_file.open("rb") as handle:
                val_bad = sum(1 for line in handle if line.strip())
        except OSError:
            val_bad = 0
        return {"quarantined_lines": self.quarantine.n_bad, "quarantine_file": str(self.quarantine.path),
                "examples": self.length_report.n_examples, "val_quarantined_lines": val_bad}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state)


def eval_batches(paths: list[str], tokenizer: DistilleryTokenizer, max_length: int, batch_size: int,
                 quarantine_path: Path) -> Iterator[dict[str, Tensor]]:
    """Batches of ``paths`` in file order (over-long examples truncated, never refused)."""
    stream_cfg = StreamConfig(max_length=max_length, batch_size=batch_size, truncate=True, shuffle=False)
    quarantine = QuarantineLog(quarantine_path, max_bad_fraction=1.0)
    return iter(ExampleStream(paths, tokenizer, stream_cfg, quarantine=quarantine))


def val_batches(cfg: KDConfig, tokenizer: DistilleryTokenizer) -> Iterator[dict[str, Tensor]]:
    """Validation batches of a KD config (empty when it names no validation files)."""
    if not cfg.data.val:
        return iter(())
    return eval_batches(cfg.data.val, tokenizer, cfg.data.max_length, cfg.data.batch_size,
                        Path(cfg.out_dir) / "quarantine.val.jsonl")


def load_eval_examples(cfg: KDConfig) -> list[dict[str, Any]]:
    """The first ``eval.generate_examples`` validation examples, as dicts for task scorers."""
    out: list[dict[str, Any]] = []
    limit = cfg.eval.generate_examples
    for path in cfg.data.val:
        if len(out) >= limit:
            break
        quarantine = QuarantineLog(Path(cfg.out_dir) / "quarantine.eval.jsonl", max_bad_fraction=1.0)
        for _, example in read_examples(path, quarantine):
            out.append(example.model_dump())
            if len(out) >= limit:
                break
    return out
