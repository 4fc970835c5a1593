"""The chunked KD + CE loss equals the plain path in value and in gradients w.r.t. hidden states and lm_head."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from training.losses import cross_entropy, kd_divergence, sparse_topk_kl
from training.losses.chunked import ChunkedLossTerms, chunked_kd_ce_loss, chunked_kd_ce_loss_with_terms

F64 = torch.float64
TOL = {F64: {"rtol": 1e-10, "atol": 1e-12}, torch.float32: {"rtol": 2e-5, "atol": 2e-6}}


def _problem(
    n: int = 37, h: int = 8, ht: int = 12, v: int = 50, seed: int = 0, dtype: torch.dtype = F64
) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, scale: float = 1.0) -> Tensor:
        return (torch.randn(*shape, generator=gen, dtype=F64) * scale).to(dtype)

    labels = torch.randint(0, v, (n,), generator=gen)
    labels[torch.rand(n, generator=gen) < 0.3] = -100
    return {
        "hidden": rnd(n, h).requires_grad_(True),
        "weight": rnd(v, h, scale=0.7).requires_grad_(True),
        "t_hidden": rnd(n, ht),
        "t_weight": rnd(v, ht, scale=0.7),
        "labels": labels,
        "kd_mask": torch.rand(n, generator=gen) > 0.25,
    }


def _plain(
    p: dict[str, Tensor],
    temperature: float,
    kd_weight: float,
    ce_weight: float,
    normalizer: float | None = None,
    divergence: str = "forward_kl",
    label_smoothing: float = 0.0,
    **div_kw: float,
) -> tuple[Tensor, Tensor, Tensor]:
    logits = p["hidden"] @ p["weight"].T
    t_logits = p["t_hidden"] @ p["t_weight"].T
    kd = kd_divergence(
        divergence,
        logits,
        t_logits,
        mask=p["kd_mask"],
        temperature=temperature,
        normalizer=normalizer,
        **div_kw,
    )
    ce = cross_entropy(logits, p["labels"], label_smoothing, normalizer)
    return kd_weight * kd + ce_weight * ce, kd, ce


def _chunked(
    p: dict[str, Tensor],
    temperature: float,
    kd_weight: float,
    ce_weight: float,
    normalizer: float | None = None,
    chunk_size: int = 8,
    **kw: object,
) -> tuple[Tensor, ChunkedLossTerms]:
    return chunked_kd_ce_loss_with_terms(
        p["hidden"], p["weight"], p["t_hidden"], p["t_weight"], p["labels"], p["kd_mask"],
        temperature, kd_weight, ce_weight, normalizer, chunk_size, **kw,
    )  # fmt: skip


def _grads(loss: Tensor, p: dict[str, Tensor]) -> tuple[Tensor, ...]:
    return torch.autograd.grad(loss, (p["hidden"], p["weight"]))


def _assert_same(a: Tensor, b: Tensor, p: dict[str, Tensor], dtype: torch.dtype) -> None:
    torch.testing.assert_close(a, b, **TOL[dtype])
    for ga, gb in zip(_grads(a, p), _grads(b, p), strict=True):
        assert ga.dtype == dtype
        torch.testing.assert_close(ga, gb, **TOL[dtype])


@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize(
    ("temperature", "kd_weight", "ce_weight", "label_smoothing", "normalizer"),
    [
        (1.0, 1.0, 1.0, 0.0, None),
        (2.0, 0.7, 0.3, 0.1, None),
        (0.5, 1.0, 0.5, 0.0, 60.0),
        (3.0, 1.0, 0.0, 0.0, None),
    ],
)
def test_forward_kl_chunked_equals_plain(
    dtype: torch.dtype,
    temperature: float,
    kd_weight: float,
    ce_weight: float,
    label_smoothing: float,
    normalizer: float | None,
) -> None:
    p = _problem(dtype=dtype)
    want, kd, ce = _plain(p, temperature, kd_weight, ce_weight, normalizer, label_smoothing=label_smoothing)
    got, terms = _chunked(p, temperature, kd_weight, ce_weight, normalizer, label_smoothing=label_smoothing)
    assert terms.kd == pytest.approx(float(kd.detach()), rel=1e-5)
    # a term with weight 0 is not computed and reported as 0
    assert terms.ce == (pytest.approx(float(ce.detach()), rel=1e-5) if ce_weight else 0.0)
    assert terms.total == pytest.approx(float(want.detach()), rel=1e-5)
    _assert_same(got, want, p, dtype)


@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize(
    ("divergence", "div_kw"),
    [
        ("reverse_kl", {}),
        ("jsd", {"beta": 0.3}),
        ("skew_kl", {"alpha": 0.2}),
        ("skew_reverse_kl", {"alpha": 0.2}),
    ],
)
def test_other_divergences_chunked_equal_plain(dtype: torch.dtype, divergence: str, div_kw: dict) -> None:
    p = _problem(seed=1, dtype=dtype)
    want, _, _ = _plain(p, 2.0, 0.8, 0.2, None, divergence, 0.1, **div_kw)
    got, _ = _chunked(p, 2.0, 0.8, 0.2, None, divergence=divergence, label_smoothing=0.1, **div_kw)
    _assert_same(got, want, p, dtype)


@pytest.mark.parametrize("chunk_size", [1, 5, 37, 1000])
def test_chunk_size_does_not_change_the_result(chunk_size: int) -> None:
    p = _problem(seed=2)
    want, _, _ = _plain(p, 1.5, 1.0, 1.0)
    got, _ = _chunked(p, 1.5, 1.0, 1.0, chunk_size=chunk_size)
    _assert_same(got, want, p, F64)


@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_all_ignored_gives_zero_loss_and_zero_gradients(dtype: torch.dtype) -> None:
    p = _problem(n=20, seed=3, dtype=dtype)
    p["labels"] = torch.full((20,), -100)
    p["kd_mask"] = torch.zeros(20, dtype=torch.bool)
    got, terms = _chunked(p, 2.0, 1.0, 1.0, chunk_size=6, label_smoothing=0.1)
    assert float(got.detach()) == 0.0 and terms == ChunkedLossTerms(kd=0.0, ce=0.0, total=0.0)
    for g in _grads(got, p):
        assert torch.equal(g, torch.zeros_like(g))
    want, _, _ = _plain(p, 2.0, 1.0, 1.0, label_smoothing=0.1)
    assert float(want.detach()) == 0.0


def test_sparse_topk_teacher_chunked_equals_plain() -> None:
    p = _problem(seed=4)
    t_logits = p["t_hidden"] @ p["t_weight"].T
    lp, ids = F.log_softmax(t_logits, dim=-1).topk(6, dim=-1)
    lp[::4, -1] = -math.inf
    got = chunked_kd_ce_loss(
        p["hidden"], p["weight"], None, None, p["labels"], p["kd_mask"], 2.0, 0.6, 0.4, None, 7,
        teacher_topk_ids=ids, teacher_topk_logprobs=lp,
    )  # fmt: skip
    logits = p["hidden"] @ p["weight"].T
    want = 0.6 * sparse_topk_kl(logits, ids, lp, mask=p["kd_mask"], temperature=2.0) + 0.4 * cross_entropy(
        logits, p["labels"]
    )
    _assert_same(got, want, p, F64)


def test_grad_output_scales_gradients_and_composes_with_other_losses() -> None:
    p = _problem(seed=5)
    got, _ = _chunked(p, 1.0, 1.0, 1.0)
    want, _, _ = _plain(p, 1.0, 1.0, 1.0)

    def extra() -> Tensor:
        return (p["weight"] ** 2).sum() * 0.01

    _assert_same(3.0 * got + extra(), 3.0 * want + extra(), p, F64)
    got, _ = _chunked(p, 1.0, 1.0, 1.0)
    got.backward(torch.tensor(-0.5, dtype=F64))
    g_h, g_w = p["hidden"].grad, p["weight"].grad
    assert g_h is not None and g_w is not None
    ref_h, ref_w = _grads(_plain(p, 1.0, 1.0, 1.0)[0], p)
    torch.testing.assert_close(g_h, -0.5 * ref_h)
    torch.testing.assert_close(g_w, -0.5 * ref_w)


def test_frozen_lm_head_gets_no_gradient() -> None:
    p = _problem(seed=6)
    p["weight"] = p["weight"].detach()
    got, _ = _chunked(p, 1.0, 1.0, 1.0)
    (g_h,) = torch.autograd.grad(got, p["hidden"])
    want, _, _ = _plain(p, 1.0, 1.0, 1.0)
    torch.testing.assert_close(g_h, torch.autograd.grad(want, p["hidden"])[0])


def test_kd_only_and_ce_only_need_only_their_inputs() -> None:
    p = _problem(seed=7)
    kd_only = chunked_kd_ce_loss(p["hidden"], p["weight"], p["t_hidden"], p["t_weight"], None, p["kd_mask"],
                                 ce_weight=0.0, chunk_size=9)  # fmt: skip
    _assert_same(kd_only, _plain(p, 1.0, 1.0, 0.0)[0], p, F64)
    ce_only = chunked_kd_ce_loss(p["hidden"], p["weight"], labels=p["labels"], kd_weight=0.0, chunk_size=9)
    _assert_same(ce_only, _plain(p, 1.0, 0.0, 1.0)[0], p, F64)


def test_half_precision_hidden_states() -> None:
    p = _problem(n=16, seed=8, dtype=torch.bfloat16)
    got, _ = _chunked(p, 2.0, 1.0, 1.0)
    assert got.dtype == torch.float32
    g_h, g_w = _grads(got, p)
    assert g_h.dtype == torch.bfloat16 and g_w.dtype == torch.bfloat16
    p32 = {k: (v.detach().float().requires_grad_(v.requires_grad) if v.is_floating_point() else v)
           for k, v in p.items()}  # fmt: skip
    want, _, _ = _plain(p32, 2.0, 1.0, 1.0)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    w_h, w_w = _grads(want, p32)
    torch.testing.assert_close(g_h.float(), w_h, rtol=2e-2, atol=1e-3)
    torch.testing.assert_close(g_w.float(), w_w, rtol=2e-2, atol=1e-3)


def test_no_vocabulary_sized_tensor_is_kept_for_backward() -> None:
    """The plain path saves (N, V) tensors for backward; the chunked one only (N, H) and (V, H)."""
    p = _problem(n=64, h=4, ht=4, v=256, seed=9, dtype=torch.float32)
    saved: list[int] = []

    def pack(x: Tensor) -> Tensor:
        saved.append(x.numel())
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        _chunked(p, 2.0, 1.0, 1.0, chunk_size=16)
    assert saved and max(saved) <= 256 * 4
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        _plain(p, 2.0, 1.0, 1.0)
    assert max(saved) >= 64 * 256


@settings(max_examples=10, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31 - 1), data=st.data())
def test_micro_batch_split_invariance(seed: int, data: st.DataObject) -> None:
    p = _problem(n=30, h=6, ht=5, v=20, seed=seed)
    cuts = sorted(data.draw(st.sets(st.integers(1, 29), max_size=5), label="cuts"))
    bounds = [0, *cuts, 30]
    kd_tokens = float(p["kd_mask"].sum())
    full, _ = _chunked(p, 2.0, 1.0, 0.0, chunk_size=7)
    full_grads = _grads(full, p)
    total = torch.zeros((), dtype=F64)
    acc = [torch.zeros_like(p["hidden"]), torch.zeros_like(p["weight"])]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        part = chunked_kd_ce_loss(
            p["hidden"][a:b], p["weight"], p["t_hidden"][a:b], p["t_weight"], p["labels"][a:b],
            p["kd_mask"][a:b], 2.0, 1.0, 0.0, kd_tokens, 7,
        )  # fmt: skip
        total = total + part.detach()
        for slot, g in zip(acc, _grads(part, p), strict=True):
            slot += g
    torch.testing.assert_close(total, full.detach())
    for got, want in zip(acc, full_grads, strict=True):
        torch.testing.assert_close(got, want)


def test_input_validation() -> None:
    p = _problem(n=10, seed=10)
    h, w, th, tw = p["hidden"], p["weight"], p["t_hidden"], p["t_weight"]
    bad_calls = [
        lambda: chunked_kd_ce_loss(h, w, th, tw, chunk_size=0),
        lambda: chunked_kd_ce_loss(h, w[:, :3], th, tw),
        lambda: chunked_kd_ce_loss(h.unsqueeze(0), w, th, tw),
        lambda: chunked_kd_ce_loss(h, w, th, tw, temperature=0.0),
        lambda: chunked_kd_ce_loss(h, w, th, tw, kd_weight=-1.0),
        lambda: chunked_kd_ce_loss(h, w, th, tw, divergence="tvd"),
        lambda: chunked_kd_ce_loss(h, w, th[:5], tw),
        lambda: chunked_kd_ce_loss(h, w, th, tw[:, :4]),
        lambda: chunked_kd_ce_loss(h, w, th, None),
        lambda: chunked_kd_ce_loss(h, w),
        lambda: chunked_kd_ce_loss(h, w, th, tw, labels=torch.zeros(9, dtype=torch.long)),
        lambda: chunked_kd_ce_loss(h, w, th, tw, kd_mask=torch.ones(11)),
        lambda: chunked_kd_ce_loss(h, w, th, tw, label_smoothing=1.5),
        lambda: chunked_kd_ce_loss(
            h, w, teacher_topk_ids=torch.zeros(10, 2, dtype=torch.long), teacher_topk_logprobs=torch.zeros(10, 2),
            divergence="jsd",
        ),
        lambda: chunked_kd_ce_loss(
            h, w, th, tw, teacher_topk_ids=torch.zeros(10, 2, dtype=torch.long),
            teacher_topk_logprobs=torch.zeros(10, 2),
        ),
    ]  # fmt: skip
    for i, call in enumerate(bad_calls):
        with pytest.raises(ValueError):
            call()
            pytest.fail(f"call {i} did not raise")


def test_teacher_probabilities_that_underflow_to_zero_do_not_produce_nan() -> None:
    """At a tiny temperature some teacher log-probs overflow to -inf (p = 0); 0 * log 0 must count as 0."""
    row = torch.tensor([[2e3], [-2e3], [0.0]])
    hidden = torch.ones(2, 1, requires_grad=True)
    weight = row.clone().requires_grad_(True)
    loss = chunked_kd_ce_loss(hidden, weight, torch.ones(2, 1), row, temperature=1e-35, ce_weight=0.0)
    assert float(loss.detach()) == 0.0
    g_h, g_w = torch.autograd.grad(loss, (hidden, weight))
    assert bool(torch.isfinite(g_h).all()) and bool(torch.isfinite(g_w).all())


def test_benchmark_script_runs_and_reports_matching_gradients(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Smoke run of benches/bench_chunked_loss.py on a tiny problem (two fresh worker subprocesses per size)."""
    script = Path(__file__).resolve().parents[4] / "benches" / "bench_chunked_loss.py"
    spec = importlib.util.spec_from_file_location("bench_chunked_loss", script)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_chunked_loss", bench)
    spec.loader.exec_module(bench)
    out = tmp_path / "report.md"
    args = ["--sizes", "48", "--vocab", "200", "--hidden", "8", "--teacher-hidden", "6", "--chunk-size", "16"]
    bench.main([*args, "--iters", "1", "--out", str(out)])
    row = next(line for line in out.read_text().splitlines() if line.startswith("| 48 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == 12
    assert float(cells[1].replace(",", "")) > 0 and float(cells[2].replace(",", "")) > 0
    assert float(cells[-2]) < 1e-5 and float(cells[-1]) < 1e-5  # loss and gradients agree across paths
