"""Streaming readers for JSONL and Parquet example files, one record at a time."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from training.data.errors import DataFileError, MalformedRecordError, check_data_files
from training.data.quarantine import QuarantineLog
from training.data.schema import Example, describe_validation_error

JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson", ".json"})
PARQUET_SUFFIXES = frozenset({".parquet", ".pq"})
_PARQUET_BATCH_ROWS = 1024
_REQUIRED_FIELDS = frozenset(name for name, field in Example.model_fields.items() if field.is_required())


class RecordError(ValueError):
    """A raw record is not a valid :class:`Example`; the message is the reason."""


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One record as stored: a JSONL line (bytes, newline stripped) or a Parquet row (dict).

    ``line`` is the 1-based physical line number in a JSONL file (blank lines are not records but still
    count as lines) or the 1-based row number in a Parquet file.
    """

    file: str
    line: int
    payload: bytes | dict[str, Any]

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}"

    def raw_text(self) -> str:
        """The record as text, for the quarantine file."""
        if isinstance(self.payload, bytes):
            return self.payload.decode("utf-8", errors="replace")
        return json.dumps(self.payload, ensure_ascii=False, default=str)


def _file_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    raise ValueError(f"{path}: unknown data file type {suffix!r}; expected one of "
                     f"{sorted(JSONL_SUFFIXES | PARQUET_SUFFIXES)}")


def _iter_jsonl(path: Path) -> Iterator[RawRecord]:
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            payload = line.rstrip(b"\r\n")
            if number == 1 and payload.startswith(b"\xef\xbb\xbf"):
                payload = payload[3:]
            if payload.strip():
                yield RawRecord(str(path), number, payload)


def _open_parquet(path: Path) -> pq.ParquetFile:
    """Open a Parquet file; one that is not Parquet raises :class:`DataFileError` naming it."""
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise DataFileError(f"{path} is not a readable Parquet file ({error}); convert it to Parquet, or "
                            f"rename it to .jsonl if it holds JSON lines") from error


def _iter_parquet(path: Path) -> Iterator[RawRecord]:
    number = 0
    for batch in _open_parquet(path).iter_batches(batch_size=_PARQUET_BATCH_ROWS):
        for row in batch.to_pylist():
            number += 1
            yield RawRecord(str(path), number, row)


def iter_raw_records(path: str | Path) -> Iterator[RawRecord]:
    """Yield the records of one file in order without parsing them.

    JSONL is read line by line; Parquet batch by batch within each row group (never the whole file).

    Raises:
        DataFileError: (at once, not on the first ``next``) when the file does not exist.
    """
    path = Path(path)
    check_data_files([path])
    return _iter_jsonl(path) if _file_kind(path) == "jsonl" else _iter_parquet(path)


def count_records(path: str | Path) -> int:
    """Number of records in a file: non-blank lines of a JSONL file, rows of a Parquet file (metadata only)."""
    path = Path(path)
    check_data_files([path])
    if _file_kind(path) == "parquet":
        return _open_parquet(path).metadata.num_rows
    return sum(1 for _ in _iter_jsonl(path))


def parse_record(record: RawRecord) -> Example:
    """Decode and validate one raw record.

    Parquet has no "absent" value, so a null in an optional or unknown column is treated as absent.

    Raises:
        RecordError: with a one-line reason (bad UTF-8, bad JSON, not an object, schema violation).
    """
    if isinstance(record.payload, bytes):
        try:
            text = record.payload.decode("utf-8")
        except UnicodeDecodeError as error:
            raise RecordError(f"invalid UTF-8 at byte {error.start}") from error
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise RecordError(f"invalid JSON: {error.msg} at column {error.colno}") from error
        if not isinstance(data, dict):
            raise RecordError(f"expected a JSON object, got {type(data).__name__}")
    else:
        data = {k: v for k, v in record.payload.items() if v is not None or k in _REQUIRED_FIELDS}
    try:
        return Example.model_validate(data)
    except ValidationError as error:
        raise RecordError(describe_validation_error(error)) from error


def accept_record(record: RawRecord, quarantine: QuarantineLog | None) -> Example | None:
    """Parse a record, counting it in ``quarantine``; a bad record is quarantined and ``None`` returned.

    Raises:
        MalformedRecordError: for a bad record when ``quarantine`` is None (fail fast, never drop silently).
        DataQualityError: when the quarantine's early budget is exceeded.
    """
    try:
        example = parse_record(record)
    except RecordError as error:
        if quarantine is None:
            raise MalformedRecordError(record.location, str(error)) from error
        quarantine.record_bad(record.file, record.line, str(error), record.raw_text())
        return None
    if quarantine is not None:
        quarantine.record_good(record.file, record.line)
    return example


def read_examples(path: str | Path, quarantine: QuarantineLog | None = None) -> Iterator[tuple[str, Example]]:
    """Stream ``("file:line", Example)`` pairs from a JSONL or Parquet file.

    Bad records go to ``quarantine``; without one the first bad record raises
    :class:`~training.data.errors.MalformedRecordError`. This does not call ``quarantine.check()``:
    do that after the pass.
    """
    for record in iter_raw_records(path):
        example = accept_record(record, quarantine)
        if example is not None:
            yield record.location, example
