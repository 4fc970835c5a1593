"""The compact top-k shard format: bit packing, 8-bit / fp16 log-probs, tail mass, shards, manifest, keys."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.teachers.topk_storage import (
    CacheFormatError,
    CacheManifest,
    ShardReader,
    ShardWriter,
    TopKEncoding,
    id_bits,
    pack_ids,
    quantize_q8,
    read_manifest,
    sequence_key,
    unpack_ids,
    verify_shard,
    write_manifest,
)


def _distribution(rng: np.random.Generator, n: int, vocab: int, k: int, scale: float = 3.0):
    """(N, K) top-k ids / log-probs (sorted) and the exact tail of random softmax distributions."""
    logits = rng.normal(size=(n, vocab)) * scale
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    order = np.argsort(-logp, axis=-1)[:, :k]
    top = np.take_along_axis(logp, order, -1)
    tail = 1.0 - np.exp(top).sum(-1)
    return order, top, np.clip(tail, 0, 1)


@pytest.mark.parametrize(
    ("vocab", "bits"), [(2, 1), (320, 9), (512, 9), (513, 10), (32000, 15), (65536, 16), (128256, 17)]
)
def test_id_bits_is_ceil_log2(vocab: int, bits: int) -> None:
    assert id_bits(vocab) == bits == max(1, math.ceil(math.log2(vocab)))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 20), st.integers(1, 40), st.integers(1, 24), st.integers(0, 2**31 - 1))
def test_pack_unpack_roundtrip(n: int, k: int, bits: int, seed: int) -> None:
    ids = np.random.default_rng(seed).integers(0, 2**bits, size=(n, k))
    packed = pack_ids(ids, bits)
    assert packed.dtype == np.uint8 and packed.shape == (n, math.ceil(k * bits / 8))
    assert np.array_equal(unpack_ids(packed, k, bits), ids)


def test_pack_refuses_ids_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match="2\\*\\*9"):
        pack_ids(np.array([[512]]), 9)


def test_bytes_per_token_at_k32() -> None:
    """k=32: 9-bit ids + 8-bit log-probs + fp16 tail = 36 + 32 + 2; uint16 ids = 64 + 32 + 2 (<= 100)."""
    assert TopKEncoding.choose(320, 32).bytes_per_token == 70
    assert TopKEncoding.choose(65536, 32).ids == "uint16"
    assert TopKEncoding.choose(65536, 32).bytes_per_token == 98
    assert TopKEncoding.choose(32000, 32).bytes_per_token == 60 + 32 + 2
    assert TopKEncoding(320, 32, "uint16", "fp16").bytes_per_token == 64 + 64 + 2


@pytest.mark.parametrize("ids_kind", ["packed", "uint16"])
@pytest.mark.parametrize("lp_kind", ["q8", "fp16"])
def test_encode_decode_keeps_ids_and_the_tail_mass(ids_kind: str, lp_kind: str) -> None:
    rng = np.random.default_rng(0)
    ids, lp, tail = _distribution(rng, 50, 320, 32)
    enc = TopKEncoding(320, 32, ids_kind, lp_kind)  # type: ignore[arg-type]
    stored = enc.encode(ids, lp, tail)
    dec_ids, dec_lp, dec_tail = enc.decode_with_tail(*stored)
    assert np.array_equal(dec_ids, ids)
    assert np.allclose(dec_tail, tail, rtol=2e-3)
    # decoded probabilities sum to 1 - stored tail: the sparse loss sees exactly the stored tail bucket
    assert np.allclose(np.exp(dec_lp).sum(-1), 1 - dec_tail, atol=1e-12)
    p, q = np.exp(lp), np.exp(dec_lp)
    kl = (p * (lp - dec_lp)).sum(-1) + tail * (np.log(tail) - np.log(dec_tail))
    bound = 32 / 6 / 255**2 * 3 if lp_kind == "q8" else 1e-5
    assert kl.mean() < bound
    assert np.all(np.isfinite(dec_lp)) and np.all(q > 0)


def test_q8_codes_keep_finite_entries_nonzero_and_minus_inf_at_zero() -> None:
    lp = np.array([[-0.1, -40.0, -np.inf, -2.0]])
    codes = quantize_q8(lp)
    assert codes[0, 0] == 255 and codes[0, 1] == 1 and codes[0, 2] == 0
    enc = TopKEncoding(10, 4, "packed", "q8")
    _, dec = enc.decode(*enc.encode(np.array([[0, 1, 2, 3]]), lp, np.array([0.05])))
    assert np.isneginf(dec[0, 2]) and np.isfinite(dec[0, 1])


def test_q8_beats_uniform_log_quantization() -> None:
    """The companded code's KL error is well below an 8-bit uniform grid over [-25, 0] in the log domain."""
    rng = np.random.default_rng(1)
    ids, lp, tail = _distribution(rng, 200, 320, 32, scale=4.0)
    enc = TopKEncoding(320, 32, "packed", "q8")
    _, dec = enc.decode(*enc.encode(ids, lp, tail))
    kl_q8 = (np.exp(lp) * (lp - dec)).sum(-1).mean()
    step = 25.0 / 255
    uniform = np.maximum(np.round(lp / step) * step, -25.0)
    w = np.exp(uniform)
    uniform = np.log(w / w.sum(-1, keepdims=True) * (1 - tail)[:, None])
    kl_uniform = (np.exp(lp) * (lp - uniform)).sum(-1).mean()
    assert kl_q8 < kl_uniform / 2


def test_empty_tail_roundtrips_as_zero() -> None:
    enc = TopKEncoding(4, 4, "packed", "fp16")
    lp = np.log(np.array([[0.4, 0.3, 0.2, 0.1]]))
    _, dec, tail = enc.decode_with_tail(*enc.encode(np.array([[0, 1, 2, 3]]), lp, np.array([0.0])))
    assert tail[0] == 0.0 and np.allclose(np.exp(dec).sum(), 1.0)


def test_sequence_key_is_sha256_of_int32_bytes() -> None:
    import hashlib

    ids = [1, 300, 2, 70000]
    assert sequence_key(ids) == hashlib.sha256(np.asarray(ids, dtype="<i4").tobytes()).digest()
    assert sequence_key(np.array(ids, dtype=np.int64)) == sequence_key(ids)
    assert sequence_key([1, 2]) != sequence_key([1, 2, 0])


def _manifest(enc: TopKEncoding) -> CacheManifest:
    return CacheManifest(
        vocab_size=enc.vocab_size,
        k=enc.k,
        temperature=1.0,
        encoding=enc.to_json(),
        bytes_per_token=enc.bytes_per_token,
        tokenizer_fingerprint="f",
        settings_fingerprint="s",
    )


def test_shard_write_read_verify(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    enc = TopKEncoding(320, 8)
    writer = ShardWriter(tmp_path, "shard-00000", enc)
    expected = {}
    for length, start in [(5, 0), (9, 3), (2, 1)]:
        ids, lp, tail = _distribution(rng, length - start, 320, 8)
        key = sequence_key(rng.integers(0, 320, size=length))
        writer.add(key, start, length, ids, lp, tail)
        expected[key] = (start, length, ids)
    info = writer.finish()
    assert info.entries == 3 and info.tokens == 5 + 6 + 1
    assert not (tmp_path / "shard-00000.tmp").exists()
    verify_shard(tmp_path, info)
    reader = ShardReader(tmp_path, info, enc)
    for e in range(3):
        start, length, ids, _ = reader.entry(e)
        want = expected[reader.key(e)]
        assert (start, length) == want[:2] and np.array_equal(ids, want[2])
    assert isinstance(reader.ids, np.memmap)
    # a flipped byte is caught by the sha256, a truncated file by its size
    path = tmp_path / "shard-00000" / "logprobs.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    verify_shard(tmp_path, info, full=False)
    with pytest.raises(CacheFormatError, match="sha256"):
        verify_shard(tmp_path, info)
    path.write_bytes(bytes(data[:-3]))
    with pytest.raises(CacheFormatError, match="bytes"):
        verify_shard(tmp_path, info, full=False)


def test_shard_writer_refuses_inconsistent_entries(tmp_path: Path) -> None:
    writer = ShardWriter(tmp_path, "shard-00000", TopKEncoding(10, 2))
    with pytest.raises(ValueError, match="rows"):
        writer.add(b"k" * 32, 1, 4, np.zeros((2, 2), int), np.zeros((2, 2)), np.zeros(2))


def test_manifest_roundtrip_and_refusals(tmp_path: Path) -> None:
    enc = TopKEncoding(320, 32)
    write_manifest(tmp_path, _manifest(enc))
    back = read_manifest(tmp_path)
    assert back.topk_encoding() == enc and back.bytes_per_token == 70
    data = json.loads((tmp_path / "manifest.json").read_text())
    data["format_version"] = 99
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(CacheFormatError, match="format_version"):
        read_manifest(tmp_path)
    with pytest.raises(CacheFormatError, match="not a top-k cache"):
        read_manifest(tmp_path / "missing")
