"""Tests of training/losses/kd.py against brute-force float64 references written with explicit loops."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from torch import Tensor

from training.losses import (
    DIVERGENCES,
    HiddenProjector,
    KDLossWeights,
    combined_kd_loss,
    cross_entropy,
    forward_kl,
    generalized_jsd,
    hidden_state_loss,
    kd_divergence,
    resolve_normalizer,
    reverse_kl,
    skew_kl,
    skew_reverse_kl,
    sparse_topk_kl,
    uniform_layer_map,
)

F64 = torch.float64
PROPERTY = settings(max_examples=30, deadline=None, derandomize=True)
TINY64 = torch.finfo(F64).tiny


def _rand(*shape: int, seed: int, scale: float = 3.0, dtype: torch.dtype = F64) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=gen, dtype=F64) * scale).to(dtype)


# ----------------------------------------------------------------------------------------------------------
# Brute-force references: one token at a time, one vocabulary entry at a time.
# ----------------------------------------------------------------------------------------------------------


def ref_softmax(row: Tensor, temperature: float) -> list[Tensor]:
    """Softmax of one logit row as a list of 0-d tensors (keeps autograd)."""
    vals = [row[v] / temperature for v in range(row.shape[0])]
    top = max(float(x.detach()) for x in vals)
    exps = [torch.exp(x - top) for x in vals]
    total = sum(exps)
    return [e / total for e in exps]


def ref_kl(a: list[Tensor], b: list[Tensor], floor_b: bool = False) -> Tensor:
    """sum_{v: a_v > 0} a_v (log a_v - log b_v)."""
    out = torch.zeros((), dtype=F64)
    for a_v, b_v in zip(a, b, strict=True):
        if float(a_v.detach()) > 0:
            log_b = torch.log(b_v) if float(b_v.detach()) > 0 else torch.tensor(-math.inf, dtype=F64)
            if floor_b:
                log_b = torch.clamp(log_b, min=math.log(TINY64))
            out = out + a_v * (torch.log(a_v) - log_b)
    return out


def ref_divergence(name: str, s_row: Tensor, t_row: Tensor, temperature: float, param: float) -> Tensor:
    """T^2 * divergence between softmax(t_row / T) (teacher p) and softmax(s_row / T) (student q)."""
    q = ref_softmax(s_row, temperature)
    p = [x.detach() for x in ref_softmax(t_row, temperature)]
    if name == "forward_kl":
        d = ref_kl(p, q)
    elif name == "reverse_kl":
        d = ref_kl(q, p, floor_b=True)
    elif name == "jsd":
        m = [param * p_v + (1 - param) * q_v for p_v, q_v in zip(p, q, strict=True)]
        d = param * ref_kl(p, m) + (1 - param) * ref_kl(q, m) if 0 < param < 1 else torch.zeros((), dtype=F64)
    elif name == "skew_kl":
        d = ref_kl(p, [param * p_v + (1 - param) * q_v for p_v, q_v in zip(p, q, strict=True)])
    elif name == "skew_reverse_kl":
        p_floor = [torch.clamp(p_v, min=TINY64) for p_v in p]
        d = ref_kl(q, [param * q_v + (1 - param) * p_v for p_v, q_v in zip(p_floor, q, strict=True)])
    else:
        raise AssertionError(name)
    return d * temperature**2


def ref_reduce(per_token: list[Tensor], weights: list[float], normalizer: float | None) -> Tensor:
    total = torch.zeros((), dtype=F64)
    for loss, w in zip(per_token, weights, strict=True):
        if w != 0:
            total = total + w * loss
    denom = sum(weights) if normalizer is None else normalizer
    return total / max(denom, 1.0)


def ref_token_loss(
    name: str, s: Tensor, t: Tensor, mask: Tensor | None, temperature: float, param: float
) -> Tensor:
    s2, t2 = s.reshape(-1, s.shape[-1]), t.reshape(-1, t.shape[-1])
    weights = [1.0] * s2.shape[0] if mask is None else [float(w) for w in mask.reshape(-1)]
    per_token = [ref_divergence(name, s2[n], t2[n], temperature, param) for n in range(s2.shape[0])]
    return ref_reduce(per_token, weights, None)


def ref_cross_entropy(logits: Tensor, labels: Tensor, eps: float) -> Tensor:
    z, y = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
    vocab = z.shape[-1]
    per_token, weights = [], []
    for n in range(z.shape[0]):
        if int(y[n]) == -100:
            per_token.append(torch.zeros((), dtype=F64))
            weights.append(0.0)
            continue
        q = ref_softmax(z[n], 1.0)
        nll = -torch.log(q[int(y[n])])
        smooth = -sum(torch.log(q_v) for q_v in q) / vocab
        per_token.append((1 - eps) * nll + eps * smooth)
        weights.append(1.0)
    return ref_reduce(per_token, weights, None)


def ref_topk(s: Tensor, ids: Tensor, logprobs: Tensor, mask: Tensor | None, temperature: float) -> Tensor:
    s2 = s.reshape(-1, s.shape[-1])
    ids2, lp2 = ids.reshape(-1, ids.shape[-1]), logprobs.reshape(-1, ids.shape[-1])
    weights = [1.0] * s2.shape[0] if mask is None else [float(w) for w in mask.reshape(-1)]
    per_token = []
    for n in range(s2.shape[0]):
        q = ref_softmax(s2[n], temperature)
        chosen = [int(i) for i in ids2[n]]
        q_buckets = [q[i] for i in chosen]
        q_buckets.append(sum((q[v] for v in range(len(q)) if v not in chosen), torch.zeros((), dtype=F64)))
        b = [math.exp(float(x)) for x in lp2[n]]
        b.append(max(0.0, 1.0 - sum(b)))
        tempered = [x ** (1.0 / temperature) if x > 0 else 0.0 for x in b]
        p = [torch.tensor(x / sum(tempered), dtype=F64) for x in tempered]
        per_token.append(ref_kl(p, q_buckets) * temperature**2)
    return ref_reduce(per_token, weights, None)


def ref_hidden(
    s_hidden: list[Tensor], t_hidden: list[Tensor], proj: HiddenProjector, kind: str, mask: Tensor | None
) -> Tensor:
    layer_losses = []
    for s_idx, t_idx in proj.layer_map.items():
        hs = s_hidden[s_idx].reshape(-1, s_hidden[s_idx].shape[-1])
        ht = t_hidden[t_idx].reshape(-1, t_hidden[t_idx].shape[-1])
        lin = proj.projections[str(s_idx)] if len(proj.projections) else None
        weights = [1.0] * hs.shape[0] if mask is None else [float(w) for w in mask.reshape(-1)]
        per_token = []
        for n in range(hs.shape[0]):
            a = lin.weight @ hs[n] if lin is not None else hs[n]
            b = ht[n]
            if kind == "mse":
                per_token.append(sum((a[i] - b[i]) ** 2 for i in range(a.shape[0])) / a.shape[0])
            else:
                dot = sum(a[i] * b[i] for i in range(a.shape[0]))
                per_token.append(1 - dot / (torch.sqrt((a * a).sum()) * torch.sqrt((b * b).sum())))
        layer_losses.append(ref_reduce(per_token, weights, None))
    return sum(layer_losses) / len(layer_losses)


def _grad(loss: Tensor, x: Tensor) -> Tensor:
    (g,) = torch.autograd.grad(loss, x)
    return g


DIV_PARAMS = {"forward_kl": 0.0, "reverse_kl": 0.0, "jsd": 0.3, "skew_kl": 0.2, "skew_reverse_kl": 0.2}


def _call_div(name: str, s: Tensor, t: Tensor, param: float, **kw: object) -> Tensor:
    if name == "jsd":
        kw["beta"] = param
    elif name.startswith("skew"):
        kw["alpha"] = param
    return kd_divergence(name, s, t, **kw)


# ----------------------------------------------------------------------------------------------------------
# Values and gradients against the references
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(DIVERGENCES))
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_divergence_matches_loop_reference(name: str, temperature: float) -> None:
    s = _rand(2, 3, 6, seed=1).requires_grad_(True)
    t = _rand(2, 3, 6, seed=2)
    t[0, 1, :2] = -math.inf  # top-k filtered teacher row
    mask = torch.tensor([[True, True, False], [True, False, True]])
    got = _call_div(name, s, t, DIV_PARAMS[name], mask=mask, temperature=temperature)
    want = ref_token_loss(name, s, t, mask, temperature, DIV_PARAMS[name])
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(_grad(got, s), _grad(want, s), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", list(DIVERGENCES))
def test_divergence_gradient_matches_finite_differences(name: str) -> None:
    s = _rand(3, 5, seed=3).requires_grad_(True)
    t = _rand(3, 5, seed=4)
    weights = torch.tensor([1.0, 0.5, 2.0], dtype=F64)
    assert torch.autograd.gradcheck(
        lambda x: _call_div(name, x, t, DIV_PARAMS[name], mask=weights, temperature=1.7), (s,)
    )


def test_float_mask_weights_tokens() -> None:
    s, t = _rand(4, 7, seed=5), _rand(4, 7, seed=6)
    w = torch.tensor([0.5, 0.0, 2.0, 1.0], dtype=F64)
    per_token = torch.stack([forward_kl(s[i : i + 1], t[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(forward_kl(s, t, mask=w), (w * per_token).sum() / w.sum())


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_cross_entropy_matches_reference_and_torch(eps: float) -> None:
    z = _rand(2, 4, 9, seed=7).requires_grad_(True)
    y = torch.tensor([[1, -100, 8, 0], [-100, 3, 3, 5]])
    got = cross_entropy(z, y, label_smoothing=eps)
    want = ref_cross_entropy(z, y, eps)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(_grad(got, z), _grad(want, z))
    torch_ce = F.cross_entropy(z.reshape(-1, 9), y.reshape(-1), label_smoothing=eps, reduction="sum") / 6
    torch.testing.assert_close(got, torch_ce)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_sparse_topk_matches_bucket_reference(temperature: float) -> None:
    s = _rand(2, 3, 10, seed=8).requires_grad_(True)
    teacher_lp = F.log_softmax(_rand(2, 3, 10, seed=9), dim=-1)
    lp, ids = teacher_lp.topk(4, dim=-1)
    lp = lp.clone()
    lp[1, 2, 3] = -math.inf  # a padded slot
    mask = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.5]], dtype=F64)
    got = sparse_topk_kl(s, ids, lp, mask=mask, temperature=temperature)
    want = ref_topk(s, ids, lp, mask, temperature)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(_grad(got, s), _grad(want, s))


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_sparse_topk_with_full_vocab_equals_forward_kl(temperature: float) -> None:
    s = _rand(3, 4, 8, seed=10).requires_grad_(True)
    t = _rand(3, 4, 8, seed=11)
    perm = torch.stack([torch.randperm(8, generator=torch.Generator().manual_seed(i)) for i in range(12)])
    ids = perm.reshape(3, 4, 8)
    lp = F.log_softmax(t, dim=-1).gather(-1, ids)
    mask = _rand(3, 4, seed=12) > 0
    got = sparse_topk_kl(s, ids, lp, mask=mask, temperature=temperature)
    want = forward_kl(s, t, mask=mask, temperature=temperature)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(_grad(got, s), _grad(want, s), rtol=1e-9, atol=1e-12)


def test_sparse_topk_tail_bucket_matters() -> None:
    """Mass outside the top-k must be compared bucket-wise, not dropped: a uniform student over V matches a
    teacher whose top-k and tail masses are proportional to bucket sizes exactly (loss 0)."""
    vocab, k = 10, 3
    s = torch.zeros(1, vocab, dtype=F64)
    ids = torch.tensor([[0, 4, 7]])
    lp = torch.full((1, k), math.log(1 / vocab), dtype=F64)
    assert float(sparse_topk_kl(s, ids, lp)) == pytest.approx(0.0, abs=1e-14)
    lp_shifted = torch.log(torch.tensor([[0.2, 0.2, 0.2]], dtype=F64))
    expected = 0.6 * math.log(0.2 / 0.1) + 0.4 * math.log(0.4 / 0.7)
    assert float(sparse_topk_kl(s, ids, lp_shifted)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("kind", ["mse", "cosine"])
@pytest.mark.parametrize("widths", [(4, 6), (5, 5)])
def test_hidden_state_loss_matches_reference(kind: str, widths: tuple[int, int]) -> None:
    hs_dim, ht_dim = widths
    torch.manual_seed(0)
    proj = HiddenProjector(hs_dim, ht_dim, uniform_layer_map(2, 4)).double()
    s_hidden = [_rand(2, 3, hs_dim, seed=20 + i).requires_grad_(True) for i in range(2)]
    t_hidden = [_rand(2, 3, ht_dim, seed=30 + i) for i in range(4)]
    mask = torch.tensor([[True, False, True], [True, True, True]])
    got = hidden_state_loss(s_hidden, t_hidden, proj, kind=kind, mask=mask)
    want = ref_hidden(s_hidden, t_hidden, proj, kind, mask)
    torch.testing.assert_close(got, want)
    params = [*s_hidden, *proj.parameters()]
    for a, b in zip(torch.autograd.grad(got, params), torch.autograd.grad(want, params), strict=True):
        torch.testing.assert_close(a, b)


def test_hidden_projector_structure_and_map() -> None:
    assert uniform_layer_map(4, 12) == {0: 2, 1: 5, 2: 8, 3: 11}
    assert uniform_layer_map(3, 3) == {0: 0, 1: 1, 2: 2}
    assert uniform_layer_map(1, 5) == {0: 4}
    spread = uniform_layer_map(2, 5)  # floor division: 5 / 2 = 2.5 teacher layers a student layer
    assert spread == {0: 1, 1: 4} and all(type(v) is int for v in spread.values())
    same = HiddenProjector(8, 8, {0: 1, 1: 3})
    assert list(same.parameters()) == []
    x = torch.randn(2, 8)
    assert same(1, x) is x
    wide = HiddenProjector(8, 16, {0: 1, 1: 3})
    assert sorted(wide.projections.keys()) == ["0", "1"]
    assert wide(0, x).shape == (2, 16)
    assert not torch.equal(wide(0, x), wide(1, x))
    with pytest.raises(KeyError):
        wide(2, x)
    with pytest.raises(ValueError):
        wide(0, torch.randn(2, 7))
    with pytest.raises(ValueError, match="num_student_layers <= num_teacher_layers, got 5, 4"):
        uniform_layer_map(5, 4)
    with pytest.raises(ValueError):
        HiddenProjector(8, 8, {})
    with pytest.raises(IndexError):
        hidden_state_loss([torch.randn(2, 8)], [torch.randn(2, 8)], same)


def test_hidden_state_loss_does_not_touch_teacher() -> None:
    proj = HiddenProjector(3, 3, {0: 0})
    s = torch.randn(2, 4, 3, requires_grad=True)
    t = torch.randn(2, 4, 3, requires_grad=True)
    loss = hidden_state_loss([s], [t], proj, kind="cosine")
    loss.backward()
    assert t.grad is None
    assert s.grad is not None and bool(s.grad.abs().sum() > 0)
    assert float(hidden_state_loss([t.detach()], [t.detach()], proj, kind="cosine")) == pytest.approx(
        0, abs=1e-6
    )


# ----------------------------------------------------------------------------------------------------------
# Masking, normalization, robustness
# ----------------------------------------------------------------------------------------------------------


def _all_losses(
    s: Tensor, t: Tensor, mask: Tensor, labels: Tensor, normalizer: float | None
) -> dict[str, Tensor]:
    lp, ids = F.log_softmax(t, dim=-1).topk(3, dim=-1)
    out = {
        name: _call_div(name, s, t, DIV_PARAMS[name], mask=mask, normalizer=normalizer)
        for name in DIVERGENCES
    }
    out["ce"] = cross_entropy(s, labels, label_smoothing=0.1, normalizer=normalizer)
    out["topk"] = sparse_topk_kl(s, ids, lp, mask=mask, temperature=2.0, normalizer=normalizer)
    return out


def test_all_masked_batch_is_zero_with_finite_zero_gradient() -> None:
    s = _rand(2, 3, 5, seed=40).requires_grad_(True)
    t = _rand(2, 3, 5, seed=41)
    mask = torch.zeros(2, 3, dtype=torch.bool)
    labels = torch.full((2, 3), -100)
    for name, loss in _all_losses(s, t, mask, labels, None).items():
        assert float(loss.detach()) == 0.0, name
        g = _grad(loss, s)
        assert torch.equal(g, torch.zeros_like(g)), name
    proj = HiddenProjector(5, 4, {0: 0}).double()
    hid = hidden_state_loss([s], [_rand(2, 3, 4, seed=42)], proj, mask=mask)
    assert float(hid.detach()) == 0.0
    assert torch.equal(_grad(hid, s), torch.zeros_like(s))


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_extreme_logits_give_finite_values_and_gradients(dtype: torch.dtype) -> None:
    s = torch.tensor(
        [[1e4, -1e4, 0.0, 5.0, -1e4], [-1e4, -1e4, 1e4, 1e4, 0.0]], dtype=dtype, requires_grad=True
    )
    t = torch.tensor([[-math.inf, 1e4, -math.inf, 3.0, -1e4], [2.0, -math.inf, -math.inf, -math.inf, 0.0]])
    t = t.to(dtype)
    labels = torch.tensor([1, 4])
    mask = torch.tensor([True, True])
    for temperature in (1.0, 4.0):
        losses = _all_losses(s, t, mask, labels, None)
        losses["topk_T"] = sparse_topk_kl(
            s,
            torch.tensor([[1, 3], [0, 4]]),
            torch.tensor([[0.0, -math.inf], [-0.1, -5.0]], dtype=dtype),
            temperature=temperature,
        )
        for name, loss in losses.items():
            assert torch.isfinite(loss), (name, temperature)
            assert bool(torch.isfinite(_grad(loss, s)).all()), (name, temperature)
    # The student puts ~all mass on ids the teacher forbids: forward KL is large but finite, reverse KL is
    # capped by the log-prob floor (log tiny).
    assert float(forward_kl(s.detach(), t)) > 1e3
    assert float(reverse_kl(s.detach(), t)) <= -math.log(torch.finfo(dtype).tiny) * 1.01


def test_masked_tokens_with_infinite_loss_do_not_leak() -> None:
    """A masked (e.g. padded) token whose divergence is +inf contributes exactly 0, value and gradient."""
    s = _rand(3, 5, seed=47).requires_grad_(True)
    t = _rand(3, 5, seed=48)
    s_inf = torch.where(
        torch.tensor([[True, False, False, False, False], [False] * 5, [False] * 5]), -math.inf, s
    )
    mask = torch.tensor([False, True, True])
    loss = forward_kl(s_inf, t, mask=mask)
    assert float(forward_kl(s_inf.detach(), t)) == math.inf
    torch.testing.assert_close(loss, forward_kl(s[1:], t[1:]))
    g = _grad(loss, s)
    assert bool(torch.isfinite(g).all())
    assert torch.equal(g[0], torch.zeros(5, dtype=F64))


def test_identical_extreme_distributions_give_zero() -> None:
    s = torch.tensor([[1e4, -1e4, 0.0, -math.inf]], dtype=F64)
    for name in DIVERGENCES:
        assert float(_call_div(name, s, s.clone(), DIV_PARAMS[name])) == pytest.approx(0.0, abs=1e-12), name


def test_normalizer_forms_and_clamping() -> None:
    s, t = _rand(2, 3, 5, seed=43), _rand(2, 3, 5, seed=44)
    mask = torch.tensor([[True, False, True], [True, True, False]])
    summed = forward_kl(s, t, mask=mask, normalizer=1)
    torch.testing.assert_close(forward_kl(s, t, mask=mask), summed / 4)
    torch.testing.assert_close(forward_kl(s, t, mask=mask, normalizer=torch.tensor(8)), summed / 8)
    torch.testing.assert_close(forward_kl(s, t, mask=mask, normalizer=8.0), summed / 8)
    torch.testing.assert_close(forward_kl(s, t, mask=mask, normalizer=0), summed)
    torch.testing.assert_close(forward_kl(s, t, mask=mask, normalizer=0.25), summed)
    assert float(resolve_normalizer(torch.zeros(3), None)) == 1.0
    with pytest.raises(ValueError):
        forward_kl(s, t, normalizer=-1)
    with pytest.raises(ValueError):
        forward_kl(s, t, normalizer=float("nan"))
    with pytest.raises(ValueError):
        forward_kl(s, t, normalizer=torch.ones(2))
    with pytest.raises(TypeError):
        forward_kl(s, t, normalizer="4")  # type: ignore[arg-type]


def test_input_validation() -> None:
    s, t = torch.randn(2, 5), torch.randn(2, 5)
    with pytest.raises(ValueError):
        forward_kl(s, torch.randn(2, 6))
    with pytest.raises(ValueError):
        forward_kl(s, t, mask=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError):
        forward_kl(s, t, temperature=0.0)
    with pytest.raises(ValueError):
        generalized_jsd(s, t, beta=1.5)
    with pytest.raises(ValueError):
        skew_kl(s, t, alpha=-0.1)
    with pytest.raises(ValueError):
        kd_divergence("tvd", s, t)
    with pytest.raises(ValueError):
        cross_entropy(s, torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError):
        cross_entropy(s, torch.zeros(2))
    with pytest.raises(ValueError):
        sparse_topk_kl(s, torch.zeros(2, 6, dtype=torch.long), torch.zeros(2, 6))
    with pytest.raises(ValueError):
        sparse_topk_kl(s, torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 3))


def test_half_precision_inputs_are_upcast() -> None:
    s, t = _rand(4, 32, seed=45), _rand(4, 32, seed=46)
    want = forward_kl(s, t, temperature=2.0)
    got = forward_kl(s.bfloat16(), t.bfloat16(), temperature=2.0)
    assert got.dtype == torch.float32
    want_rounded = forward_kl(s.bfloat16().double(), t.bfloat16().double(), temperature=2.0)
    assert float(got) == pytest.approx(float(want_rounded), rel=1e-5)
    assert float(got) == pytest.approx(float(want), rel=5e-2)


# ----------------------------------------------------------------------------------------------------------
# Divergence-specific identities
# ----------------------------------------------------------------------------------------------------------


def test_jsd_endpoints_are_exactly_zero_and_interior_is_bounded() -> None:
    s = _rand(3, 6, seed=50).requires_grad_(True)
    t = _rand(3, 6, seed=51)
    t[0, :3] = -math.inf
    for beta in (0.0, 1.0):
        loss = generalized_jsd(s, t, beta=beta, temperature=2.0)
        assert float(loss.detach()) == 0.0
        assert torch.equal(_grad(loss, s), torch.zeros_like(s))
    near = float(generalized_jsd(s.detach(), t, beta=1e-6))
    assert 0 < near < 1e-4
    assert 0 < float(generalized_jsd(s.detach(), t, beta=0.5)) <= math.log(2)
    assert float(generalized_jsd(s.detach(), t, beta=0.5, temperature=3.0)) <= 9 * math.log(2)


def test_skew_endpoints() -> None:
    s, t = _rand(3, 6, seed=52), _rand(3, 6, seed=53)
    torch.testing.assert_close(skew_kl(s, t, alpha=0.0, temperature=2.0), forward_kl(s, t, temperature=2.0))
    torch.testing.assert_close(
        skew_reverse_kl(s, t, alpha=0.0, temperature=2.0), reverse_kl(s, t, temperature=2.0)
    )
    assert float(skew_kl(s, t, alpha=1.0)) == pytest.approx(0.0, abs=1e-15)
    assert float(skew_reverse_kl(s, t, alpha=1.0)) == pytest.approx(0.0, abs=1e-15)
    # skewing towards the teacher lowers the divergence
    assert float(skew_kl(s, t, alpha=0.5)) < float(skew_kl(s, t, alpha=0.1)) < float(forward_kl(s, t))


@pytest.mark.parametrize("temperature", [0.5, 2.0, 7.0])
def test_temperature_scaling(temperature: float) -> None:
    s = _rand(5, 9, seed=54).requires_grad_(True)
    t = _rand(5, 9, seed=55)
    got = forward_kl(s, t, temperature=temperature)
    torch.testing.assert_close(got, temperature**2 * forward_kl(s / temperature, t / temperature))
    # closed form: d/ds T^2 KL(p_T || q_T) = T (q_T - p_T), averaged over the 5 tokens
    q, p = F.softmax(s / temperature, -1), F.softmax(t / temperature, -1)
    torch.testing.assert_close(_grad(got, s), temperature * (q - p) / 5)


def test_high_temperature_gradient_matches_logit_matching() -> None:
    """Hinton et al.: as T grows, the T^2-scaled KD gradient tends to (s - t - mean(s - t)) / V."""
    s = _rand(2, 16, seed=56, scale=1.0).requires_grad_(True)
    t = _rand(2, 16, seed=57, scale=1.0)
    g = _grad(forward_kl(s, t, temperature=1e3), s)
    diff = (s - t).detach()
    expected = (diff - diff.mean(-1, keepdim=True)) / 16 / 2
    torch.testing.assert_close(g, expected, rtol=1e-2, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# Property tests
# ----------------------------------------------------------------------------------------------------------


def _tv(s: Tensor, t: Tensor, temperature: float) -> Tensor:
    return 0.5 * (F.softmax(s / temperature, -1) - F.softmax(t / temperature, -1)).abs().sum(-1)


@PROPERTY
@given(
    seed=st.integers(0, 2**31 - 1),
    vocab=st.integers(2, 12),
    scale=st.floats(0.01, 30.0),
    temperature=st.sampled_from([0.5, 1.0, 3.0]),
    beta=st.floats(0.05, 0.95),
)
def test_divergences_nonnegative_and_lower_bounded_by_pinsker(
    seed: int, vocab: int, scale: float, temperature: float, beta: float
) -> None:
    s, t = _rand(4, vocab, seed=seed, scale=scale), _rand(4, vocab, seed=seed + 1, scale=scale)
    tv2 = (_tv(s, t, temperature) ** 2).mean()
    t2 = temperature**2
    bounds = {
        "forward_kl": (forward_kl(s, t, temperature=temperature), 2 * tv2),
        "reverse_kl": (reverse_kl(s, t, temperature=temperature), 2 * tv2),
        "jsd": (generalized_jsd(s, t, beta=beta, temperature=temperature), 2 * beta * (1 - beta) * tv2),
        "skew_kl": (skew_kl(s, t, alpha=beta, temperature=temperature), 2 * (1 - beta) ** 2 * tv2),
        "skew_reverse_kl": (
            skew_reverse_kl(s, t, alpha=beta, temperature=temperature),
            2 * (1 - beta) ** 2 * tv2,
        ),
    }
    for name, (loss, bound) in bounds.items():
        assert float(loss) >= 0.0, name
        assert float(loss) / t2 >= float(bound) * (1 - 1e-9) - 1e-15, name


@PROPERTY
@given(
    seed=st.integers(0, 2**31 - 1),
    vocab=st.integers(2, 12),
    scale=st.floats(0.01, 100.0),
    shift=st.floats(-50.0, 50.0),
    temperature=st.sampled_from([0.5, 1.0, 3.0]),
)
def test_divergences_vanish_for_equal_distributions(
    seed: int, vocab: int, scale: float, shift: float, temperature: float
) -> None:
    s = _rand(3, vocab, seed=seed, scale=scale)
    t = s + shift * torch.arange(1, 4, dtype=F64).unsqueeze(-1)  # same softmax, different logits
    for name in DIVERGENCES:
        loss = _call_div(name, s, t, 0.5 if name == "jsd" else 0.1, temperature=temperature)
        assert abs(float(loss)) <= 1e-9 * max(1.0, scale) * temperature**2, name


def _combined(s: Tensor, t: Tensor, labels: Tensor, mask: Tensor, normalizer: float | None) -> Tensor:
    proj = HiddenProjector(s.shape[-1], 3, {0: 0}).double()
    torch.nn.init.eye_(proj.projections["0"].weight)
    weights = KDLossWeights(kd=0.7, ce=0.3, hidden=0.2, divergence="jsd", temperature=2.0, jsd_beta=0.4)
    total, _ = combined_kd_loss(
        s,
        weights,
        teacher_logits=t,
        labels=labels,
        mask=mask,
        normalizer=normalizer,
        student_hidden=[s],
        teacher_hidden=[t[..., :3]],
        projector=proj,
    )
    return total


@settings(max_examples=12, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31 - 1), batch=st.integers(2, 6), data=st.data())
def test_micro_batch_split_invariance(seed: int, batch: int, data: st.DataObject) -> None:
    seq, vocab = 3, 6
    cuts = sorted(data.draw(st.sets(st.integers(1, batch - 1), max_size=batch - 1), label="cuts"))
    bounds = [0, *cuts, batch]
    s = _rand(batch, seq, vocab, seed=seed).requires_grad_(True)
    t = _rand(batch, seq, vocab, seed=seed + 1)
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(batch, seq, generator=gen) > 0.4
    labels = torch.where(mask, torch.randint(0, vocab, (batch, seq), generator=gen), -100)
    total_tokens = float(mask.sum())
    ids = torch.randint(0, vocab, (batch, seq, 1), generator=gen)
    topk = (ids, torch.full((batch, seq, 1), -0.5, dtype=F64))

    fns: dict[str, Callable[[slice, float | None], Tensor]] = {
        name: (lambda sl, n, name=name: _call_div(name, s[sl], t[sl], 0.3, mask=mask[sl], normalizer=n))
        for name in DIVERGENCES
    }
    fns["ce"] = lambda sl, n: cross_entropy(s[sl], labels[sl], 0.1, normalizer=n)
    fns["topk"] = lambda sl, n: sparse_topk_kl(
        s[sl], topk[0][sl], topk[1][sl], mask=mask[sl], temperature=2.0, normalizer=n
    )
    fns["combined"] = lambda sl, n: _combined(s[sl], t[sl], labels[sl], mask[sl], n)

    for name, fn in fns.items():
        full = fn(slice(None), None)
        full_grad = _grad(full, s)
        parts = [fn(slice(a, b), total_tokens) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        accumulated = torch.zeros_like(s)
        for part in parts:
            accumulated += _grad(part, s)
        torch.testing.assert_close(sum(parts), full, msg=name)
        torch.testing.assert_close(accumulated, full_grad, msg=name)


# ----------------------------------------------------------------------------------------------------------
# Config and weighted combination
# ----------------------------------------------------------------------------------------------------------


def test_kd_loss_weights_validation() -> None:
    w = KDLossWeights()
    assert (w.kd, w.ce, w.hidden, w.divergence, w.temperature) == (1.0, 0.0, 0.0, "forward_kl", 1.0)
    assert KDLossWeights(divergence="jsd", jsd_beta=0.2).divergence_kwargs() == {"beta": 0.2}
    assert KDLossWeights(divergence="skew_reverse_kl", skew_alpha=0.3).divergence_kwargs() == {"alpha": 0.3}
    assert KDLossWeights(divergence="reverse_kl").divergence_kwargs() == {}
    for bad in (
        {"kd": -1.0},
        {"ce": float("nan")},
        {"hidden": float("inf")},
        {"temperature": 0.0},
        {"divergence": "tvd"},
        {"jsd_beta": 1.2},
        {"skew_alpha": -0.1},
        {"hidden_kind": "l1"},
        {"unknown": 1},
    ):
        with pytest.raises(ValidationError):
            KDLossWeights(**bad)


def test_combined_loss_is_the_weighted_sum_of_terms() -> None:
    s = _rand(2, 4, 7, seed=60).requires_grad_(True)
    t = _rand(2, 4, 7, seed=61)
    labels = torch.tensor([[1, 2, -100, 4], [-100, 0, 6, 6]])
    proj = HiddenProjector(5, 3, {1: 0}).double()
    s_hid = [_rand(2, 4, 5, seed=62), _rand(2, 4, 5, seed=63).requires_grad_(True)]
    t_hid = [_rand(2, 4, 3, seed=64)]
    weights = KDLossWeights(
        kd=0.6,
        ce=0.4,
        hidden=0.1,
        divergence="skew_kl",
        skew_alpha=0.2,
        temperature=1.5,
        label_smoothing=0.05,
        hidden_kind="cosine",
    )
    total, terms = combined_kd_loss(
        s,
        weights,
        teacher_logits=t,
        labels=labels,
        student_hidden=s_hid,
        teacher_hidden=t_hid,
        projector=proj,
    )
    mask = labels != -100
    kd = skew_kl(s, t, alpha=0.2, mask=mask, temperature=1.5)
    ce = cross_entropy(s, labels, label_smoothing=0.05)
    hid = hidden_state_loss(s_hid, t_hid, proj, kind="cosine", mask=mask)
    want = 0.6 * kd + 0.4 * ce + 0.1 * hid
    torch.testing.assert_close(total, want)
    assert set(terms) == {"kd", "ce", "hidden", "total"}
    assert all(isinstance(v, float) for v in terms.values())
    assert terms["kd"] == pytest.approx(float(kd.detach()))
    assert terms["ce"] == pytest.approx(float(ce.detach()))
    assert terms["hidden"] == pytest.approx(float(hid.detach()))
    assert terms["total"] == pytest.approx(float(want.detach()))
    torch.testing.assert_close(_grad(total, s), _grad(want, s))


def test_combined_loss_with_topk_teacher_and_errors() -> None:
    s = _rand(6, 9, seed=65).requires_grad_(True)
    lp, ids = F.log_softmax(_rand(6, 9, seed=66), -1).topk(4, -1)
    total, terms = combined_kd_loss(
        s, KDLossWeights(temperature=2.0), teacher_topk_ids=ids, teacher_topk_logprobs=lp
    )
    torch.testing.assert_close(total, sparse_topk_kl(s, ids, lp, temperature=2.0))
    assert terms["ce"] == 0.0 and terms["hidden"] == 0.0
    with pytest.raises(ValueError):
        combined_kd_loss(
            s, KDLossWeights(divergence="reverse_kl"), teacher_topk_ids=ids, teacher_topk_logprobs=lp
        )
    with pytest.raises(ValueError):
        combined_kd_loss(s, KDLossWeights())
    with pytest.raises(ValueError):
        combined_kd_loss(s, KDLossWeights(kd=0.0, ce=1.0))
    with pytest.raises(ValueError):
        combined_kd_loss(s, KDLossWeights(kd=0.0, hidden=1.0))
    # kd=0 and ce only: no teacher needed
    labels = torch.tensor([0, 1, 2, -100, 4, 5])
    ce_only, ce_terms = combined_kd_loss(s, KDLossWeights(kd=0.0, ce=1.0), labels=labels)
    torch.testing.assert_close(ce_only, cross_entropy(s, labels))
    assert ce_terms["kd"] == 0.0 and ce_terms["hidden"] == 0.0  # terms with weight 0 report 0.0
    # bf16 logits: the loss is accumulated in float32
    bf16_total, _ = combined_kd_loss(s.detach().bfloat16(), KDLossWeights(kd=0.0, ce=1.0), labels=labels)
    assert bf16_total.dtype == torch.float32
