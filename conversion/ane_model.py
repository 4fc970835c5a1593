"""An Apple Neural Engine friendly rewrite of the Distillery student, built from its weights.

Follows Apple's "Deploying Transformers on the Apple Neural Engine" (ml-ane-transformers):

* activations live in the (B, C, 1, S) layout and every linear layer is a 1x1 ``Conv2d``;
* attention is split per head; K is transposed once per layer and the two products use the einsum
  forms ``bchq,bkhc->bkhq`` and ``bkhq,bchk->bchq`` (other forms add transposes and reshapes);
* masks are additive float tensors in the (1, S_k, 1, S_q) layout of the attention weights;
* grouped-query attention repeats each key/value head explicitly (no ``enable_gqa``);
* the lm_head is split into chunks of at most :data:`ANE_MAX_DIM` rows along the vocabulary;
* RMSNorm is fp16-safe and becomes one fused ``layer_norm`` op (:class:`Fp16SafeRMSNorm`): one fp16
  rounding per norm instead of six, which brought the trained ``make distill`` student's fp16 logits
  error from 4.8e-3 to 2.9e-3 (relative to the largest logit).

Further exact rewrites: the attention scale ``1/sqrt(head_dim)`` is folded into the query weights,
RoPE's ``rotate_half`` (a signed permutation) is folded into extra projection rows, q/k/v share one
convolution and gate/up share another.

Two modules are converted: :class:`AnePrefill` (stateless: a whole sequence at positions 0..S-1) and
:class:`AneStatefulDecoder` (a chunk of S new tokens at a position, KV cache in registered buffers that
Core ML turns into states). :class:`PlainPrefill` and :class:`PlainStatefulDecoder` wrap the
student's own modules with the same inputs and outputs (the ``--no-ane`` baseline).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.model import Student, apply_rope, repeat_kv, rope_cos_sin
from training.model_config import ModelConfig

ANE_MAX_DIM = 16384
"""Largest tensor dimension the Neural Engine accepts."""

MASK_VALUE = -1e4
"""Additive mask value for disallowed keys: exp(-1e4) is 0 in fp16 and far from fp16 overflow."""

STATE_ALIGNMENT = 32
"""Cache lengths are multiples of this (the Neural Engine pads its innermost axis to 64 bytes)."""


@dataclass(frozen=True)
class AneConfig:
    """Shape choices of the rewrite.

    lm_head_chunk: rows of each lm_head chunk (1..16384); cache_len: KV cache length of the stateful
    decoder, a positive multiple of 32; cache_dtype: dtype of the cache buffers (fp16 for Core ML);
    attention: ``split`` (one einsum pair per head, ml-ane-transformers) or ``fused`` (one
    ``scaled_dot_product_attention`` per layer, which Core ML turns into its iOS18 fused op).
    """

    lm_head_chunk: int = ANE_MAX_DIM
    cache_len: int = 256
    cache_dtype: torch.dtype = torch.float16
    attention: str = "split"

    def __post_init__(self) -> None:
        if not 1 <= self.lm_head_chunk <= ANE_MAX_DIM:
            raise ValueError(f"lm_head_chunk must be in [1, {ANE_MAX_DIM}], got {self.lm_head_chunk}")
        if self.cache_len <= 0 or self.cache_len % STATE_ALIGNMENT:
            raise ValueError(f"cache_len must be a positive multiple of {STATE_ALIGNMENT}, got {self.cache_len}")
        if self.cache_dtype not in (torch.float16, torch.float32):
            raise ValueError(f"cache_dtype must be float16 or float32, got {self.cache_dtype}")
        if self.attention not in ("split", "fused"):
            raise ValueError(f"attention must be 'split' or 'fused', got {self.attention!r}")


# ---- masks ----------------------------------------------------------------------------------------

def prefill_mask(length: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Causal additive mask (1, S_k, 1, S_q) for positions 0..S-1: 0 where key <= query, else -1e4."""
    return decode_mask(0, length, length, dtype)


def decode_mask(position: int, length: int, cache_len: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Additive mask (1, cache_len, 1, S) for S new tokens at ``position``: a query at position p + j sees
    cache slots 0..p + j."""
    keys = torch.arange(cache_len)[:, None]
    queries = position + torch.arange(length)[None, :]
    allowed = keys <= queries
    mask = torch.where(allowed, torch.zeros((), dtype=dtype), torch.full((), MASK_VALUE, dtype=dtype))
    return mask[None, :, None, :]


# ---- building blocks ------------------------------------------------------------------------------

LAYER_NORM_EPS = 2.0**-24
"""epsilon of the fused ``layer_norm``: the smallest fp16 subnormal, so that it survives the fp16 cast
(with 0 the add disappears and coremltools no longer fuses the norm). The variance it is added to is at
least NORM_HEADROOM^2 / (C + 1) (the largest scaled channel is NORM_HEADROOM), so it changes the result
by at most 2^-24 * (C + 1) / (2 * NORM_HEADROOM^2) relative: 1.1e-6 at C = 576, 3.9e-6 at C = 2048
(without the headroom, 1.7e-5 at C = 576, which the fp32 rewrite check's 1e-5 cannot allow)."""

NORM_HEADROOM = 4.0
"""Largest magnitude of the scaled channels in :class:`Fp16SafeRMSNorm` (a power of two: scaling by it is
exact in fp16); squares stay at most 16, far from fp16 overflow."""


class Fp16SafeRMSNorm(nn.Module):
    """RMSNorm over channels of (B, C, 1, S) as one fused ``layer_norm``, safe from fp16 overflow.

    With the per-token scale ``s = max(max_c |x|, sqrt(eps)) / h`` (h = :data:`NORM_HEADROOM`),
    ``y = x / s`` (so |y| <= h) and ``t = sqrt(C * eps) / s``, the C + C + 1 + 1 channels
    ``z = [y, -y, t, -t]`` have mean exactly 0 and variance ``C / (C + 1) * (mean(y^2) + eps / s^2)``, so

        layer_norm(z)[:C] = sqrt((C + 1) / C) * x * rsqrt(mean(x^2) + eps)

    and the student's RMSNorm is the first C channels of ``layer_norm(z)`` with
    ``gamma = weight * sqrt(C / (C + 1))`` (up to the fused op's own epsilon, :data:`LAYER_NORM_EPS`).
    Every intermediate lies in [-h, h] and squares in [0, h^2] (no fp16 overflow at any |x|), and the mean/variance/rsqrt/scale/gamma chain is one op (coremltools fuses this BC1S
    pattern into ``layer_norm`` with axes [1], the form in Apple's ml-ane-transformers): one fp16
    rounding where an unfused RMSNorm has six. ``beta`` is 0 on the C kept channels; it is 1 on the
    others only so that coremltools does not drop the ``add`` and miss the fusion.
    """

    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps
        # Tensors divided by tensors: ``float / tensor`` would trace as reciprocal, which Core ML lowers
        # to ``1 / (x + 1e-4)``.
        self.register_buffer("root_eps", torch.tensor(math.sqrt(eps)), persistent=False)
        self.register_buffer("root_c_eps", torch.tensor(math.sqrt(hidden_size * eps)), persistent=False)
        beta = torch.ones(2 * hidden_size + 2)
        beta[:hidden_size] = 0.0
        self.register_buffer("beta", beta.view(1, -1, 1, 1), persistent=False)

    def gamma(self) -> Tensor:
        """The fused op's gamma (1, 2C + 2, 1, 1): the weight scaled by sqrt(C / (C + 1)), then ones."""
        c = self.hidden_size
        scaled = self.weight * math.sqrt(c / (c + 1))
        return torch.cat((scaled, torch.ones(c + 2, dtype=scaled.dtype))).view(1, -1, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, 1, S) -> (B, C, 1, S)."""
        scale = torch.maximum(x.abs().amax(dim=1, keepdim=True), self.root_eps) * (1.0 / NORM_HEADROOM)  # (B,1,1,S)
        y = x / scale  # |y| <= NORM_HEADROOM
        t = self.root_c_eps / scale
        z = torch.cat((y, -y, t, -t), dim=1)  # (B, 2C + 2, 1, S), mean exactly 0
        centered = z - z.mean(dim=1, keepdim=True)
        variance = (centered * centered).mean(dim=1, keepdim=True)
        normed = centered * torch.rsqrt(variance + LAYER_NORM_EPS)
        return ((normed + self.beta) * self.gamma())[:, : self.hidden_size]


def rotate_half_rows(weight: Tensor, heads: int, head_dim: int) -> Tensor:
    """Rows of a projection so that ``rotate_half_rows(W) @ x == rotate_half(W @ x)`` per head.

    weight: (heads * head_dim, ...) -> same shape; within each head rows (a, b) become (-b, a).
    """
    w = weight.reshape(heads, head_dim, *weight.shape[1:])
    half = head_dim // 2
    return torch.cat((-w[:, half:], w[:, :half]), dim=1).reshape(weight.shape)


def conv1x1(weight: Tensor, bias: Tensor | None) -> nn.Conv2d:
    """A 1x1 ``Conv2d`` computing ``weight @ x`` (weight (out, in)) on (B, in, 1, S)."""
    conv = nn.Conv2d(weight.shape[1], weight.shape[0], kernel_size=1, bias=bias is not None)
    with torch.no_grad():
        conv.weight.copy_(weight[:, :, None, None])
        if bias is not None:
            conv.bias.copy_(bias)
    return conv


def rope_tables(config: ModelConfig, positions: int, inv_freq: Tensor) -> tuple[Tensor, Tensor]:
    """cos/sin tables (n_heads * head_dim, 1, positions) in fp32, tiled over heads (student's RoPE)."""
    pos = torch.arange(positions)[None, :]
    cos, sin = rope_cos_sin(pos, inv_freq.float(), torch.float32)  # (1, P, D) each

    def tile(t: Tensor) -> Tensor:
        return t[0].t().repeat(config.num_attention_heads, 1)[:, None, :].contiguous()

    return tile(cos), tile(sin)


class AneAttention(nn.Module):
    """Grouped-query attention in the (B, C, 1, S) layout, one einsum pair per head."""

    def __init__(self, config: ModelConfig, source: nn.Module, fused: bool = False) -> None:
        super().__init__()
        d = config.head_dim
        assert d is not None
        self.n_heads, self.n_kv, self.head_dim = config.num_attention_heads, config.num_key_value_heads, d
        self.q_dim, self.kv_dim = self.n_heads * d, self.n_kv * d
        self.fused = fused
        scale = 1.0 if fused else 1.0 / math.sqrt(d)  # the fused op applies 1/sqrt(D) itself
        wq, wk, wv = source.q_proj.weight * scale, source.k_proj.weight, source.v_proj.weight
        weight = torch.cat((wq, rotate_half_rows(wq, self.n_heads, d), wk,
                            rotate_half_rows(wk, self.n_kv, d), wv))
        bias = None
        if source.q_proj.bias is not None:
            bq, bk, bv = source.q_proj.bias * scale, source.k_proj.bias, source.v_proj.bias
            bias = torch.cat((bq, rotate_half_rows(bq, self.n_heads, d), bk,
                              rotate_half_rows(bk, self.n_kv, d), bv))
        self.qkv_proj = conv1x1(weight.detach(), None if bias is None else bias.detach())
        o = source.o_proj
        self.o_proj = conv1x1(o.weight.detach(), None if o.bias is None else o.bias.detach())

    def project(self, x: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x: (1, C, 1, S), cos/sin: (n_heads * D, 1, S) -> rotated q (1, H*D, 1, S), rotated k and v
        (1, KV*D, 1, S). With split attention q already carries the 1/sqrt(D) scale."""
        q, q_rot, k, k_rot, v = torch.split(
            self.qkv_proj(x), [self.q_dim, self.q_dim, self.kv_dim, self.kv_dim, self.kv_dim], dim=1)
        q = q * cos + q_rot * sin
        k = k * cos[: self.kv_dim] + k_rot * sin[: self.kv_dim]
        return q, k, v

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        """q: (1, H*D, 1, S_q); k, v: (1, KV*D, 1, S_k); mask (1, S_k, 1, S_q) -> (1, C, 1, S_q).

        With fused attention pass :func:`fused_bias` of the mask instead (computed once per forward)."""
        if self.fused:
            return self._attend_fused(q, k, v, mask)
        heads_q = q.split(self.head_dim, dim=1)  # H x (1, D, 1, S_q)
        heads_k = k.transpose(1, 3).split(self.head_dim, dim=3)  # KV x (1, S_k, 1, D)
        heads_v = v.split(self.head_dim, dim=1)  # KV x (1, D, 1, S_k)
        groups = self.n_heads // self.n_kv
        outs = []
        for h, qh in enumerate(heads_q):
            kv = h // groups  # explicit GQA repeat: query head h reads key/value head h // groups
            weights = torch.einsum("bchq,bkhc->bkhq", qh, heads_k[kv]) + mask  # (1, S_k, 1, S_q)
            weights = weights.softmax(dim=1)
            outs.append(torch.einsum("bkhq,bchk->bchq", weights, heads_v[kv]))  # (1, D, 1, S_q)
        return self.o_proj(torch.cat(outs, dim=1))

    def _attend_fused(self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
        """One SDPA over groups: q as (1, KV, G, S_q, D), k and v as (1, KV, 1, S_k, D) (query head h reads
        key/value head h // G, broadcast over G); bias (1, 1, 1, S_q, S_k) -> (1, C, 1, S_q)."""
        d, groups, length = self.head_dim, self.n_heads // self.n_kv, q.shape[3]
        qg = q.reshape(1, self.n_kv, groups, d, length).transpose(3, 4)
        kg = k.reshape(1, self.n_kv, 1, d, k.shape[3]).transpose(3, 4)
        vg = v.reshape(1, self.n_kv, 1, d, v.shape[3]).transpose(3, 4)
        out = F.scaled_dot_product_attention(qg, kg, vg, attn_mask=bias)  # (1, KV, G, S_q, D)
        return self.o_proj(out.transpose(3, 4).reshape(1, self.q_dim, 1, length))


def fused_bias(mask: Tensor) -> Tensor:
    """The additive mask (1, S_k, 1, S_q) in the fused attention layout (1, 1, 1, S_q, S_k)."""
    return mask[:, :, 0, :].transpose(1, 2)[:, None, None]


class AneMLP(nn.Module):
    """SwiGLU with gate and up in one 1x1 convolution: (1, C, 1, S) -> (1, C, 1, S)."""

    def __init__(self, source: nn.Module) -> None:
        super().__init__()
        self.inter = source.gate_proj.weight.shape[0]
        weight = torch.cat((source.gate_proj.weight, source.up_proj.weight)).detach()
        bias = None
        if source.gate_proj.bias is not None:
            bias = torch.cat((source.gate_proj.bias, source.up_proj.bias)).detach()
        self.gate_up_proj = conv1x1(weight, bias)
        d = source.down_proj
        self.down_proj = conv1x1(d.weight.detach(), None if d.bias is None else d.bias.detach())

    def forward(self, x: Tensor) -> Tensor:
        gate, up = torch.split(self.gate_up_proj(x), [self.inter, self.inter], dim=1)
        return self.down_proj(F.silu(gate) * up)


class AneBlock(nn.Module):
    """Pre-norm decoder layer in the (B, C, 1, S) layout."""

    def __init__(self, config: ModelConfig, source: nn.Module, fused: bool = False) -> None:
        super().__init__()
        self.input_layernorm = _norm_from(source.input_layernorm, config)
        self.self_attn = AneAttention(config, source.self_attn, fused)
        self.post_attention_layernorm = _norm_from(source.post_attention_layernorm, config)
        self.mlp = AneMLP(source.mlp)


def _norm_from(source: nn.Module, config: ModelConfig) -> Fp16SafeRMSNorm:
    norm = Fp16SafeRMSNorm(config.hidden_size, config.rms_norm_eps)
    with torch.no_grad():
        norm.weight.copy_(source.weight)
    return norm


class ChunkedLMHead(nn.Module):
    """lm_head as 1x1 convolutions of at most ``chunk`` output rows each: (1, C, 1, S) -> (1, S, V)."""

    def __init__(self, weight: Tensor, chunk: int) -> None:
        super().__init__()
        self.chunks = nn.ModuleList(conv1x1(part.detach(), None) for part in weight.split(chunk, dim=0))
        self.offsets = [i * chunk for i in range(len(self.chunks))]

    def forward(self, x: Tensor) -> Tensor:
        logits = torch.cat([conv(x) for conv in self.chunks], dim=1)  # (1, V, 1, S)
        return logits.squeeze(2).transpose(1, 2)

    def rows(self, ids: Tensor) -> Tensor:
        """Rows of the head's weight for token ids (S,) -> (S, C, 1, 1), read from the chunks' own
        weights (a tied embedding then shares its constant with the head)."""
        if len(self.chunks) == 1:
            return torch.index_select(self.chunks[0].weight, 0, ids)
        picked: Tensor | None = None
        for offset, conv in zip(self.offsets, self.chunks, strict=True):
            size = conv.weight.shape[0]
            local = ids - offset
            inside = ((local >= 0) & (local < size)).to(conv.weight.dtype)[:, None, None, None]
            part = torch.index_select(conv.weight, 0, local.clamp(0, size - 1)) * inside
            picked = part if picked is None else picked + part
        assert picked is not None
        return picked


class AneCore(nn.Module):
    """Embedding, decoder layers, final norm and chunked head shared by prefill and decode.

    A tied embedding is looked up in the head's chunk weights (one stored copy, plus one transpose);
    an untied one is stored as (C, V) so that gathering columns yields (C, S) without a transpose.
    """

    def __init__(self, student: Student, config: AneConfig) -> None:
        super().__init__()
        cfg = student.config
        self.model_config = cfg
        self.tied = cfg.tie_word_embeddings
        self.fused_attention = config.attention == "fused"
        self.layers = nn.ModuleList(AneBlock(cfg, layer, self.fused_attention) for layer in student.model.layers)
        self.norm = _norm_from(student.model.norm, cfg)
        self.lm_head = ChunkedLMHead(student.lm_head.weight, config.lm_head_chunk)
        if not self.tied:
            self.embed_columns = nn.Parameter(student.model.embed_tokens.weight.detach().t().contiguous())

    def attention_mask(self, mask: Tensor) -> Tensor:
        """The additive mask (1, S_k, 1, S_q) in the layout the layers' attention takes."""
        return fused_bias(mask) if self.fused_attention else mask

    def embed(self, input_ids: Tensor) -> Tensor:
        """input_ids (1, S) -> hidden (1, C, 1, S)."""
        if self.tied:
            return self.lm_head.rows(input_ids[0]).permute(2, 1, 3, 0)
        return torch.index_select(self.embed_columns, 1, input_ids[0]).unsqueeze(0).unsqueeze(2)


def layout_budget(config: ModelConfig, attention: str = "split") -> dict[str, int]:
    """Transposes and reshapes the rewrite needs. Split attention: one K transpose per layer, one for the
    logits and one after a tied embedding lookup; no reshapes. Fused attention: q, k, v and the output
    move to and from the op's (..., S, D) layout (4 transposes and 4 reshapes a layer) and the mask once.
    The lint flags programs that use more."""
    outside = 1 + int(config.tie_word_embeddings)
    if attention == "fused":
        return {"transpose": 4 * config.num_hidden_layers + outside + 1, "reshape": 4 * config.num_hidden_layers}
    return {"transpose": config.num_hidden_layers + outside, "reshape": 0}


class AnePrefill(nn.Module):
    """Stateless forward over a whole sequence: input_ids (1, S) int32, mask (1, S, 1, S) -> logits
    (1, S, V). Positions are 0..S-1; S <= max_position_embeddings."""

    def __init__(self, student: Student, config: AneConfig | None = None) -> None:
        super().__init__()
        config = config or AneConfig()
        self.core = AneCore(student, config)
        cos, sin = rope_tables(student.config, student.config.max_position_embeddings, student.rope_inv_freq)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def hidden(self, input_ids: Tensor, mask: Tensor) -> Tensor:
        """input_ids (1, S), mask (1, S, 1, S) -> final-norm hidden states (1, C, 1, S)."""
        core = self.core
        x = core.embed(input_ids)
        length = input_ids.shape[1]
        cos, sin = self.rope_cos[:, :, :length], self.rope_sin[:, :, :length]
        mask = core.attention_mask(mask)
        for layer in core.layers:
            q, k, v = layer.self_attn.project(layer.input_layernorm(x), cos, sin)
            x = x + layer.self_attn.attend(q, k, v, mask)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return core.norm(x)

    def forward(self, input_ids: Tensor, mask: Tensor) -> Tensor:
        return self.core.lm_head(self.hidden(input_ids, mask))


class AneStatefulDecoder(nn.Module):
    """A chunk of S new tokens at ``position`` with an in-place KV cache.

    Inputs: input_ids (1, S) int32, position (1,) int32 (the first new token's position),
    mask (1, cache_len, 1, S) from :func:`decode_mask`. Output: logits (1, S, V).
    Buffers ``key_cache`` and ``value_cache`` (layers, KV*D, 1, cache_len) become Core ML states;
    slots ``position .. position + S - 1`` are overwritten before attention reads the cache.
    """

    def __init__(self, student: Student, config: AneConfig | None = None) -> None:
        super().__init__()
        config = config or AneConfig()
        cfg = student.config
        assert cfg.head_dim is not None
        self.core = AneCore(student, config)
        self.cache_len = config.cache_len
        cos, sin = rope_tables(cfg, config.cache_len, student.rope_inv_freq)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        shape = (cfg.num_hidden_layers, cfg.num_key_value_heads * cfg.head_dim, 1, config.cache_len)
        self.register_buffer("key_cache", torch.zeros(shape, dtype=config.cache_dtype))
        self.register_buffer("value_cache", torch.zeros(shape, dtype=config.cache_dtype))

    def reset_cache(self) -> None:
        """Zero both caches (a new sequence)."""
        self.key_cache.zero_()
        self.value_cache.zero_()

    def forward(self, input_ids: Tensor, position: Tensor, mask: Tensor) -> Tensor:
        core = self.core
        x = core.embed(input_ids)
        length = input_ids.shape[1]
        positions = torch.arange(length, dtype=torch.int32) + position
        cos = torch.index_select(self.rope_cos, 2, positions)
        sin = torch.index_select(self.rope_sin, 2, positions)
        start = position[0]
        end = start + length
        mask = core.attention_mask(mask)
        for i, layer in enumerate(core.layers):
            q, k, v = layer.self_attn.project(layer.input_layernorm(x), cos, sin)
            self.key_cache[i:i + 1, :, :, start:end] = k.to(self.key_cache.dtype)
            self.value_cache[i:i + 1, :, :, start:end] = v.to(self.value_cache.dtype)
            keys = self.key_cache[i:i + 1].to(x.dtype)
            values = self.value_cache[i:i + 1].to(x.dtype)
            x = x + layer.self_attn.attend(q, keys, values, mask)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return core.lm_head(core.norm(x))


# ---- the --no-ane baseline: the student's own modules behind the same interface --------------------

def _mask_to_bias(mask: Tensor) -> Tensor:
    """ANE mask (1, S_k, 1, S_q) -> attention bias (1, 1, S_q, S_k)."""
    return mask.squeeze(2).transpose(1, 2).unsqueeze(1)


class _PlainRope(nn.Module):
    """The student's RoPE tables precomputed in fp32 (an fp16 program cannot compute angles such as
    position * inv_freq accurately): (P, head_dim) each, looked up by position."""

    def __init__(self, student: Student, positions: int) -> None:
        super().__init__()
        cos, sin = rope_cos_sin(torch.arange(positions)[None], student.rope_inv_freq.float(), torch.float32)
        self.register_buffer("rope_cos", cos[0], persistent=False)
        self.register_buffer("rope_sin", sin[0], persistent=False)

    def forward(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """positions (S,) -> cos, sin (1, S, head_dim)."""
        return (torch.index_select(self.rope_cos, 0, positions)[None],
                torch.index_select(self.rope_sin, 0, positions)[None])


class PlainPrefill(nn.Module):
    """The student's modules as written, behind :class:`AnePrefill`'s inputs and outputs."""

    def __init__(self, student: Student) -> None:
        super().__init__()
        self.student = student
        self.rope = _PlainRope(student, student.config.max_position_embeddings)

    def forward(self, input_ids: Tensor, mask: Tensor) -> Tensor:
        s = self.student
        x = s.model.embed_tokens(input_ids)
        cos, sin = self.rope(torch.arange(input_ids.shape[1], dtype=torch.int32))
        bias = _mask_to_bias(mask)
        for layer in s.model.layers:
            x, _ = layer(x, cos, sin, bias, None)
        return s.lm_head(s.model.norm(x))


class PlainStatefulDecoder(nn.Module):
    """The student's modules with a (layers, KV, cache_len, D) in-place cache, behind
    :class:`AneStatefulDecoder`'s inputs and outputs."""

    def __init__(self, student: Student, config: AneConfig | None = None) -> None:
        super().__init__()
        config = config or AneConfig()
        cfg = student.config
        assert cfg.head_dim is not None
        self.student = student
        self.cache_len = config.cache_len
        self.rope = _PlainRope(student, config.cache_len)
        shape = (cfg.num_hidden_layers, cfg.num_key_value_heads, config.cache_len, cfg.head_dim)
        self.register_buffer("key_cache", torch.zeros(shape, dtype=config.cache_dtype))
        self.register_buffer("value_cache", torch.zeros(shape, dtype=config.cache_dtype))

    def reset_cache(self) -> None:
        """Zero both caches (a new sequence)."""
        self.key_cache.zero_()
        self.value_cache.zero_()

    def forward(self, input_ids: Tensor, position: Tensor, mask: Tensor) -> Tensor:
        s = self.student
        x = s.model.embed_tokens(input_ids)
        b, t, _ = x.shape
        cos, sin = self.rope(torch.arange(t, dtype=torch.int32) + position)
        bias = _mask_to_bias(mask)
        start = position[0]
        end = start + t
        for i, layer in enumerate(s.model.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = attn.q_proj(h).view(b, t, attn.n_heads, attn.head_dim).transpose(1, 2)
            k = attn.k_proj(h).view(b, t, attn.n_kv, attn.head_dim).transpose(1, 2)
            v = attn.v_proj(h).view(b, t, attn.n_kv, attn.head_dim).transpose(1, 2)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            self.key_cache[i:i + 1, :, start:end] = k.to(self.key_cache.dtype)
            self.value_cache[i:i + 1, :, start:end] = v.to(self.value_cache.dtype)
            groups = attn.n_heads // attn.n_kv
            keys = repeat_kv(self.key_cache[i:i + 1].to(x.dtype), groups)
            values = repeat_kv(self.value_cache[i:i + 1].to(x.dtype), groups)
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=bias)
            x = x + attn.o_proj(out.transpose(1, 2).reshape(b, t, attn.n_heads * attn.head_dim))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return s.lm_head(s.model.norm(x))
