"""A streaming, shuffled, sharded, batched and exactly resumable dataset of encoded examples.

Per epoch, for the shard ``(index, count)`` (``count = world_size * dataloader workers``):

1. files are visited in an order drawn from ``(seed, epoch)`` (the given order when ``shuffle=False``);
2. the ``n``-th raw record of that sequence (bad ones included) belongs to shard ``n % count``, so every
   record goes to exactly one shard, and a shard only parses and tokenizes its own records;
3. good records are encoded and pass through a shuffle buffer, then a batcher (length bucketing or
   sequence packing); both draw from generators seeded by ``(seed, epoch, shard)``;
4. each batch is collated into right-padded tensors (:func:`training.data.collate.collate`).

Extension points: a subclass of :class:`ExampleStream` changes what an item is and how a batch becomes tensors
by overriding :meth:`ExampleStream.encode` (one accepted record -> an :class:`EncodedExample` or a subclass)
and :meth:`ExampleStream.collate_rows` (a batch of rows of items -> tensors); the reading, sharding,
shuffling, batching and resume stay those of this module (e.g.
:class:`training.reasoning.step_data.StepExampleStream`).

Resuming: :meth:`ExampleStream.state_dict` records the epoch, how many of the shard's raw records were
consumed, the keys ``(file, line)`` of the items held by the shuffle buffer and the batcher, and the
generators' states. :meth:`ExampleStream.load_state_dict` re-reads the shard's records up to that point
(parsing only the held ones) and rebuilds the buffers, so the following batches are exactly those the
uninterrupted stream would have produced. The state is plain JSON-serializable data.

The state tracks the process that iterates the stream: iterate it in-process (``DataLoader`` with
``num_workers=0``, or directly) to checkpoint mid-epoch; with worker processes only ``set_epoch`` boundaries
can be resumed. Save and load one state per DDP rank.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
from pydantic import Field
from torch import Tensor
from torch.utils.data import IterableDataset, get_worker_info

from training.config_base import FrozenStrictModel
from training.data.batching import BucketBatcher, ItemRows, Key, PackBatcher, ShuffleBuffer, StreamItem
from training.data.collate import PackedRow, collate
from training.data.encoding import EncodedExample, TokenizerLike, encode_example
from training.data.errors import DataError, StreamStateError, check_data_files
from training.data.quarantine import QuarantineLog
from training.data.reader import RawRecord, accept_record, iter_raw_records
from training.data.schema import Example

STATE_FORMAT = 1


class StreamConfig(FrozenStrictModel):
    """Batching settings of an :class:`ExampleStream` (e.g. the ``data`` section of a training config).

    ``batch_size`` counts rows: examples when bucketing, packed rows of up to ``max_length`` tokens when
    packing. ``bucket_pool_batches`` is how many batches' worth of examples are sorted together by length.
    ``shuffle=False`` keeps the given file order, passes examples through in order, and emits each bucket
    pool's batches shortest first.
    """

    max_length: int = Field(ge=2)
    batch_size: int = Field(ge=1)
    batching: Literal["bucket", "pack"] = "bucket"
    truncate: bool = False
    shuffle: bool = True
    shuffle_buffer: int = Field(default=10_000, ge=1)
    bucket_pool_batches: int = Field(default=32, ge=1)
    drop_last: bool = False
    seed: int = Field(default=0, ge=0)


class Shard(NamedTuple):
    index: int
    count: int


class _EpochPipeline:
    """One epoch of one shard: raw records -> encoded items -> shuffle buffer -> batcher -> item batches."""

    def __init__(self, paths: Sequence[Path], encode: Callable[[Example], EncodedExample], config: StreamConfig,
                 quarantine: QuarantineLog | None, epoch: int, shard: Shard,
                 snapshot: Mapping[str, Any] | None = None) -> None:
        self.paths = paths
        self.encode = encode
        self.config = config
        self.quarantine = quarantine
        self.epoch = epoch
        self.shard = shard
        shuffle_seeds = np.random.SeedSequence([config.seed, epoch, shard.index, shard.count]).spawn(2)
        rngs = [np.random.Generator(np.random.PCG64(s)) if config.shuffle else None for s in shuffle_seeds]
        self.buffer = ShuffleBuffer(config.shuffle_buffer, rngs[0])
        self.batcher: BucketBatcher | PackBatcher = (
            BucketBatcher(config.batch_size, config.bucket_pool_batches, rngs[1], config.drop_last)
            if config.batching == "bucket" else PackBatcher(config.batch_size, config.max_length, config.drop_last))
        self.records = self._shard_records()
        self.cursor = 0
        self.exhausted = False
        self.finished = False
        self.full_pass = snapshot is None or snapshot["cursor"] == 0
        if snapshot is not None:
            self._restore(snapshot)

    def _file_order(self) -> list[int]:
        if not self.config.shuffle:
            return list(range(len(self.paths)))
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.config.seed, self.epoch])))
        return [int(i) for i in rng.permutation(len(self.paths))]

    def _shard_records(self) -> Iterator[tuple[int, RawRecord]]:
        ordinal = 0
        for file_index in self._file_order():
            for record in iter_raw_records(self.paths[file_index]):
                if ordinal % self.shard.count == self.shard.index:
                    yield file_index, record
                ordinal += 1

    def _make_item(self, file_index: int, record: RawRecord) -> StreamItem | None:
        example = accept_record(record, self.quarantine)
        if example is None:
            return None
        return StreamItem((file_index, record.line), self.encode(example))

    def _next_item(self) -> StreamItem | None:
        for file_index, record in self.records:
            self.cursor += 1
            item = self._make_item(file_index, record)
            if item is not None:
                return item
        self.exhausted = True
        return None

    def next_batch(self) -> ItemRows | None:
        """The next batch as rows of items, or None at the end of the epoch."""
        while True:
            batch = self.batcher.pop()
            if batch is not None or self.finished:
                return batch
            while not self.exhausted and not self.buffer.full:
                item = self._next_item()
                if item is not None:
                    self.buffer.add(item)
            item = self.buffer.pop()
            if item is None:
                self.batcher.finish()
                self.finished = True
            else:
                self.batcher.push(item)

    def snapshot(self) -> dict[str, Any]:
        return {"shard": list(self.shard), "cursor": self.cursor, "exhausted": self.exhausted,
                "finished": self.finished, "buffer": self.buffer.snapshot(), "batcher": self.batcher.snapshot()}

    def _restore(self, state: Mapping[str, Any]) -> None:
        needed: set[Key] = {(k[0], k[1]) for k in [*ShuffleBuffer.snapshot_keys(state["buffer"]),
                                                     *type(self.batcher).snapshot_keys(state["batcher"])]}
        found: dict[Key, StreamItem] = {}
        for _ in range(state["cursor"]):
            entry = next(self.records, None)
            if entry is None:
                raise DataError(f"the data files hold fewer records than the saved cursor {state['cursor']}")
            file_index, record = entry
            key = (file_index, record.line)
            if key in needed:
                item = self._make_item(file_index, record)
                if item is None:
                    raise DataError(f"{record.location} was valid when the state was saved but is not now")
                found[key] = item
        if missing := needed - found.keys():
            raise DataError(f"records held in the saved state were not found again: {sorted(missing)[:5]}")
        self.cursor = state["cursor"]
        self.exhausted = state["exhausted"]
        self.finished = state["finished"]
        self.buffer.restore(state["buffer"], found.__getitem__)
        self.batcher.restore(state["batcher"], found.__getitem__)


class ExampleStream(IterableDataset[dict[str, Tensor]]):
    """Streams collated batches (see :func:`training.data.collate.collate`) from JSONL/Parquet files.

    One ``iter()`` runs the rest of the current epoch; at its end the epoch advances. Only one iterator
    may be active at a time. Bad records go to ``quarantine`` (whose ``check()`` runs after each epoch read
    in full); without one the first bad record raises.

    Args:
        paths: example files (JSONL or Parquet).
        tokenizer: anything satisfying :class:`~training.data.encoding.TokenizerLike`.
        config: batching settings.
        rank, world_size: the DDP position; each record goes to exactly one rank (and DataLoader worker).
        quarantine: where bad records go.
    """

    def __init__(self, paths: Sequence[str | Path], tokenizer: TokenizerLike, config: StreamConfig, *,
                 rank: int = 0, world_size: int = 1, quarantine: QuarantineLog | None = None) -> None:
        super().__init__()
        if not paths:
            raise ValueError("ExampleStream needs at least one data file")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.paths = [Path(p) for p in paths]
        check_data_files(self.paths)
        self.tokenizer = tokenizer
        self.config = config
        self.rank = rank
        self.world_size = world_size
        self.quarantine = quarantine
        self._epoch = 0
        self._batches_yielded = 0
        self._pipeline: _EpochPipeline | None = None
        self._pending: dict[str, Any] | None = None

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def batches_yielded(self) -> int:
        """Batches yielded so far in the current epoch."""
        return self._batches_yielded

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its beginning on the next ``iter()``."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self._epoch = epoch
        self._batches_yielded = 0
        self._pipeline = None
        self._pending = None

    def shard(self) -> Shard:
        """This process's shard: rank-major over DataLoader workers."""
        worker = get_worker_info()
        workers, worker_id = (1, 0) if worker is None else (worker.num_workers, worker.id)
        return Shard(self.rank * workers + worker_id, self.world_size * workers)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        shard = self.shard()
        if self._pipeline is not None and self._pipeline.shard != shard:
            self._pending = self._pipeline.snapshot()
            self._pipeline = None
        if self._pipeline is None:
            if self._pending is not None and Shard(*self._pending["shard"]) != shard:
                raise ValueError(f"the saved state belongs to shard {self._pending['shard']}, not {list(shard)}; "
                                 "resume with the same rank, world size and number of DataLoader workers")
            self._pipeline = _EpochPipeline(self.paths, self.encode, self.config, self.quarantine,
                                            self._epoch, shard, snapshot=self._pending)
            self._pending = None
        return self._iterate(self._pipeline)

    def _iterate(self, pipeline: _EpochPipeline) -> Iterator[dict[str, Tensor]]:
        while (rows := pipeline.next_batch()) is not None:
            self._batches_yielded += 1
            yield self.collate_rows(rows)
        if pipeline.full_pass and self.quarantine is not None:
            self.quarantine.check()
        if self._pipeline is pipeline:
            self.set_epoch(self._epoch + 1)

    def encode(self, example: Example) -> EncodedExample:
        """Encode one accepted record (:func:`~training.data.encoding.encode_example` with this stream's
        ``max_length`` and ``truncate``). Extension point: a subclass may return a subclass of
        :class:`~training.data.encoding.EncodedExample`; it is called again for the held records on resume."""
        return encode_example(example, self.tokenizer, self.config.max_length, self.config.truncate)

    def collate_rows(self, rows: ItemRows) -> dict[str, Tensor]:
        """Turn one batch (rows of items, one item a row when bucketing) into tensors: each row is packed
        (:meth:`~training.data.collate.PackedRow.pack`) and the rows collated
        (:func:`~training.data.collate.collate`). Extension point for subclasses."""
        return collate([PackedRow.pack([item.example for item in row]) for row in rows], self.tokenizer.pad_id)

    def _fingerprint(self) -> dict[str, Any]:
        return {"config": self.config.model_dump(), "files": [p.name for p in self.paths],
                "sizes": [p.stat().st_size for p in self.paths], "rank": self.rank,
                "world_size": self.world_size,
                "tokenizer": [self.tokenizer.bos_id, self.tokenizer.eos_id, self.tokenizer.pad_id,
                              self.tokenizer.vocab_size]}

    def state_dict(self) -> dict[str, Any]:
        """The position after the last yielded batch (JSON-serializable)."""
        pipeline = self._pipeline.snapshot() if self._pipeline is not None else copy.deepcopy(self._pending)
        return {"format": STATE_FORMAT, "fingerprint": self._fingerprint(), "epoch": self._epoch,
                "batches_yielded": self._batches_yielded, "pipeline": pipeline}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict`'s output; the next ``iter()`` continues exactly there.

        Raises:
            StreamStateError: (a ValueError) when the state was saved with another format, config, file set,
                rank or tokenizer.
        """
        if state.get("format") != STATE_FORMAT:
            raise StreamStateError(f"unsupported stream state format {state.get('format')!r}; expected "
                                   f"{STATE_FORMAT}")
        mine = self._fingerprint()
        if differing := sorted(k for k in mine if mine[k] != state["fingerprint"].get(k)):
            raise StreamStateError(
                f"the saved stream state does not match this stream (differs in {differing}): the data files, "
                "batching settings, world size or tokenizer changed since the checkpoint was written; restore "
                "them, or start a new run with a new out_dir or resume=never")
        self.set_epoch(state["epoch"])
        self._batches_yielded = state["batches_yielded"]
        self._pending = copy.deepcopy(state["pipeline"])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self._pipeline is not None:
            state["_pending"] = self._pipeline.snapshot()
            state["_pipeline"] = None
        return state
