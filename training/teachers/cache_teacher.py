"""A precomputed top-k cache (:mod:`training.teachers.topk_storage`) as a teacher.

``CacheTeacher(dir).targets(input_ids, attention_mask)`` looks every row up by the sha256 of its real token
ids (:func:`~training.teachers.topk_storage.sequence_key`), so the trainer needs no example ids. Positions the cache
does not store (padding, and the prompt positions of a ``positions='completion'`` cache) get ids ``0..K-1``
with log-prob ``-inf``: :func:`training.losses.sparse_topk_kl` reads such a row as "all mass in the tail",
which is finite, and the trainer's label mask drops it. A row that is not in the cache raises
:class:`CacheMissError`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from training.teachers.base import TeacherTargets, padded_topk, real_positions
from training.teachers.teacher_tokenizer import TeacherTokenizer, load_teacher_tokenizer
from training.teachers.topk_storage import (
    CacheFormatError,
    CacheManifest,
    ShardReader,
    read_manifest,
    sequence_key,
    verify_shard,
)


class CacheMissError(LookupError):
    """A sequence of the batch is not in the top-k cache."""


class CacheIndex:
    """Key -> (shard, entry) over every shard: sorted 64-bit key prefixes, full keys checked on a hit."""

    def __init__(self, readers: list[ShardReader]) -> None:
        self.readers = readers
        prefixes, shards, entries = [], [], []
        for s, reader in enumerate(readers):
            n = reader.info.entries
            prefixes.append(np.asarray(reader.keys[:, :8]).copy().view(">u8").reshape(n))
            shards.append(np.full(n, s, dtype=np.int32))
            entries.append(np.arange(n, dtype=np.int64))
        all_prefixes = np.concatenate(prefixes) if prefixes else np.zeros(0, ">u8")
        order = np.argsort(all_prefixes, kind="stable")
        self._prefixes = all_prefixes[order].astype(np.uint64)
        self._shards = np.concatenate(shards)[order] if shards else np.zeros(0, np.int32)
        self._entries = np.concatenate(entries)[order] if entries else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return int(self._prefixes.size)

    def find(self, key: bytes) -> tuple[int, int] | None:
        prefix = np.uint64(int.from_bytes(key[:8], "big"))
        i = int(np.searchsorted(self._prefixes, prefix, side="left"))
        while i < self._prefixes.size and self._prefixes[i] == prefix:
            shard, entry = int(self._shards[i]), int(self._entries[i])
            if self.readers[shard].key(entry) == key:
                return shard, entry
            i += 1
        return None


class CacheTeacher:
    """Teacher protocol over a top-k cache: sparse targets (B, T, K) at the cache's temperature."""

    def __init__(
        self, directory: str | Path, *, temperature: float | None = 1.0, verify: bool = True
    ) -> None:
        """Open a cache.

        Args:
            directory: the cache directory (``manifest.json`` + shards).
            temperature: the temperature the caller expects the stored log-probs at (None: any). A cache
                built at ``T != 1`` holds ``softmax(logits / T)`` top-k: train it with ``loss.temperature=1``.
            verify: check every shard file's sha256 (sizes are always checked).
        """
        self.directory = Path(directory)
        self.manifest: CacheManifest = read_manifest(self.directory)
        if not self.manifest.complete:
            raise CacheFormatError(
                f"the top-k cache {self.directory} is incomplete (its build was interrupted): "
                "run python -m training.teacher_cache again with the same arguments to finish it"
            )
        if temperature is not None and abs(self.manifest.temperature - temperature) > 1e-9:
            raise CacheFormatError(
                f"the top-k cache {self.directory} was built at temperature {self.manifest.temperature}, the "
                f"config expects {temperature}; set teacher.temperature to match (and train a tempered cache "
                "with "
                "loss.temperature=1, its log-probs are already tempered)"
            )
        self.tokenizer: TeacherTokenizer = load_teacher_tokenizer(self.directory)
        if self.tokenizer.fingerprint() != self.manifest.tokenizer_fingerprint:
            raise CacheFormatError(
                f"{self.directory}: the stored tokenizer does not match the manifest's fingerprint"
            )
        self.vocab_size = self.manifest.vocab_size
        self.k = self.manifest.k
        self.temperature = self.manifest.temperature
        self.encoding = self.manifest.topk_encoding()
        for info in self.manifest.shards:
            verify_shard(self.directory, info, full=verify)
        self.index = CacheIndex(
            [ShardReader(self.directory, info, self.encoding) for info in self.manifest.shards]
        )

    def __len__(self) -> int:
        return len(self.index)

    def lookup(self, token_ids: list[int]) -> tuple[int, np.ndarray, np.ndarray] | None:
        """One sequence (L,) -> (first stored position, (L - start, K) ids, (L - start, K) log-probs),
        or None when it is not in the cache."""
        hit = self.index.find(sequence_key(token_ids))
        if hit is None:
            return None
        start, length, ids, lps = self.index.readers[hit[0]].entry(hit[1])
        if length != len(token_ids):
            raise CacheFormatError(
                f"{self.directory}: an entry's length {length} differs from its sequence's "
                f"{len(token_ids)} (corrupt index)"
            )
        return start, ids, lps

    def targets(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> TeacherTargets:
        """(B, T) ids -> sparse targets: (B, T, K) int64 ids and (B, T, K) float32 log-probs.

        Raises:
            CacheMissError: a row's real tokens are not in the cache.
        """
        batch, width = input_ids.shape
        ids, lps = padded_topk(batch, width, self.k)
        for b, positions in enumerate(real_positions(attention_mask, input_ids)):
            seq = input_ids[b, positions].tolist()
            found = self.lookup(seq)
            if found is None:
                raise CacheMissError(
                    f"batch row {b} ({len(seq)} tokens, starting {seq[:8]}) is not in the top-k cache "
                    f"{self.directory} ({len(self)} sequences from {self.manifest.build.get('data')}); build "
                    "the cache "
                    f"from the training data with the trainer's max_length/truncate (cache: max_length="
                    f"{self.manifest.build.get('max_length')}, "
                    f"truncate={self.manifest.build.get('truncate')})"
                )
            start, row_ids, row_lp = found
            keep = positions[start:]
            ids[b, keep] = torch.from_numpy(row_ids)
            lps[b, keep] = torch.from_numpy(row_lp).float()
        return TeacherTargets(topk_ids=ids, topk_logprobs=lps)

    def logits(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        raise NotImplementedError(
            f"the top-k cache {self.directory} holds sparse top-{self.k} log-probs, not logits: use targets()"
        )
