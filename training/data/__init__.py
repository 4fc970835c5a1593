"""The data pipeline of the distillation trainer: read, validate, tokenize, measure, stream and batch examples.

Modules: :mod:`~training.data.schema` (the :class:`Example` record), :mod:`~training.data.reader` (streaming
JSONL/Parquet reads), :mod:`~training.data.quarantine` (bad records), :mod:`~training.data.encoding`
(token ids and labels; the label alignment is documented there), :mod:`~training.data.guardrail` (length
report and refusal), :mod:`~training.data.batching` and :mod:`~training.data.stream` (the resumable
``IterableDataset``), :mod:`~training.data.collate` (tensors), :mod:`~training.data.json_mend` (teacher JSON).
"""

from training.data.collate import PackedRow, Row, block_causal_mask, collate
from training.data.encoding import IGNORE_INDEX, EncodedExample, TokenizerLike, encode_example, example_length
from training.data.errors import (
    DataError,
    DataFileError,
    DataQualityError,
    MalformedRecordError,
    SequenceTooLongError,
    StreamStateError,
)
from training.data.guardrail import LengthReport, check_lengths, histogram_percentile, length_report
from training.data.json_mend import JsonMendCounter, MendResult, mend_json
from training.data.quarantine import QuarantineLog
from training.data.reader import RawRecord, RecordError, count_records, iter_raw_records, read_examples
from training.data.schema import Example
from training.data.stream import ExampleStream, Shard, StreamConfig

__all__ = [
    "IGNORE_INDEX",
    "DataError",
    "DataFileError",
    "DataQualityError",
    "EncodedExample",
    "Example",
    "ExampleStream",
    "JsonMendCounter",
    "LengthReport",
    "MalformedRecordError",
    "MendResult",
    "PackedRow",
    "QuarantineLog",
    "RawRecord",
    "RecordError",
    "Row",
    "SequenceTooLongError",
    "Shard",
    "StreamConfig",
    "StreamStateError",
    "TokenizerLike",
    "block_causal_mask",
    "check_lengths",
    "collate",
    "count_records",
    "encode_example",
    "example_length",
    "histogram_percentile",
    "iter_raw_records",
    "length_report",
    "mend_json",
    "read_examples",
]
