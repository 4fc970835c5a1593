"""Run a live teacher over a dataset once and write a top-k cache (:mod:`training.teachers.topk_storage`).

Examples are read and encoded exactly as the trainer does (:func:`training.data.encode_example` with the
teacher's tokenizer, ``max_length`` and ``truncate``), so each cache key is the sha256 of the very ids a
training batch holds. For each distinct sequence the teacher's top-k at every stored position is kept
(``positions='all'``: every position; ``'completion'``: from the last prompt token on), with the exact tail
mass, at temperature ``T`` (``softmax(logits / T)``; for a sparse teacher the K + 1 buckets are re-tempered,
recorded as ``temperature_exact: false``).

Resuming: the manifest is rewritten after every finished shard. A rerun with the same settings verifies the
finished shards (sha256), deletes anything else (the partial shard), skips the sequences already stored
and goes on. A finished cache is left as it is; different settings are refused.

Compression error, measured per stored position and averaged in the manifest (``kl``):
``kl_quantization`` is the KL from the exact K + 1 buckets (top-k + tail) to the decoded ones; for a dense
teacher, ``kl_full`` is ``KL(p || p_hat)`` from the full distribution to the cached one with its tail mass
spread uniformly over the other ``V - K`` ids, and ``kl_truncation`` the same without quantization.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from training.checksums import sha256_file
from training.data import IGNORE_INDEX, EncodedExample, QuarantineLog, SequenceTooLongError, encode_example
from training.data.reader import count_records, read_examples
from training.teachers.base import Teacher
from training.teachers.topk_storage import (
    MANIFEST_FILE,
    CacheFormatError,
    CacheManifest,
    ShardInfo,
    ShardReader,
    ShardWriter,
    TopKEncoding,
    read_manifest,
    sequence_key,
    shard_name,
    verify_shard,
    write_manifest,
)


class CacheBuildError(RuntimeError):
    """The cache cannot be built or resumed as asked."""


@dataclass(frozen=True)
class CacheSettings:
    """What goes into a cache (all but ``shard_size`` / ``batch_size`` / ``max_bad_fraction`` are locked for a
    resume). ``max_bad_fraction`` is the share of malformed records tolerated (quarantined), as the trainer's
    ``data.max_bad_fraction``; over it the build stops with a :class:`~training.data.DataQualityError`."""

    k: int
    temperature: float = 1.0
    max_length: int = 128
    truncate: bool = False
    positions: Literal["all", "completion"] = "all"
    ids: str = "auto"
    logprobs: str = "q8"
    shard_size: int = 4096
    batch_size: int = 8
    max_bad_fraction: float = 0.01

    def __post_init__(self) -> None:
        if self.k < 1 or self.max_length < 2 or self.shard_size < 1 or self.batch_size < 1:
            raise ValueError("need k >= 1, max_length >= 2, shard_size >= 1, batch_size >= 1")
        if not 0.0 <= self.max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction must be in [0, 1], got {self.max_bad_fraction}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


# ---- distributions -> top-k rows ---------------------------------------------------------------------------
def topk_from_logits(logits: Tensor, k: int, temperature: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(N, V) logits -> top-k ids (N, K) int64, log-probs (N, K) f64, tail mass (N,) f64, and the full
    log-probs (N, V) f64."""
    logp = torch.log_softmax(logits.double() / temperature, dim=-1)
    values, ids = torch.topk(logp, k, dim=-1)
    rest = logp.scatter(-1, ids, float("-inf"))
    tail = torch.logsumexp(rest, dim=-1).exp()
    return ids, values, tail, logp


def topk_from_sparse(ids: Tensor, logprobs: Tensor, temperature: float) -> tuple[Tensor, Tensor, Tensor]:
    """(N, K) temperature-1 top-k -> (ids, log-probs f64, tail f64) at ``temperature`` (K + 1 buckets
    re-tempered), sorted by log-prob."""
    lp = logprobs.double()
    tail = (1.0 - lp.exp().sum(-1)).clamp_min(0.0)
    if temperature != 1.0:
        buckets = torch.cat([lp, tail.log().unsqueeze(-1)], dim=-1)
        tempered = torch.log_softmax(buckets / temperature, dim=-1)
        lp, tail = tempered[:, :-1], tempered[:, -1].exp()
    order = torch.argsort(lp, dim=-1, descending=True)
    return ids.gather(-1, order), lp.gather(-1, order), tail


def _xlogy_kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """Row-wise ``sum p (log p - log q)`` with ``0 log 0 = 0``: (N, M) -> (N,)."""
    p = log_p.exp()
    return torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(-1)


def _log(x: Tensor) -> Tensor:
    return torch.where(x > 0, x.clamp_min(1e-300).log(), torch.full_like(x, float("-inf")))


def bucket_kl(exact_lp: Tensor, exact_tail: Tensor, cached_lp: Tensor, cached_tail: Tensor) -> Tensor:
    """KL from the exact K + 1 buckets to the cached ones: (N, K) log-probs + (N,) tails -> (N,) nats."""
    log_p = torch.cat([exact_lp, _log(exact_tail).unsqueeze(-1)], dim=-1)
    log_q = torch.cat([cached_lp, _log(cached_tail).unsqueeze(-1)], dim=-1)
    return _xlogy_kl(log_p, log_q)


def full_kl(full_logp: Tensor, ids: Tensor, topk_lp: Tensor, tail: Tensor) -> Tensor:
    """``KL(p || p_hat)``: (N, V) full log-probs vs top-k log-probs on ``ids`` and ``tail / (V - K)`` on
    every other id -> (N,) nats."""
    vocab, k = full_logp.shape[-1], ids.shape[-1]
    spread = _log(tail) - (np.log(vocab - k) if vocab > k else 0.0)
    log_q = (
        spread.unsqueeze(-1).expand_as(full_logp).clone()
        if vocab > k
        else torch.full_like(full_logp, -np.inf)
    )
    log_q.scatter_(-1, ids, topk_lp)
    return _xlogy_kl(full_logp, log_q)


# ---- data -----------------------------------------------------------------------------------------------
def first_stored_position(example: EncodedExample, positions: str) -> int:
    """0 for ``'all'``; the first labelled position (the last prompt token) for ``'completion'``."""
    if positions == "all":
        return 0
    for t, label in enumerate(example.labels):
        if label != IGNORE_INDEX:
            return t
    return len(example.input_ids) - 1


@dataclass
class _Counts:
    records: int = 0
    written: int = 0
    already_cached: int = 0
    duplicates: int = 0
    too_long: int = 0


def _examples(
    paths: list[Path],
    tokenizer: Any,
    settings: CacheSettings,
    quarantine: QuarantineLog,
    counts: _Counts,
    tick: Callable[[], None],
) -> Iterator[EncodedExample]:
    for path in paths:
        for _, example in read_examples(path, quarantine):
            tick()
            counts.records += 1
            try:
                yield encode_example(example, tokenizer, settings.max_length, settings.truncate)
            except SequenceTooLongError:
                counts.too_long += 1


# ---- the build ------------------------------------------------------------------------------------------
class _Builder:
    def __init__(
        self,
        teacher: Teacher,
        out: Path,
        settings: CacheSettings,
        encoding: TopKEncoding,
        manifest: CacheManifest,
    ) -> None:
        self.teacher = teacher
        self.out = out
        self.settings = settings
        self.encoding = encoding
        self.manifest = manifest
        self.writer = ShardWriter(out, shard_name(len(manifest.shards)), encoding)
        self.sparse_seen = False

    def run_batch(self, batch: list[tuple[EncodedExample, bytes, int]]) -> None:
        width = max(len(ex.input_ids) for ex, _, _ in batch)
        ids = torch.full((len(batch), width), int(self.teacher.tokenizer.pad_id), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (ex, _, _) in enumerate(batch):
            ids[i, : len(ex.input_ids)] = torch.tensor(ex.input_ids)
            mask[i, : len(ex.input_ids)] = 1
        targets = self.teacher.targets(ids, mask)
        self.sparse_seen |= targets.is_sparse
        for i, (ex, key, start) in enumerate(batch):
            rows = slice(start, len(ex.input_ids))
            if targets.is_sparse:
                assert targets.topk_ids is not None and targets.topk_logprobs is not None
                sparse_ids, sparse_lp = targets.topk_ids[i, rows], targets.topk_logprobs[i, rows]
                if sparse_ids.shape[-1] < self.settings.k:
                    raise CacheBuildError(
                        f"the teacher gives top-{sparse_ids.shape[-1]}, fewer than k={self.settings.k}"
                    )
                if not torch.isfinite(sparse_lp[:, 0]).all():
                    raise CacheBuildError("the sparse teacher gave no distribution for a stored position")
                top_ids, top_lp, tail = topk_from_sparse(
                    sparse_ids[:, : self.settings.k],
                    sparse_lp[:, : self.settings.k],
                    self.settings.temperature,
                )
                full = None
            else:
                assert targets.logits is not None
                top_ids, top_lp, tail, full = topk_from_logits(
                    targets.logits[i, rows], self.settings.k, self.settings.temperature
                )
            self._add(key, start, len(ex.input_ids), top_ids, top_lp, tail, full)
            self.maybe_finish_shard()

    def _add(
        self, key: bytes, start: int, length: int, ids: Tensor, lp: Tensor, tail: Tensor, full: Tensor | None
    ) -> None:
        ids_np, lp_np, tail_np = ids.numpy(), lp.numpy(), tail.numpy()
        stored = self.writer.add(key, start, length, ids_np, lp_np, tail_np)
        dec_ids, dec_lp, dec_tail = self.encoding.decode_with_tail(*stored)
        q_lp, q_tail = torch.from_numpy(dec_lp), torch.from_numpy(dec_tail)
        sums = {
            "tokens": float(length - start),
            "kl_quantization": float(bucket_kl(lp, tail, q_lp, q_tail).sum()),
        }
        if full is not None:
            sums["kl_full"] = float(full_kl(full, torch.from_numpy(dec_ids), q_lp, q_tail).sum())
            sums["kl_truncation"] = float(full_kl(full, ids, lp, tail).sum())
        self.writer.add_kl(sums)

    def maybe_finish_shard(self, force: bool = False) -> None:
        if self.writer.entries == 0 or (self.writer.entries < self.settings.shard_size and not force):
            return
        self.manifest.shards.append(self.writer.finish())
        write_manifest(self.out, self.manifest)
        self.writer = ShardWriter(self.out, shard_name(len(self.manifest.shards)), self.encoding)


def _kl_means(shards: list[ShardInfo]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for info in shards:
        for name, value in info.kl_sums.items():
            totals[name] = totals.get(name, 0.0) + value
    tokens = totals.pop("tokens", 0.0)
    return {f"{name}_mean": value / tokens for name, value in sorted(totals.items())} if tokens else {}


def _prepare(out: Path, manifest: CacheManifest) -> CacheManifest:
    """Open ``out`` for writing: keep the verified prefix of an interrupted build, delete the rest."""
    existing: CacheManifest | None = None
    if (out / MANIFEST_FILE).is_file():
        existing = read_manifest(out)
    elif out.exists() and any(out.iterdir()):
        raise CacheBuildError(f"{out} exists, is not empty and holds no top-k cache: choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    if existing is None:
        write_manifest(out, manifest)
        return manifest
    if existing.settings_fingerprint != manifest.settings_fingerprint:
        raise CacheBuildError(
            f"{out} holds a cache built with other settings (teacher, data, k, temperature, max_length, "
            f"positions or encoding differ): {existing.build} vs {manifest.build}; use another --out"
        )
    if existing.complete:
        return existing
    kept: list[ShardInfo] = []
    for info in existing.shards:
        try:
            verify_shard(out, info, full=True)
        except CacheFormatError:
            break
        kept.append(info)
    names = {info.name for info in kept}
    for child in out.iterdir():
        if child.name.startswith("shard-") and child.name not in names:
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    manifest.shards = kept
    write_manifest(out, manifest)
    return manifest


def build_topk_cache(
    teacher: Teacher,
    data: list[str | Path],
    out: str | Path,
    settings: CacheSettings,
    *,
    teacher_description: dict[str, Any],
    progress: bool = True,
) -> CacheManifest:
    """Build (or finish) the top-k cache of ``teacher`` over ``data`` in ``out``; returns its manifest."""
    from training.ops.progress import progress as tqdm

    out = Path(out)
    paths = [Path(p) for p in data]
    if missing := [str(p) for p in paths if not p.is_file()]:
        raise FileNotFoundError(f"data files not found: {missing}")
    tokenizer = teacher.tokenizer
    if getattr(tokenizer, "eos_id", None) is None:
        raise CacheBuildError(
            "the teacher tokenizer has no eos token: token-level targets end each completion with eos"
        )
    encoding = TopKEncoding.choose(teacher.vocab_size, settings.k, settings.ids, settings.logprobs)
    unlocked = ("shard_size", "batch_size", "max_bad_fraction")
    locked = {k: v for k, v in asdict(settings).items() if k not in unlocked}
    build = {
        "teacher": teacher_description,
        "data": [p.name for p in paths],
        "data_sha256": [sha256_file(p) for p in paths],
        **locked,
    }
    fingerprint = hashlib.sha256(
        json.dumps(
            {"build": build, "tokenizer": tokenizer.fingerprint(), "encoding": encoding.to_json()},
            sort_keys=True,
        ).encode()
    ).hexdigest()
    fresh = CacheManifest(
        vocab_size=teacher.vocab_size,
        k=settings.k,
        temperature=settings.temperature,
        temperature_exact=True,
        positions=settings.positions,
        encoding=encoding.to_json(),
        bytes_per_token=encoding.bytes_per_token,
        tokenizer_fingerprint=tokenizer.fingerprint(),
        settings_fingerprint=fingerprint,
        build=build,
    )
    manifest = _prepare(out, fresh)
    if manifest.complete:
        return manifest
    tokenizer.save(out)
    stored: dict[bytes, int] = {}
    for info in manifest.shards:
        reader = ShardReader(out, info, encoding)
        for e in range(info.entries):
            stored[reader.key(e)] = int(reader.entries[e][1])
    builder = _Builder(teacher, out, settings, encoding, manifest)
    counts = _Counts()
    seen: dict[bytes, int] = {}
    total = sum(count_records(p) for p in paths)
    # the budget is enforced as soon as the bad records alone exceed it, before the teacher sees the rest
    quarantine = QuarantineLog(out / "quarantine.jsonl", max_bad_fraction=settings.max_bad_fraction,
                               expected_records=total)
    with tqdm(total=total, desc="top-k cache", unit="ex", disable=not progress, dynamic_ncols=True) as bar:
        pending: list[tuple[EncodedExample, bytes, int]] = []
        for example in _examples(paths, tokenizer, settings, quarantine, counts, lambda: bar.update(1)):
            key = sequence_key(example.input_ids)
            start = first_stored_position(example, settings.positions)
            previous = stored.get(key, seen.get(key))
            if previous is not None:
                if previous != start:
                    raise CacheBuildError(
                        "two examples have the same tokens but different prompt/completion splits (first "
                        f"stored "
                        f"position {previous} vs {start}); build with positions='all'"
                    )
                if key in stored:
                    counts.already_cached += 1
                    stored.pop(key)
                    seen[key] = start
                else:
                    counts.duplicates += 1
                continue
            seen[key] = start
            pending.append((example, key, start))
            if len(pending) == settings.batch_size:
                _flush(builder, pending, counts)
        if pending:
            _flush(builder, pending, counts)
    quarantine.check()
    builder.maybe_finish_shard(force=True)
    if stored:
        raise CacheBuildError(
            f"{len(stored)} sequences stored by the interrupted build are not in the data any "
            "more: the data changed; use another --out"
        )
    manifest.complete = True
    manifest.temperature_exact = not (builder.sparse_seen and settings.temperature != 1.0)
    manifest.totals = {
        "entries": sum(s.entries for s in manifest.shards),
        "tokens": sum(s.tokens for s in manifest.shards),
        "records": counts.records,
        "bad_records": quarantine.n_bad,
        "too_long": counts.too_long,
        "duplicates": counts.duplicates,
        "resumed_entries": counts.already_cached,
    }
    manifest.kl = _kl_means(manifest.shards)
    write_manifest(out, manifest)
    return manifest


def _flush(builder: _Builder, pending: list[tuple[EncodedExample, bytes, int]], counts: _Counts) -> None:
    """Run the teacher on the pending sequences and store them."""
    builder.run_batch(pending)
    counts.written += len(pending)
    pending.clear()
