"""Student/teacher model configuration, serialized as a Hugging Face Llama ``config.json``."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# transformers.LlamaConfig defaults for fields whose ModelConfig default differs (see from_hf_dict).
_HF_LLAMA_DEFAULTS: dict[str, Any] = {"tie_word_embeddings": False, "rms_norm_eps": 1e-6}


class ConfigError(ValueError):
    """A model configuration is invalid or uses a feature Distillery does not implement."""


@dataclass
class ModelConfig:
    """Decoder-only transformer shape (Llama family: GQA, RoPE, SwiGLU, RMSNorm).

    Field names are the Hugging Face ``LlamaConfig`` names so that ``to_hf_dict`` is a plain copy.
    """

    vocab_size: int = 512
    hidden_size: int = 128
    intermediate_size: int = 344
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int | None = None
    max_position_embeddings: int = 256
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = True
    attention_bias: bool = False
    mlp_bias: bool = False
    initializer_range: float = 0.02
    bos_token_id: int = 1
    eos_token_id: int = 2
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        # Check the sizes before deriving head_dim: num_attention_heads=0 (or a non-integer) must be a
        # ConfigError, not a ZeroDivisionError / TypeError from the modulo below.
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings"):
            value = getattr(self, name)
            if name == "head_dim" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ConfigError(
                    f"hidden_size={self.hidden_size} is not divisible by num_attention_heads="
                    f"{self.num_attention_heads}; set head_dim explicitly"
                )
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"num_attention_heads={self.num_attention_heads} must be a multiple of "
                f"num_key_value_heads={self.num_key_value_heads} (grouped-query attention)"
            )
        if self.head_dim % 2:
            raise ConfigError(f"head_dim={self.head_dim} must be even for rotary embeddings")
        if self.rms_norm_eps <= 0 or self.rope_theta <= 0:
            raise ConfigError("rms_norm_eps and rope_theta must be positive")
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"{name} must be an integer token id, got {value!r}")
            if not 0 <= value < self.vocab_size:
                raise ConfigError(f"{name}={value} is outside the vocabulary (size {self.vocab_size})")

    @property
    def num_kv_groups(self) -> int:
        """How many query heads share one key/value head."""
        return self.num_attention_heads // self.num_key_value_heads

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor a :class:`training.model.Student` of this config holds, by Hugging Face name, with its
        shape (no tied ``lm_head.weight``): what a weights file must match, known without allocating."""
        h, i, d = self.hidden_size, self.intermediate_size, self.head_dim
        assert d is not None
        q, kv = self.num_attention_heads * d, self.num_key_value_heads * d
        shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (self.vocab_size, h),
                                              "model.norm.weight": (h,)}
        for layer in range(self.num_hidden_layers):
            pre = f"model.layers.{layer}"
            linears = {"self_attn.q_proj": (q, h), "self_attn.k_proj": (kv, h), "self_attn.v_proj": (kv, h),
                       "self_attn.o_proj": (h, q), "mlp.gate_proj": (i, h), "mlp.up_proj": (i, h),
                       "mlp.down_proj": (h, i)}
            for name, shape in linears.items():
                shapes[f"{pre}.{name}.weight"] = shape
                if self.attention_bias if name.startswith("self_attn") else self.mlp_bias:
                    shapes[f"{pre}.{name}.bias"] = (shape[0],)
            shapes[f"{pre}.input_layernorm.weight"] = (h,)
            shapes[f"{pre}.post_attention_layernorm.weight"] = (h,)
        if not self.tie_word_embeddings:
            shapes["lm_head.weight"] = (self.vocab_size, h)
        return shapes

    def to_hf_dict(self) -> dict[str, Any]:
        """The Hugging Face ``LlamaConfig`` dictionary (what ``config.json`` holds)."""
        data = dataclasses.asdict(self)
        data.update(
            model_type="llama",
            architectures=["LlamaForCausalLM"],
            hidden_act="silu",
            attention_dropout=0.0,
            rope_scaling=None,
            torch_dtype="float32",
            use_cache=True,
        )
        return data

    @classmethod
    def from_hf_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from a Hugging Face Llama config dict; refuses features this model does not implement."""
        if not isinstance(data, dict):
            raise ConfigError(f"a model config must be a JSON object of settings, got {type(data).__name__}")
        model_type = data.get("model_type", "llama")
        if model_type != "llama":
            raise ConfigError(f"config.json has model_type={model_type!r}; Distillery loads Llama models only")
        if data.get("hidden_act", "silu") != "silu":
            raise ConfigError(f"hidden_act={data['hidden_act']!r} is not supported (only 'silu' / SwiGLU)")
        if data.get("rope_scaling"):
            raise ConfigError(f"rope_scaling={data['rope_scaling']!r} is not supported (plain RoPE only)")
        rope_params = data.get("rope_parameters")
        if rope_params is not None and not isinstance(rope_params, dict):
            raise ConfigError(f"rope_parameters must be an object, got {rope_params!r}")
        if rope_params and rope_params.get("rope_type", "default") != "default":
            raise ConfigError(f"rope_parameters={rope_params!r} is not supported (plain RoPE only)")
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in fields}
        # A key missing from (or null in) config.json means what it means to transformers' LlamaConfig,
        # not this dataclass's student defaults: untied head, multi-head attention, eps 1e-6. Otherwise a
        # hand-written config without tie_word_embeddings would silently tie (and drop) a trained lm_head.
        for key, default in _HF_LLAMA_DEFAULTS.items():
            if kwargs.get(key) is None:
                kwargs[key] = default
        if kwargs.get("num_key_value_heads") is None:
            kwargs.pop("num_key_value_heads", None)
            if "num_attention_heads" in kwargs:
                kwargs["num_key_value_heads"] = kwargs["num_attention_heads"]
        if "rope_theta" not in kwargs and rope_params and "rope_theta" in rope_params:
            kwargs["rope_theta"] = rope_params["rope_theta"]
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if isinstance(kwargs.get(key), list):
                kwargs[key] = kwargs[key][0]
            if kwargs.get(key) is None:
                kwargs.pop(key, None)
        return cls(**kwargs)

    def save(self, path: Path) -> None:
        """Write ``config.json`` (Hugging Face format)."""
        Path(path).write_text(json.dumps(self.to_hf_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> ModelConfig:
        """Read a Hugging Face Llama ``config.json``."""
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a JSON object of model settings, not a {type(data).__name__}")
        return cls.from_hf_dict(data)
