"""Compact on-disk format of a top-k teacher cache: per position, K teacher ids, K log-probs, tail mass.

A cache directory (written by ``python -m training.teacher_cache``) holds::

    manifest.json                       CacheManifest: settings, encoding, shard list with sha256 hashes
    tokenizer.json, tokenizer_config.json   the teacher's tokenizer (its fingerprint is in the manifest)
    shard-00000/keys.npy      (E, 32) uint8   sha256 of each sequence's int32 token ids (see sequence_key)
                entries.npy   (E, 3)  int64   [row offset, first stored position, sequence length L]
                ids.npy       (N, W)  uint8   ids bit-packed to ceil(log2 V) bits, or (N, K) uint16
                logprobs.npy  (N, K)  uint8 codes ("q8") or float16 log-probs ("fp16")
                tail.npy      (N,)    float16 log of the tail mass ``1 - sum_k p_k`` (-inf: no tail)

Entry ``e`` stores positions ``start .. L - 1`` of its sequence in rows ``offset .. offset + L - start - 1``.
Row ``j`` is the teacher's next-token distribution at position ``start + j`` (the prediction of token
``start + j + 1``). Every array is a plain ``.npy`` file opened with ``numpy.load(mmap_mode="r")``.

Log-prob encodings:

* ``fp16``: the log-probs as float16 (2 bytes each).
* ``q8`` (1 byte each): a companded 8-bit code of the log-prob relative to the row's largest one,
  ``c_k = clip(round(255 * exp((l_k - l_max) / 4)), 1, 255)``: the fourth root of the probability ratio,
  quantized uniformly. Steps are fine for the large probabilities that carry the KL, and the range reaches
  down to ratios of ``255**-4 = 2.4e-10``. (A square root floors ratios at ``1.5e-5``, which on a peaked
  teacher inflates the many tiny entries and costs ~1e-3 nats at ``k = V``; a uniform 8-bit grid in the log
  domain is 5-10x worse than the fourth root across flat and peaked distributions.) Code 0 is reserved for
  ``-inf`` (zero probability); a finite log-prob never decodes to zero, so the KL to the full distribution
  stays finite.

The tail mass is stored as the float16 of its logarithm: about 3 significant digits at any magnitude.

Both decode to ``p_k`` rescaled so that ``sum_k p_k = 1 - tail``: the stored tail mass (computed exactly
from the teacher's distribution before compression) is what the sparse KD loss sees as its tail bucket.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from training.checksums import sha256_file

CACHE_FORMAT = "distillery-topk-cache"
CACHE_FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
SHARD_FILES = ("keys.npy", "entries.npy", "ids.npy", "logprobs.npy", "tail.npy")
KEY_BYTES = 32
Q8_LEVELS = 255
Q8_POWER = 4  # q8 codes quantize (p_k / p_max) ** (1 / Q8_POWER) uniformly

IdEncoding = Literal["packed", "uint16"]
LogprobEncoding = Literal["q8", "fp16"]


class CacheFormatError(RuntimeError):
    """A cache directory, manifest or shard is missing, malformed, or does not match its hashes."""


def sequence_key(token_ids: Sequence[int] | np.ndarray) -> bytes:
    """The cache key of one sequence: sha256 of its ids (padding removed) as little-endian int32 bytes."""
    arr = np.asarray(token_ids, dtype=np.int64)
    if arr.ndim != 1:
        raise ValueError(f"sequence_key needs a 1-d id sequence, got shape {arr.shape}")
    if arr.size and (arr.min() < -(2**31) or arr.max() >= 2**31):
        raise ValueError("token ids do not fit in int32")
    return hashlib.sha256(arr.astype("<i4").tobytes()).digest()


def id_bits(vocab_size: int) -> int:
    """``ceil(log2 V)`` (at least 1): bits needed to store an id in ``[0, V)``."""
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
    return max(1, (vocab_size - 1).bit_length())


def pack_ids(ids: np.ndarray, bits: int) -> np.ndarray:
    """(N, K) non-negative ids ``< 2**bits`` -> (N, ceil(K * bits / 8)) uint8, little-endian bit order."""
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"pack_ids expects (N, K) ids, got shape {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= 2**bits):
        raise ValueError(f"ids must lie in [0, 2**{bits})")
    shifts = np.arange(bits, dtype=np.uint64)
    bit_array = ((ids.astype(np.uint64)[..., None] >> shifts) & 1).astype(np.uint8)  # (N, K, bits)
    return np.packbits(bit_array.reshape(ids.shape[0], -1), axis=1, bitorder="little")


def unpack_ids(packed: np.ndarray, k: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_ids`: (N, W) uint8 -> (N, K) int64."""
    packed = np.asarray(packed, dtype=np.uint8)
    flat = np.unpackbits(packed, axis=1, count=k * bits, bitorder="little").reshape(packed.shape[0], k, bits)
    weights = (np.uint64(1) << np.arange(bits, dtype=np.uint64)).astype(np.int64)
    return flat.astype(np.int64) @ weights


def quantize_q8(logprobs: np.ndarray) -> np.ndarray:
    """(N, K) log-probs -> (N, K) uint8 codes ``clip(round(255 * exp((l - max_row l) / 4)), 1, 255)``;
    code 0 only for ``-inf``."""
    lp = np.asarray(logprobs, dtype=np.float64)
    top = lp.max(axis=1, keepdims=True)
    finite_top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        ratio = np.exp((lp - finite_top) / Q8_POWER)
    finite = np.isfinite(top) & np.isfinite(lp)
    codes = np.clip(np.rint(np.where(finite, ratio, 0.0) * Q8_LEVELS), 1, Q8_LEVELS)
    return np.where(finite, codes, 0).astype(np.uint8)


def renormalize(weights: np.ndarray, tail: np.ndarray) -> np.ndarray:
    """(N, K) non-negative weights, (N,) tail mass -> (N, K) float64 log-probs summing to ``1 - tail``.

    Zero weights give ``-inf``; a row of zeros stays all ``-inf``.
    """
    w = np.asarray(weights, dtype=np.float64)
    total = w.sum(axis=1, keepdims=True)
    mass = np.clip(1.0 - np.asarray(tail, dtype=np.float64), np.finfo(np.float64).tiny, 1.0)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log(w) - np.log(np.where(total > 0, total, 1.0)) + np.log(mass)
    return np.where(w > 0, out, -np.inf)


@dataclass(frozen=True)
class TopKEncoding:
    """How one stored position is laid out: ``bytes_per_token = id row bytes + K (or 2K) + 2`` (tail fp16)."""

    vocab_size: int
    k: int
    ids: IdEncoding = "packed"
    logprobs: LogprobEncoding = "q8"

    def __post_init__(self) -> None:
        if not 1 <= self.k <= self.vocab_size:
            raise ValueError(f"k must be in [1, vocab_size={self.vocab_size}], got {self.k}")
        if self.ids == "uint16" and self.vocab_size > 2**16:
            raise ValueError(f"uint16 ids need vocab_size <= 65536, got {self.vocab_size}; use ids='packed'")
        if self.ids not in ("packed", "uint16") or self.logprobs not in ("q8", "fp16"):
            raise ValueError(f"unknown encoding ids={self.ids!r} logprobs={self.logprobs!r}")

    @classmethod
    def choose(cls, vocab_size: int, k: int, ids: str = "auto", logprobs: str = "q8") -> TopKEncoding:
        """``ids='auto'``: uint16 when ids need exactly 16 bits (same size, faster), else bit-packed."""
        if ids == "auto":
            ids = "uint16" if id_bits(vocab_size) == 16 else "packed"
        return cls(vocab_size, k, ids, logprobs)  # type: ignore[arg-type]

    @property
    def bits(self) -> int:
        return id_bits(self.vocab_size) if self.ids == "packed" else 16

    @property
    def id_row_bytes(self) -> int:
        return math.ceil(self.k * self.bits / 8) if self.ids == "packed" else 2 * self.k

    @property
    def bytes_per_token(self) -> int:
        """Bytes of one stored position: ids + log-probs + the fp16 tail mass."""
        return self.id_row_bytes + self.k * (1 if self.logprobs == "q8" else 2) + 2

    def encode(self, ids: np.ndarray, logprobs: np.ndarray, tail: np.ndarray) -> tuple[np.ndarray, ...]:
        """(N, K) ids, (N, K) log-probs, (N,) tail mass -> the (ids, logprobs, tail) arrays stored on disk."""
        ids = np.asarray(ids)
        if ids.shape != np.shape(logprobs) or ids.ndim != 2 or ids.shape[1] != self.k:
            raise ValueError(
                f"expected (N, {self.k}) ids and log-probs, got {ids.shape} and {np.shape(logprobs)}"
            )
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"ids must lie in [0, {self.vocab_size})")
        id_arr = pack_ids(ids, self.bits) if self.ids == "packed" else ids.astype(np.uint16)
        lp = np.asarray(logprobs, dtype=np.float64)
        lp_arr = quantize_q8(lp) if self.logprobs == "q8" else lp.astype(np.float16)
        with np.errstate(divide="ignore"):
            log_tail = np.log(np.clip(np.asarray(tail, dtype=np.float64), 0.0, 1.0))
        return id_arr, lp_arr, log_tail.astype(np.float16)

    def decode(
        self, id_arr: np.ndarray, lp_arr: np.ndarray, tail_arr: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Stored arrays -> (N, K) int64 ids, (N, K) float64 log-probs summing (as probs) to ``1 - tail``."""
        ids, lps, _ = self.decode_with_tail(id_arr, lp_arr, tail_arr)
        return ids, lps

    def decode_with_tail(
        self, id_arr: np.ndarray, lp_arr: np.ndarray, tail_arr: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Like :meth:`decode`, also returning the (N,) float64 tail mass."""
        ids = unpack_ids(id_arr, self.k, self.bits) if self.ids == "packed" else np.asarray(id_arr, np.int64)
        codes = np.asarray(lp_arr)
        if self.logprobs == "q8":
            weights = (codes.astype(np.float64) / Q8_LEVELS) ** Q8_POWER
        else:
            lp = codes.astype(np.float64)
            top = lp.max(axis=1, keepdims=True)
            with np.errstate(invalid="ignore"):
                weights = np.where(np.isfinite(lp), np.exp(lp - np.where(np.isfinite(top), top, 0.0)), 0.0)
        tail = np.exp(np.asarray(tail_arr, dtype=np.float64))
        return ids, renormalize(weights, tail), tail

    def to_json(self) -> dict[str, Any]:
        return {
            "ids": self.ids,
            "logprobs": self.logprobs,
            "id_bits": self.bits,
            "k": self.k,
            "vocab_size": self.vocab_size,
        }


class ShardInfo(BaseModel):
    """One finished shard as listed in the manifest."""

    model_config = ConfigDict(extra="forbid")

    name: str
    entries: int = Field(ge=0)
    tokens: int = Field(ge=0)
    files: dict[str, dict[str, Any]]
    kl_sums: dict[str, float] = {}


class CacheManifest(BaseModel):
    """``manifest.json`` of a top-k cache; ``complete`` is false while a build runs or after a crash."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["distillery-topk-cache"] = CACHE_FORMAT
    format_version: int = CACHE_FORMAT_VERSION
    complete: bool = False
    vocab_size: int = Field(gt=0)
    k: int = Field(gt=0)
    temperature: float = Field(gt=0)
    temperature_exact: bool = True
    positions: Literal["all", "completion"] = "all"
    encoding: dict[str, Any]
    bytes_per_token: int = Field(gt=0)
    tokenizer_fingerprint: str
    settings_fingerprint: str
    build: dict[str, Any] = {}
    shards: list[ShardInfo] = []
    totals: dict[str, int] = {}
    kl: dict[str, float] = {}

    def topk_encoding(self) -> TopKEncoding:
        return TopKEncoding(self.vocab_size, self.k, self.encoding["ids"], self.encoding["logprobs"])


def write_manifest(directory: Path, manifest: CacheManifest) -> None:
    """Atomically replace ``directory/manifest.json`` (temporary file, fsync, rename)."""
    path = directory / MANIFEST_FILE
    tmp = directory / f".{MANIFEST_FILE}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_manifest(directory: Path) -> CacheManifest:
    """Read and validate ``manifest.json``; :class:`CacheFormatError` names what is wrong."""
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        raise CacheFormatError(
            f"{path} not found: {directory} is not a top-k cache (build one with "
            "python -m training.teacher_cache)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CacheFormatError(f"{path} is unreadable: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
        raise CacheFormatError(f"{path} is not a {CACHE_FORMAT} manifest")
    if data.get("format_version") != CACHE_FORMAT_VERSION:
        raise CacheFormatError(
            f"{path} has format_version {data.get('format_version')}, this code reads {CACHE_FORMAT_VERSION}"
        )
    try:
        return CacheManifest.model_validate(data)
    except ValidationError as exc:
        raise CacheFormatError(f"{path} is malformed: {exc}") from exc


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


class ShardWriter:
    """Accumulates encoded entries of one shard in memory and writes them atomically with :meth:`finish`."""

    def __init__(self, directory: Path, name: str, encoding: TopKEncoding) -> None:
        self.directory = Path(directory)
        self.name = name
        self.encoding = encoding
        self._keys: list[bytes] = []
        self._entries: list[tuple[int, int, int]] = []
        self._ids: list[np.ndarray] = []
        self._lps: list[np.ndarray] = []
        self._tails: list[np.ndarray] = []
        self.tokens = 0
        self.kl_sums: dict[str, float] = {}

    @property
    def entries(self) -> int:
        return len(self._keys)

    def add(
        self, key: bytes, start: int, length: int, ids: np.ndarray, logprobs: np.ndarray, tail: np.ndarray
    ) -> tuple[np.ndarray, ...]:
        """One sequence of length ``L``: (L - start, K) ids / log-probs and (L - start,) tail mass.

        Returns the encoded (ids, log-probs, tail) arrays as stored."""
        if len(key) != KEY_BYTES:
            raise ValueError(f"keys are {KEY_BYTES}-byte sha256 digests, got {len(key)} bytes")
        rows = length - start
        if not 0 <= start < length or np.shape(ids)[0] != rows or np.shape(tail) != (rows,):
            raise ValueError(
                f"entry with start={start}, length={length} needs {rows} rows, got {np.shape(ids)}"
            )
        id_arr, lp_arr, tail_arr = self.encoding.encode(ids, logprobs, tail)
        self._keys.append(key)
        self._entries.append((self.tokens, start, length))
        self._ids.append(id_arr)
        self._lps.append(lp_arr)
        self._tails.append(tail_arr)
        self.tokens += rows
        return id_arr, lp_arr, tail_arr

    def add_kl(self, sums: dict[str, float]) -> None:
        """Accumulate per-token KL sums measured while encoding (``{name: sum over tokens}``)."""
        for name, value in sums.items():
            self.kl_sums[name] = self.kl_sums.get(name, 0.0) + float(value)

    def finish(self) -> ShardInfo:
        """Write the arrays to ``<name>.tmp``, fsync, hash, rename to ``<name>``; returns the entry."""
        enc = self.encoding
        width = enc.id_row_bytes if enc.ids == "packed" else enc.k
        arrays = {
            "keys.npy": np.frombuffer(b"".join(self._keys), dtype=np.uint8).reshape(-1, KEY_BYTES),
            "entries.npy": np.asarray(self._entries, dtype=np.int64).reshape(-1, 3),
            "ids.npy": (
                np.concatenate(self._ids)
                if self._ids
                else np.zeros((0, width), np.uint8 if enc.ids == "packed" else np.uint16)
            ),
            "logprobs.npy": (
                np.concatenate(self._lps)
                if self._lps
                else np.zeros((0, enc.k), np.uint8 if enc.logprobs == "q8" else np.float16)
            ),
            "tail.npy": np.concatenate(self._tails) if self._tails else np.zeros((0,), np.float16),
        }
        final = self.directory / self.name
        tmp = self.directory / f"{self.name}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        files: dict[str, dict[str, Any]] = {}
        for fname, arr in arrays.items():
            path = tmp / fname
            with open(path, "wb") as fh:
                np.save(fh, np.ascontiguousarray(arr), allow_pickle=False)
                fh.flush()
                os.fsync(fh.fileno())
            files[fname] = {"sha256": sha256_file(path), "size": path.stat().st_size}
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        return ShardInfo(
            name=self.name, entries=self.entries, tokens=self.tokens, files=files, kl_sums=dict(self.kl_sums)
        )


def verify_shard(directory: Path, info: ShardInfo, full: bool = True) -> None:
    """Raise :class:`CacheFormatError` unless every file of the shard has its listed size (and sha256)."""
    shard = Path(directory) / info.name
    for fname in SHARD_FILES:
        entry = info.files.get(fname)
        path = shard / fname
        if entry is None:
            raise CacheFormatError(f"the manifest lists no {fname} for {info.name}")
        if not path.is_file():
            raise CacheFormatError(f"{path} is missing")
        if path.stat().st_size != entry.get("size"):
            raise CacheFormatError(
                f"{path} has {path.stat().st_size} bytes, the manifest says {entry.get('size')}"
            )
        if full and sha256_file(path) != entry.get("sha256"):
            raise CacheFormatError(f"{path} does not match its sha256 in the manifest (altered or corrupt)")


class ShardReader:
    """Memory-mapped arrays of one finished shard, decoded entry by entry."""

    def __init__(self, directory: Path, info: ShardInfo, encoding: TopKEncoding) -> None:
        shard = Path(directory) / info.name
        self.info = info
        self.encoding = encoding
        self.keys = np.load(shard / "keys.npy", mmap_mode="r", allow_pickle=False)
        self.entries = np.load(shard / "entries.npy", mmap_mode="r", allow_pickle=False)
        self.ids = np.load(shard / "ids.npy", mmap_mode="r", allow_pickle=False)
        self.logprobs = np.load(shard / "logprobs.npy", mmap_mode="r", allow_pickle=False)
        self.tail = np.load(shard / "tail.npy", mmap_mode="r", allow_pickle=False)
        if self.keys.shape != (info.entries, KEY_BYTES) or self.entries.shape != (info.entries, 3):
            raise CacheFormatError(f"{shard}: index arrays do not hold {info.entries} entries")
        if self.tail.shape != (info.tokens,) or self.logprobs.shape != (info.tokens, encoding.k):
            raise CacheFormatError(f"{shard}: token arrays do not hold {info.tokens} rows of K={encoding.k}")

    def key(self, index: int) -> bytes:
        return bytes(self.keys[index])

    def entry(self, index: int) -> tuple[int, int, np.ndarray, np.ndarray]:
        """Entry ``index`` -> (start, L, (L - start, K) int64 ids, (L - start, K) float64 log-probs)."""
        offset, start, length = (int(v) for v in self.entries[index])
        rows = slice(offset, offset + length - start)
        ids, lps = self.encoding.decode(self.ids[rows], self.logprobs[rows], self.tail[rows])
        return start, length, ids, lps
