"""Deterministic, checkpointable stages of the example stream: shuffle buffer, bucketing and packing.

Every stage holds :class:`StreamItem` values and can describe its contents by item keys only
(``snapshot``), to be rebuilt later from those keys (``restore``) once the items have been re-read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from training.data.encoding import EncodedExample

Key = tuple[int, int]
"""(index of the file in the stream's path list, 1-based line or row in that file)."""
Lookup = Callable[[Key], "StreamItem"]
ItemRows = list[list["StreamItem"]]
"""A batch as rows of items: one item a row when bucketing, one or more when packing."""


@dataclass(frozen=True, slots=True)
class StreamItem:
    key: Key
    example: EncodedExample

    @property
    def length(self) -> int:
        return len(self.example.input_ids)


def keys_of(items: list[StreamItem]) -> list[list[int]]:
    return [list(item.key) for item in items]


def items_of(keys: list[list[int]], lookup: Lookup) -> list[StreamItem]:
    return [lookup((key[0], key[1])) for key in keys]


class ShuffleBuffer:
    """A fixed-size buffer that releases a uniformly random held item; FIFO when ``rng`` is None."""

    def __init__(self, size: int, rng: np.random.Generator | None) -> None:
        if size < 1:
            raise ValueError(f"buffer size must be >= 1, got {size}")
        self.size = size if rng is not None else 1
        self.rng = rng
        self.items: list[StreamItem] = []

    @property
    def full(self) -> bool:
        return len(self.items) >= self.size

    def add(self, item: StreamItem) -> None:
        self.items.append(item)

    def pop(self) -> StreamItem | None:
        if not self.items:
            return None
        if self.rng is None:
            return self.items.pop(0)
        index = int(self.rng.integers(len(self.items)))
        item = self.items[index]
        self.items[index] = self.items[-1]
        self.items.pop()
        return item

    def snapshot(self) -> dict[str, Any]:
        return {"items": keys_of(self.items), "rng": None if self.rng is None else self.rng.bit_generator.state}

    @staticmethod
    def snapshot_keys(state: dict[str, Any]) -> list[list[int]]:
        return list(state["items"])

    def restore(self, state: dict[str, Any], lookup: Lookup) -> None:
        self.items = items_of(state["items"], lookup)
        if self.rng is not None:
            self.rng.bit_generator.state = state["rng"]


class BucketBatcher:
    """Length bucketing: pool ``batch_size * pool_batches`` items, sort by length, cut batches.

    A pool's batches come out in a random order (sorted order when ``rng`` is None); the last, short batch
    of the stream is dropped when ``drop_last``.
    """

    def __init__(self, batch_size: int, pool_batches: int, rng: np.random.Generator | None,
                 drop_last: bool) -> None:
        self.batch_size = batch_size
        self.pool_size = batch_size * pool_batches
        self.rng = rng
        self.drop_last = drop_last
        self.pool: list[StreamItem] = []
        self.ready: list[list[StreamItem]] = []

    def push(self, item: StreamItem) -> None:
        self.pool.append(item)
        if len(self.pool) >= self.pool_size:
            self._cut()

    def finish(self) -> None:
        if self.pool:
            self._cut()

    def _cut(self) -> None:
        ordered = sorted(self.pool, key=lambda item: (item.length, item.key))
        self.pool = []
        batches = [ordered[i:i + self.batch_size] for i in range(0, len(ordered), self.batch_size)]
        if self.drop_last and len(batches[-1]) < self.batch_size:
            batches.pop()
        order = range(len(batches)) if self.rng is None else self.rng.permutation(len(batches))
        self.ready.extend(batches[int(i)] for i in order)

    def pop(self) -> ItemRows | None:
        if not self.ready:
            return None
        return [[item] for item in self.ready.pop(0)]

    def snapshot(self) -> dict[str, Any]:
        return {"pool": keys_of(self.pool), "ready": [keys_of(batch) for batch in self.ready],
                "rng": None if self.rng is None else self.rng.bit_generator.state}

    @staticmethod
    def snapshot_keys(state: dict[str, Any]) -> list[list[int]]:
        return [*state["pool"], *(key for batch in state["ready"] for key in batch)]

    def restore(self, state: dict[str, Any], lookup: Lookup) -> None:
        self.pool = items_of(state["pool"], lookup)
        self.ready = [items_of(batch, lookup) for batch in state["ready"]]
        if self.rng is not None:
            self.rng.bit_generator.state = state["rng"]


class PackBatcher:
    """Sequence packing: fill rows of at most ``max_length`` tokens in arrival order, ``batch_size`` rows a batch.

    An item that does not fit in the open row closes it and opens the next one. The last, short batch of
    the stream is dropped when ``drop_last``.
    """

    def __init__(self, batch_size: int, max_length: int, drop_last: bool) -> None:
        self.batch_size = batch_size
        self.max_length = max_length
        self.drop_last = drop_last
        self.row: list[StreamItem] = []
        self.row_length = 0
        self.rows: list[list[StreamItem]] = []
        self.ready: list[ItemRows] = []

    def push(self, item: StreamItem) -> None:
        if item.length > self.max_length:
            raise ValueError(f"item {item.key} has {item.length} tokens, over max_length={self.max_length}")
        if self.row and self.row_length + item.length > self.max_length:
            self._close_row()
        self.row.append(item)
        self.row_length += item.length

    def _close_row(self) -> None:
        self.rows.append(self.row)
        self.row = []
        self.row_length = 0
        if len(self.rows) == self.batch_size:
            self.ready.append(self.rows)
            self.rows = []

    def finish(self) -> None:
        if self.row:
            self._close_row()
        if self.rows and not self.drop_last:
            self.ready.append(self.rows)
        self.rows = []

    def pop(self) -> ItemRows | None:
        return self.ready.pop(0) if self.ready else None

    def snapshot(self) -> dict[str, Any]:
        return {"row": keys_of(self.row), "rows": [keys_of(row) for row in self.rows],
                "ready": [[keys_of(row) for row in batch] for batch in self.ready]}

    @staticmethod
    def snapshot_keys(state: dict[str, Any]) -> list[list[int]]:
        rows = [state["row"], *state["rows"], *(row for batch in state["ready"] for row in batch)]
        return [key for row in rows for key in row]

    def restore(self, state: dict[str, Any], lookup: Lookup) -> None:
        self.row = items_of(state["row"], lookup)
        self.row_length = sum(item.length for item in self.row)
        self.rows = [items_of(row, lookup) for row in state["rows"]]
        self.ready = [[items_of(row, lookup) for row in batch] for batch in state["ready"]]

