"""Write tiny Llama GGUF files (random weights, a tiny byte-level BPE tokenizer with its own special tokens
and a chat template) for tests, in the layout llama.cpp's converter writes and transformers' GGUF loader
reads. Nothing is downloaded.

    path = write_tiny_llama_gguf(tmp_path / "tiny.gguf", quant="Q8_0")

Layout (llama.cpp ``convert_hf_to_gguf.py``): tensors ``token_embd``, ``blk.N.attn_{norm,q,k,v,output}``,
``blk.N.ffn_{norm,gate,up,down}``, ``output_norm``, ``output`` (absent when tied); q/k rows permuted for
llama.cpp's interleaved RoPE (transformers' ``LlamaTensorProcessor`` undoes it); tokenizer metadata
``tokenizer.ggml.model=gpt2`` with tokens, token types (3 = control), merges, bos/eos ids and
``tokenizer.chat_template``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "The quick brown fox jumps over the lazy dog. What is the capital of France? Paris.",
    "Set a timer for five minutes, please. Sure: a timer for 5 minutes is running.",
    "Q: 7+3*2-4=? A: 3*2=6, 7+6=13, 13-4=9, so the answer is 9.",
    "Hello! How can I help you today? Tell me a short story about a robot who learns to paint.",
] * 10
CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France? Answer in one word."},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And 7+3*2-4?"},
]


@dataclass
class TinyLlamaSpec:
    """Shape of the tiny model (vocabulary size comes from the tokenizer)."""

    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 128
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False
    vocab_target: int = 400
    seed: int = 0
    extra: dict = field(default_factory=dict)


def tiny_bpe_tokenizer(vocab_size: int = 400) -> tuple[list[str], list[str], list[int]]:
    """(tokens in id order, merges "a b", token types) of a byte-level BPE trained on a small corpus.

    Ids 0..2 are the special tokens ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>`` (type 3, control);
    the 256 byte symbols follow, then merges (type 1, normal).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    vocab: dict[str, int] = model["vocab"]
    tokens = [""] * len(vocab)
    for token, index in vocab.items():
        tokens[index] = token
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    types = [3 if t in SPECIAL_TOKENS else 1 for t in tokens]
    return tokens, merges, types


def llama_cpp_permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row permutation (``LlamaModel.permute`` in convert_hf_to_gguf.py): HF's half-split
    RoPE layout to GGML's interleaved one. The inverse is transformers' ``_reverse_permute_weights``."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def random_llama_state(spec: TinyLlamaSpec, vocab_size: int) -> dict[str, np.ndarray]:
    """Random float32 weights under Hugging Face Llama names (norms near 1, projections ~N(0, 0.05))."""
    rng = np.random.default_rng(spec.seed)
    h, i = spec.hidden_size, spec.intermediate_size
    d = h // spec.num_attention_heads

    def normal(*shape: int, std: float = 0.05) -> np.ndarray:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    def norm() -> np.ndarray:
        return (1.0 + rng.standard_normal(h) * 0.1).astype(np.float32)

    state = {"model.embed_tokens.weight": normal(vocab_size, h, std=0.5), "model.norm.weight": norm()}
    for n in range(spec.num_hidden_layers):
        p = f"model.layers.{n}."
        state.update({
            p + "input_layernorm.weight": norm(),
            p + "post_attention_layernorm.weight": norm(),
            p + "self_attn.q_proj.weight": normal(spec.num_attention_heads * d, h, std=0.2),
            p + "self_attn.k_proj.weight": normal(spec.num_key_value_heads * d, h, std=0.2),
            p + "self_attn.v_proj.weight": normal(spec.num_key_value_heads * d, h),
            p + "self_attn.o_proj.weight": normal(h, spec.num_attention_heads * d),
            p + "mlp.gate_proj.weight": normal(i, h),
            p + "mlp.up_proj.weight": normal(i, h),
            p + "mlp.down_proj.weight": normal(h, i),
        })
    if not spec.tie_word_embeddings:
        state["lm_head.weight"] = normal(vocab_size, h, std=0.2)
    return state


_GGUF_NAMES = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def gguf_tensor_name(hf_name: str) -> str:
    """llama.cpp's name for a Hugging Face Llama tensor name."""
    fixed = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    if hf_name in fixed:
        return fixed[hf_name]
    _, _, layer, rest = hf_name.split(".", 3)
    module = rest.rsplit(".", 1)[0]
    return f"blk.{layer}.{_GGUF_NAMES[module]}.weight"


def write_tiny_llama_gguf(
    path: str | Path,
    *,
    spec: TinyLlamaSpec | None = None,
    quant: str | None = None,
    architecture: str = "llama",
    name: str = "tiny-llama",
) -> Path:
    """Write a tiny random Llama as GGUF to ``path`` and return it.

    quant: None (all F32) or a ``gguf.GGMLQuantizationType`` name such as ``"Q8_0"`` for every 2-D weight
    (quantized with ``gguf.quants.quantize``; norms stay F32, as llama.cpp keeps them).
    architecture: ``general.architecture`` (another value writes the same tensors under that name, for
    tests of refusal).
    """
    import gguf

    spec = spec or TinyLlamaSpec()
    path = Path(path)
    tokens, merges, types = tiny_bpe_tokenizer(spec.vocab_target)
    vocab_size = len(tokens)
    state = random_llama_state(spec, vocab_size)
    head_dim = spec.hidden_size // spec.num_attention_heads
    qtype = getattr(gguf.GGMLQuantizationType, quant) if quant else None

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name(name)
    writer.add_context_length(spec.max_position_embeddings)
    writer.add_embedding_length(spec.hidden_size)
    writer.add_block_count(spec.num_hidden_layers)
    writer.add_feed_forward_length(spec.intermediate_size)
    writer.add_head_count(spec.num_attention_heads)
    writer.add_head_count_kv(spec.num_key_value_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(spec.rope_theta)
    writer.add_layer_norm_rms_eps(spec.rms_norm_eps)
    writer.add_vocab_size(vocab_size)
    writer.add_file_type(int(gguf.LlamaFileType.MOSTLY_Q8_0 if quant == "Q8_0" else gguf.LlamaFileType.ALL_F32))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokens.index("<|im_start|>"))
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_pad_token_id(tokens.index("<|endoftext|>"))
    writer.add_unk_token_id(tokens.index("<|endoftext|>"))
    writer.add_chat_template(CHAT_TEMPLATE)
    for hf_name, array in state.items():
        if hf_name.endswith("q_proj.weight"):
            array = llama_cpp_permute(array, spec.num_attention_heads)
        elif hf_name.endswith("k_proj.weight"):
            array = llama_cpp_permute(array, spec.num_key_value_heads)
        if qtype is not None and array.ndim == 2:
            writer.add_tensor(gguf_tensor_name(hf_name), gguf.quants.quantize(array, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(gguf_tensor_name(hf_name), array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
