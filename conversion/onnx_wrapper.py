"""The flat-tensor, KV-cache interface of a :class:`~training.model.Student` for graph exporters.

Exporters need positional tensors in and a flat tuple of tensors out; the student takes a list of
``(key, value)`` pairs. :class:`CachedCausalLM` bridges the two with Hugging Face Optimum names:

inputs   ``input_ids`` (B, T) int64, ``attention_mask`` (B, P+T) int64 (1 = real token, 0 = left padding),
         ``past_key_values.{i}.key`` / ``past_key_values.{i}.value`` (B, n_kv, P, head_dim) float32
outputs  ``logits`` (B, T, V), ``present.{i}.key`` / ``present.{i}.value`` (B, n_kv, P+T, head_dim)

P may be 0 (prefill: feed empty (B, n_kv, 0, head_dim) tensors), so one graph serves prefill and decode.
Position ids are not an input: the student derives them from ``attention_mask`` (count of real tokens
before each position, as :func:`training.model.default_position_ids` does), so left padding can never be
paired with wrong positions. The same module is traced for the torch.export decode program.
"""

from __future__ import annotations

from torch import Tensor, nn

from training.model import LayerCache, Student

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
LOGITS = "logits"

# Symbolic dimension names written into the ONNX graph (Optimum's names).
BATCH = "batch_size"
SEQUENCE = "sequence_length"
PAST_SEQUENCE = "past_sequence_length"
TOTAL_SEQUENCE = "total_sequence_length"


def past_names(num_layers: int) -> list[str]:
    """``past_key_values.{i}.key``, ``past_key_values.{i}.value`` for each layer, in graph input order."""
    return [f"past_key_values.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]


def present_names(num_layers: int) -> list[str]:
    """``present.{i}.key``, ``present.{i}.value`` for each layer, in graph output order."""
    return [f"present.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]


def input_names(num_layers: int) -> list[str]:
    """All graph input names: ids, mask, then the flat past cache."""
    return [INPUT_IDS, ATTENTION_MASK, *past_names(num_layers)]


def output_names(num_layers: int) -> list[str]:
    """All graph output names: logits, then the flat present cache."""
    return [LOGITS, *present_names(num_layers)]


def pair_cache(flat: tuple[Tensor, ...] | list[Tensor]) -> list[LayerCache]:
    """[k0, v0, k1, v1, ...] -> [(k0, v0), (k1, v1), ...]; each tensor (B, n_kv, T, head_dim)."""
    if len(flat) % 2:
        raise ValueError(f"a flat KV cache holds key/value pairs; got {len(flat)} tensors")
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]


def flatten_cache(pairs: list[LayerCache]) -> list[Tensor]:
    """[(k0, v0), (k1, v1), ...] -> [k0, v0, k1, v1, ...]."""
    return [t for pair in pairs for t in pair]


class CachedCausalLM(nn.Module):
    """``forward(input_ids, attention_mask, *past) -> (logits, *present)`` over a student.

    input_ids: (B, T); attention_mask: (B, P+T); past: 2 * num_layers tensors (B, n_kv, P, head_dim),
    P >= 0. Returns logits (B, T, V) and 2 * num_layers present tensors (B, n_kv, P+T, head_dim).
    """

    def __init__(self, student: Student) -> None:
        super().__init__()
        self.student = student
        self.num_layers = student.config.num_hidden_layers

    def forward(self, input_ids: Tensor, attention_mask: Tensor, *past: Tensor) -> tuple[Tensor, ...]:
        if len(past) != 2 * self.num_layers:
            raise ValueError(f"expected {2 * self.num_layers} past tensors, got {len(past)}")
        out = self.student.run(
            input_ids, attention_mask=attention_mask, past_key_values=pair_cache(past), use_cache=True
        )
        assert out.logits is not None and out.past_key_values is not None
        return (out.logits, *flatten_cache(out.past_key_values))


class PrefillCausalLM(nn.Module):
    """``forward(input_ids, attention_mask) -> (logits, *present)``: a prompt with no cache yet.

    input_ids, attention_mask: (B, T). Returns logits (B, T, V) and 2 * num_layers present tensors
    (B, n_kv, T, head_dim).
    """

    def __init__(self, student: Student) -> None:
        super().__init__()
        self.student = student

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, ...]:
        out = self.student.run(input_ids, attention_mask=attention_mask, use_cache=True)
        assert out.logits is not None and out.past_key_values is not None
        return (out.logits, *flatten_cache(out.past_key_values))
