"""The ANE rewrite in PyTorch: fp16-safe RMSNorm, exact equality with the student in fp32, fp16 behaviour."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conversion.ane_model import (
    ANE_MAX_DIM,
    MASK_VALUE,
    AneConfig,
    AnePrefill,
    AneStatefulDecoder,
    Fp16SafeRMSNorm,
    PlainPrefill,
    PlainStatefulDecoder,
    decode_mask,
    prefill_mask,
    rotate_half_rows,
)
from training.model import RMSNorm, Student, rotate_half
from training.model_config import ModelConfig


def _to_tokens_last(x: torch.Tensor) -> torch.Tensor:
    """(1, C, 1, S) -> (S, C)."""
    return x[0, :, 0, :].t()


def _norms(hidden: int, eps: float) -> tuple[Fp16SafeRMSNorm, RMSNorm]:
    torch.manual_seed(1)
    weight = torch.rand(hidden) + 0.5
    ane, ref = Fp16SafeRMSNorm(hidden, eps), RMSNorm(hidden, eps)
    with torch.no_grad():
        ane.weight.copy_(weight.half().float())  # both see the weight fp16 can represent
        ref.weight.copy_(weight.half().float())
    return ane, ref


SCALES = torch.tensor([1e-4, 1e-2, 1.0, 30.0, 300.0, 1e3, 1e4])


def test_rmsnorm_fp32_equals_the_student_norm() -> None:
    ane, ref = _norms(64, 1e-5)
    x = torch.randn(1, 64, 1, len(SCALES)) * SCALES
    expected = ref(_to_tokens_last(x))
    assert torch.allclose(_to_tokens_last(ane(x)), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("eps", [1e-5, 1e-6, 1e-2])
def test_rmsnorm_fp16_matches_fp32_up_to_1e4(eps: float) -> None:
    ane, ref = _norms(64, eps)
    torch.manual_seed(2)
    x = torch.randn(1, 64, 1, len(SCALES)) * SCALES
    x16 = x.half()
    expected = ref(_to_tokens_last(x16.float()))  # fp32 reference on the same fp16 inputs
    got = _to_tokens_last(ane.half()(x16).float())
    assert torch.isfinite(got).all()
    rel = (got - expected).abs().amax(dim=1) / expected.abs().amax(dim=1)
    assert rel.max() < 3e-3, rel


def test_naive_rmsnorm_overflows_in_fp16_where_the_safe_one_does_not() -> None:
    x = torch.full((1, 64, 1, 1), 300.0, dtype=torch.float16)
    assert torch.isinf(x.pow(2)).all()
    naive = x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-5)
    assert (naive == 0).all()  # rsqrt(inf) = 0: every output collapses instead of being 1
    safe = Fp16SafeRMSNorm(64, 1e-5).half()(x)
    assert torch.allclose(safe.float(), torch.ones_like(safe.float()), atol=1e-3)


@settings(max_examples=40, deadline=None)
@given(scale=st.floats(min_value=1e-4, max_value=1e4), seed=st.integers(0, 2**16))
def test_rmsnorm_fp16_relative_error_is_bounded_at_any_scale(scale: float, seed: int) -> None:
    torch.manual_seed(seed)
    ane, ref = _norms(32, 1e-5)
    x16 = (torch.randn(1, 32, 1, 3) * scale).half()
    expected = ref(_to_tokens_last(x16.float()))
    got = _to_tokens_last(ane.half()(x16).float())
    assert ((got - expected).abs().max() / expected.abs().max()) < 3e-3


def test_rotate_half_rows_commutes_with_the_projection() -> None:
    torch.manual_seed(3)
    heads, d = 3, 8
    w = torch.randn(heads * d, 16)
    x = torch.randn(5, 16)
    rotated = (x @ w.t()).view(5, heads, d)
    assert torch.allclose(x @ rotate_half_rows(w, heads, d).t(), rotate_half(rotated).reshape(5, -1))


def test_masks_are_additive_and_causal() -> None:
    m = prefill_mask(4)
    assert m.shape == (1, 4, 1, 4)
    assert m[0, 1, 0, 0] == MASK_VALUE and m[0, 0, 0, 1] == 0 and m[0, 3, 0, 3] == 0
    d = decode_mask(5, 2, 32)
    assert d.shape == (1, 32, 1, 2)
    assert (d[0, :6, 0, 0] == 0).all() and (d[0, 6:, 0, 0] == MASK_VALUE).all()
    assert (d[0, :7, 0, 1] == 0).all() and (d[0, 7:, 0, 1] == MASK_VALUE).all()


def test_config_rejects_ane_violations() -> None:
    with pytest.raises(ValueError, match="lm_head_chunk"):
        AneConfig(lm_head_chunk=ANE_MAX_DIM + 1)
    with pytest.raises(ValueError, match="multiple of 32"):
        AneConfig(cache_len=100)
    with pytest.raises(ValueError, match="attention"):
        AneConfig(attention="flash")


def _biased_tied_student() -> Student:
    cfg = ModelConfig(vocab_size=300, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                      num_attention_heads=6, num_key_value_heads=3, max_position_embeddings=64,
                      attention_bias=True, mlp_bias=True, tie_word_embeddings=True)
    torch.manual_seed(4)
    student = Student(cfg).eval()
    with torch.no_grad():
        for name, p in student.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return student


@pytest.fixture(params=["tiny", "biased_tied"])
def student(request: pytest.FixtureRequest, tiny_student: Student) -> Student:
    return tiny_student if request.param == "tiny" else _biased_tied_student()


@torch.no_grad()
@pytest.mark.parametrize("attention", ["split", "fused"])
def test_prefill_equals_the_student_with_a_chunked_head(student: Student, attention: str) -> None:
    torch.manual_seed(5)
    ids = torch.randint(0, student.config.vocab_size, (1, 19))
    prefill = AnePrefill(student, AneConfig(lm_head_chunk=64, attention=attention)).eval()
    chunks = prefill.core.lm_head.chunks
    assert len(chunks) == -(-student.config.vocab_size // 64) >= 4
    # a tied embedding is read from the head's chunks, not stored a second time
    assert hasattr(prefill.core, "embed_columns") != student.config.tie_word_embeddings
    assert all(c.weight.shape[0] <= 64 for c in chunks)
    ref = student(ids)
    out = prefill(ids.int(), prefill_mask(19))
    assert out.shape == ref.shape
    assert (out - ref).abs().max() < 1e-4


@torch.no_grad()
@pytest.mark.parametrize("attention", ["split", "fused"])
def test_stateful_decoder_equals_the_student_chunk_then_steps(student: Student, attention: str) -> None:
    torch.manual_seed(6)
    ids = torch.randint(0, student.config.vocab_size, (1, 12))
    decoder = AneStatefulDecoder(student, AneConfig(lm_head_chunk=100, cache_len=32, cache_dtype=torch.float32,
                                                    attention=attention)).eval()
    ref = student(ids)[0]
    outs = [decoder(ids[:, :5].int(), torch.tensor([0], dtype=torch.int32), decode_mask(0, 5, 32))[0]]
    for p in range(5, 12):
        outs.append(decoder(ids[:, p:p + 1].int(), torch.tensor([p], dtype=torch.int32), decode_mask(p, 1, 32))[0])
    assert (torch.cat(outs) - ref).abs().max() < 1e-4
    assert decoder.key_cache[:, :, :, 12:].abs().max() == 0  # slots past the sequence untouched
    decoder.reset_cache()
    assert decoder.key_cache.abs().max() == 0 and decoder.value_cache.abs().max() == 0


@torch.no_grad()
def test_fp16_rewrite_stays_close_to_the_fp32_student(tiny_student: Student) -> None:
    torch.manual_seed(7)
    ids = torch.randint(0, tiny_student.config.vocab_size, (1, 16))
    ref = tiny_student(ids)
    prefill = AnePrefill(tiny_student, AneConfig(lm_head_chunk=100)).eval().half()
    out = prefill(ids.int(), prefill_mask(16, torch.float16)).float()
    assert torch.isfinite(out).all()
    assert (out - ref).abs().max() / ref.abs().max() < 3e-3


@torch.no_grad()
def test_fp16_rewrite_survives_large_activations(tiny_student: Student) -> None:
    """Scaling the embeddings by 1e3 drives the residual stream past fp16's x^2 overflow (~256)."""
    loud = copy.deepcopy(tiny_student)
    loud.model.embed_tokens.weight.mul_(1e3 / loud.model.embed_tokens.weight.abs().max())
    ids = torch.arange(3, 19)[None]
    ref = loud(ids)
    out = AnePrefill(loud).eval().half()(ids.int(), prefill_mask(16, torch.float16)).float()
    assert torch.isfinite(out).all()
    assert (out - ref).abs().max() / ref.abs().max() < 1e-2


@torch.no_grad()
def test_plain_modules_equal_the_student(tiny_student: Student) -> None:
    torch.manual_seed(8)
    ids = torch.randint(0, tiny_student.config.vocab_size, (1, 10))
    ref = tiny_student(ids)[0]
    assert (PlainPrefill(tiny_student)(ids.int(), prefill_mask(10))[0] - ref).abs().max() < 1e-5
    decoder = PlainStatefulDecoder(tiny_student, AneConfig(cache_len=32, cache_dtype=torch.float32))
    first = decoder(ids[:, :6].int(), torch.tensor([0], dtype=torch.int32), decode_mask(0, 6, 32))[0]
    rest = decoder(ids[:, 6:].int(), torch.tensor([6], dtype=torch.int32), decode_mask(6, 4, 32))[0]
    assert (torch.cat([first, rest]) - ref).abs().max() < 1e-5
