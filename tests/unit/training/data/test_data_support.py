"""Helpers shared by the data pipeline tests: a character tokenizer and corpus writers (no tests here)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch


@dataclass(frozen=True)
class CharTokenizer:
    """Maps each character to one id: ``3 + ord(c) % 256``; 0, 1, 2 are pad, bos, eos."""

    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    vocab_size: int = 259

    def encode(self, text: str) -> list[int]:
        return [3 + ord(char) % 256 for char in text]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(chr(i - 3) for i in ids if i >= 3)


def write_jsonl(path: Path, records: Iterable[dict[str, Any] | str]) -> Path:
    """One line a record; a str is written verbatim (to plant malformed lines)."""
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write((record if isinstance(record, str) else json.dumps(record)) + "\n")
    return path


def write_parquet(path: Path, records: list[dict[str, Any]], row_group_size: int = 4) -> Path:
    """Columns are the union of the records' keys; a record without a key gets a null there."""
    columns = list(dict.fromkeys(key for record in records for key in record))
    table = pa.table({column: [record.get(column) for record in records] for column in columns})
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def make_records(start: int, count: int, seed: int = 0) -> list[dict[str, Any]]:
    """Examples ``ex{i}`` whose prompt starts with ``<i>`` and whose lengths vary from a few to ~40 tokens."""
    rng = random.Random(seed + start)
    return [{"id": f"ex{i}", "prompt": f"<{i}>" + "p" * rng.randint(0, 12),
             "completion": "c" * rng.randint(0, 20), "task": "math"}
            for i in range(start, start + count)]


def document_ids(batch: dict[str, torch.Tensor], tokenizer: CharTokenizer) -> list[int]:
    """The example numbers of every document in a collated batch, read back from its ``<i>`` prompt prefix."""
    found = []
    for row_ids, row_seq in zip(batch["input_ids"].tolist(), batch["sequence_ids"].tolist(), strict=True):
        for segment in sorted(set(row_seq) - {0}):
            text = tokenizer.decode(t for t, s in zip(row_ids, row_seq, strict=True) if s == segment)
            found.append(int(text[1:text.index(">")]))
    return found
