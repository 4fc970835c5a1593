"""The Distillery transformer: a Llama-architecture decoder (GQA, RoPE, SwiGLU, RMSNorm).

Module and parameter names equal Hugging Face ``LlamaForCausalLM`` names, so ``state_dict()`` keys are
the keys of a Hugging Face ``model.safetensors``. The same class builds students and teachers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.model_config import ModelConfig

# One layer's cache: keys and values, each (B, n_kv_heads, T_past, head_dim).
LayerCache = tuple[Tensor, Tensor]


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in fp32: ``x * rsqrt(mean(x^2) + eps) * weight``."""

    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        """x: (..., H) -> (..., H); normalised in fp32, cast back to x's dtype, then scaled by ``weight``
        (as in Hugging Face, the result has x's dtype when weight does, e.g. a bf16 model)."""
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


def rope_inverse_frequencies(head_dim: int, theta: float) -> Tensor:
    """(head_dim/2,) inverse frequencies ``theta^(-2i/d)`` (Hugging Face default RoPE)."""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))


def rope_cos_sin(position_ids: Tensor, inv_freq: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos/sin tables for positions (B, T) -> two (B, T, head_dim) tensors (frequencies repeated twice)."""
    freqs = position_ids.float()[..., None] * inv_freq[None, None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _tracing() -> bool:
    """True while torch.jit traces or torch.export / ONNX / Core ML exports the model: they keep the explicit
    attention bias (``is_causal`` is not supported by every converter)."""
    return torch.jit.is_tracing() or torch.compiler.is_exporting()


def rotate_half(x: Tensor) -> Tensor:
    """Split the last dim in halves (a, b) and return (-b, a)."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x (B, heads, T, D) by position tables cos/sin (B, T, D)."""
    return x * cos[:, None] + rotate_half(x) * sin[:, None]


def repeat_kv(x: Tensor, groups: int) -> Tensor:
    """(B, n_kv, T, D) -> (B, n_kv * groups, T, D), each kv head repeated for its query group.

    Explicit ``repeat_interleave`` (not SDPA's ``enable_gqa``) so ONNX and CoreML exporters handle it.
    """
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def build_attention_bias(
    attention_mask: Tensor | None, q_len: int, kv_len: int, dtype: torch.dtype, device: torch.device,
    batch: int,
) -> Tensor:
    """Additive attention bias (B, 1, q_len, kv_len): 0 where allowed, dtype-min where masked.

    Queries are the last ``q_len`` of ``kv_len`` positions (a KV cache holds the first ones). A query
    attends to keys at or before its own position that ``attention_mask`` (B, kv_len; 1 = real token)
    marks as real. A query row with no allowed key (a left-pad query) attends to itself only, so no row
    is all-masked and no NaN appears; such rows are padding and are never used.
    """
    q_pos = torch.arange(kv_len - q_len, kv_len, device=device)
    k_pos = torch.arange(kv_len, device=device)
    allowed = (k_pos[None, :] <= q_pos[:, None])[None, None]  # (1, 1, q, k)
    if attention_mask is not None:
        allowed = allowed & attention_mask[:, None, None, :].bool()
    allowed = allowed.expand(batch, 1, q_len, kv_len)
    self_key = k_pos[None, :] == q_pos[:, None]
    empty = ~allowed.any(-1, keepdim=True)
    allowed = allowed | (empty & self_key[None, None])
    zero = torch.zeros((), dtype=dtype, device=device)
    neg = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=device)
    return torch.where(allowed, zero, neg)


def block_causal_mask(sequence_ids: Tensor) -> Tensor:
    """Boolean attention mask (B, T, T) from ``sequence_ids`` (B, T): True where query i may attend key j.

    Allowed iff ``j <= i`` and both tokens belong to the same example (same non-zero id; packed rows
    number their examples 1, 2, ... and 0 marks padding). A padding query attends only to itself, so no
    softmax row is empty (its output is ignored by the loss).
    """
    if sequence_ids.dim() != 2:
        raise ValueError(f"sequence_ids must be (B, T), got shape {tuple(sequence_ids.shape)}")
    width = sequence_ids.shape[1]
    same = sequence_ids[:, :, None] == sequence_ids[:, None, :]
    real = (sequence_ids != 0)[:, :, None] & (sequence_ids != 0)[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool, device=sequence_ids.device).tril()
    diagonal = torch.eye(width, dtype=torch.bool, device=sequence_ids.device)
    return (same & real & causal) | diagonal


def packed_position_ids(sequence_ids: Tensor) -> Tensor:
    """Positions (B, T) that restart at 0 for each example of packed rows (``sequence_ids`` (B, T), examples
    contiguous); padding (id 0) gets 0."""
    width = sequence_ids.shape[1]
    index = torch.arange(width, device=sequence_ids.device).expand_as(sequence_ids)
    starts = torch.ones_like(sequence_ids, dtype=torch.bool)
    starts[:, 1:] = sequence_ids[:, 1:] != sequence_ids[:, :-1]
    first = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=1).values
    return torch.where(sequence_ids != 0, index - first, torch.zeros_like(index))


class Attention(nn.Module):
    """Grouped-query self-attention with rotary position embeddings."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d = config.head_dim
        self.n_heads = config.num_attention_heads
        self.n_kv = config.num_key_value_heads
        self.head_dim = d
        self.q_proj = nn.Linear(config.hidden_size, self.n_heads * d, bias=config.attention_bias)
        self.k_proj = nn.Linear(config.hidden_size, self.n_kv * d, bias=config.attention_bias)
        self.v_proj = nn.Linear(config.hidden_size, self.n_kv * d, bias=config.attention_bias)
        self.o_proj = nn.Linear(self.n_heads * d, config.hidden_size, bias=config.attention_bias)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, bias: Tensor | None, past: LayerCache | None
    ) -> tuple[Tensor, LayerCache]:
        """x: (B, T, H); bias: (B, 1, T, T_past + T), or None for plain causal attention without a cache ->
        output (B, T, H) and the updated cache."""
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        if past is not None:
            k = torch.cat((past[0], k), dim=2)
            v = torch.cat((past[1], v), dim=2)
        groups = self.n_heads // self.n_kv
        if bias is None:  # plain causal attention (no padding, no cache, no packing): SDPA's causal kernel
            out = F.scaled_dot_product_attention(q, repeat_kv(k, groups), repeat_kv(v, groups), is_causal=True)
        else:
            out = F.scaled_dot_product_attention(q, repeat_kv(k, groups), repeat_kv(v, groups), attn_mask=bias)
        out = out.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim)
        return self.o_proj(out), (k, v)


class MLP(nn.Module):
    """SwiGLU feed-forward: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        h, i, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = nn.Linear(h, i, bias=bias)
        self.up_proj = nn.Linear(h, i, bias=bias)
        self.down_proj = nn.Linear(i, h, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, H) -> (B, T, H)."""
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    """Pre-norm transformer block: attention and SwiGLU, each with a residual connection."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.self_attn = Attention(config)
        self.mlp = MLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, bias: Tensor | None, past: LayerCache | None
    ) -> tuple[Tensor, LayerCache]:
        """(B, T, H) -> (B, T, H) and this layer's updated cache."""
        attn, cache = self.self_attn(self.input_layernorm(x), cos, sin, bias, past)
        x = x + attn
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x, cache


class Backbone(nn.Module):
    """Embeddings, decoder layers and final norm (Hugging Face ``LlamaModel`` names)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


@dataclass
class StudentOutput:
    """Everything one forward pass produces.

    logits: (B, T, V) or None when not requested; last_hidden_state: (B, T, H) after the final norm;
    hidden_states: the embedding output and each layer's output, num_layers + 1 tensors (B, T, H), when
    requested; past_key_values: one (k, v) pair per layer, each (B, n_kv, T_total, head_dim), when
    requested.
    """

    logits: Tensor | None
    last_hidden_state: Tensor
    hidden_states: list[Tensor] | None = None
    past_key_values: list[LayerCache] | None = None


class Student(nn.Module):
    """Decoder-only causal LM. ``student(input_ids)`` returns logits (B, T, V).

    Use :meth:`run` for hidden states, the KV cache or input embeddings (latent reasoning).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.model = Backbone(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.register_buffer(
            "rope_inv_freq", rope_inverse_frequencies(config.head_dim, config.rope_theta), persistent=False
        )
        self.reset_parameters()
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def reset_parameters(self) -> None:
        """Normal(0, initializer_range) for linear and embedding weights, output projections scaled by
        1/sqrt(2 * layers) (GPT-2 style), zeros for biases, ones for norms."""
        std = self.config.initializer_range
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                scale = 1.0 / math.sqrt(2 * self.config.num_hidden_layers) if name.endswith(
                    ("o_proj", "down_proj")) else 1.0
                nn.init.normal_(module.weight, mean=0.0, std=std * scale)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        """``.to(dtype)`` / ``.half()`` / ``.bfloat16()`` cast floating buffers too. RoPE frequencies rounded
        to 16 bits put positions off by up to ~pos * 2^-9 radians, so they are recomputed in fp32."""
        super()._apply(fn, recurse)
        if self.rope_inv_freq.dtype != torch.float32:
            self.rope_inv_freq = rope_inverse_frequencies(self.config.head_dim, self.config.rope_theta).to(
                self.rope_inv_freq.device
            )
        return self

    @property
    def device(self) -> torch.device:
        return self.model.embed_tokens.weight.device

    def num_parameters(self) -> int:
        """Number of distinct parameters (a tied head counted once)."""
        return sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())

    def run(
        self,
        input_ids: Tensor | None = None,
        *,
        inputs_embeds: Tensor | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        sequence_ids: Tensor | None = None,
        past_key_values: list[LayerCache] | None = None,
        use_cache: bool = False,
        output_hidden_states: bool = False,
        compute_logits: bool = True,
    ) -> StudentOutput:
        """Full forward pass.

        input_ids: (B, T) token ids, or inputs_embeds: (B, T, H) (exactly one of the two);
        attention_mask: (B, T_past + T), 1 for real tokens, 0 for (left) padding; position_ids: (B, T),
        by default counted from the cache length (or from the first real token when a mask is given);
        sequence_ids: (B, T) for packed rows (several examples a row, numbered 1, 2, ...; 0 = padding):
        attention stays causal within each example (:func:`block_causal_mask`) and default positions
        restart per example; ``attention_mask`` is then ignored and no cache may be passed;
        past_key_values: the cache from a previous call. Returns a :class:`StudentOutput`.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        x = self.model.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        b, t, _ = x.shape
        past_len = 0 if not past_key_values else past_key_values[0][0].shape[2]
        if sequence_ids is not None:
            if past_key_values:
                raise ValueError("packed rows (sequence_ids) cannot be combined with a KV cache")
            if position_ids is None:
                position_ids = packed_position_ids(sequence_ids)
            allowed = block_causal_mask(sequence_ids)[:, None]
            bias = torch.where(allowed, torch.zeros((), dtype=x.dtype, device=x.device),
                               torch.full((), torch.finfo(x.dtype).min, dtype=x.dtype, device=x.device))
        else:
            if position_ids is None:
                position_ids = default_position_ids(attention_mask, b, past_len, t, x.device)
            if attention_mask is None and past_len == 0 and not _tracing():
                bias = None  # causal SDPA: no (B, 1, T, T) bias tensor (same result; exporters keep the bias)
            else:
                bias = build_attention_bias(attention_mask, t, past_len + t, x.dtype, x.device, b)
        cos, sin = rope_cos_sin(position_ids, self.rope_inv_freq, x.dtype)
        hidden: list[Tensor] | None = [x] if output_hidden_states else None
        new_cache: list[LayerCache] = []
        for i, layer in enumerate(self.model.layers):
            x, cache = layer(x, cos, sin, bias, past_key_values[i] if past_key_values else None)
            new_cache.append(cache)
            if hidden is not None:
                hidden.append(x)
        x = self.model.norm(x)
        logits = self.lm_head(x) if compute_logits else None
        return StudentOutput(
            logits=logits,
            last_hidden_state=x,
            hidden_states=hidden,
            past_key_values=new_cache if use_cache else None,
        )

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """input_ids (B, T) -> logits (B, T, V)."""
        out = self.run(input_ids, attention_mask=attention_mask)
        assert out.logits is not None
        return out.logits

    # Persistence and generation live in their own modules; thin wrappers keep the API in one place.
    @classmethod
    def from_pretrained(cls, directory: str, *, verify: bool = True, map_location: str = "cpu") -> Student:
        """Load a Distillery artifact (manifest verified) or a plain Hugging Face Llama directory."""
        from training.artifact import load_student

        return load_student(directory, verify=verify, map_location=map_location)

    def save_pretrained(self, directory: str | Path, **kwargs: object) -> Path:
        """Write a verified student artifact; see :func:`training.artifact.save_student`."""
        from training.artifact import save_student

        return save_student(self, directory, **kwargs)  # type: ignore[arg-type]

    @torch.no_grad()
    def generate(self, input_ids: Tensor, **kwargs: object) -> Tensor:
        """Sample continuations; see :func:`training.generation.generate`."""
        from training.generation import generate

        return generate(self, input_ids, **kwargs)  # type: ignore[arg-type]


def default_position_ids(
    attention_mask: Tensor | None, batch: int, past_len: int, length: int, device: torch.device
) -> Tensor:
    """Positions (B, T) for the newest T tokens: counted over real tokens when a mask (B, past+T) is given
    (so left padding does not shift positions), else ``past_len .. past_len + T - 1``."""
    if attention_mask is None:
        return torch.arange(past_len, past_len + length, device=device).expand(batch, length)
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.clamp_min(0)[:, -length:]
