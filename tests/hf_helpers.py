"""Tiny Hugging Face models and tokenizers built in tests: a foreign tokenizer (its own special tokens and a
ChatML chat template, not Distillery's fixed ids) and a random ``LlamaForCausalLM`` that uses it."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
FOREIGN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>"]
CORPUS = [
    "The capital of France is Paris. The capital of Italy is Rome.",
    "You are a helpful assistant. Answer briefly and politely.",
    "What is two plus three? Two plus three is five.",
    "Write a short poem about the sea: waves roll, gulls cry, the tide goes out.",
    "def add(a, b):\n    return a + b\n",
    "Hello! How can I help you today? I can explain, summarize and translate.",
]


def build_foreign_tokenizer(directory: Path, vocab_size: int = 1000, *, pad_token: str | None = None,
                            add_bos_processor: bool = False, chat_template: str | None = CHATML_TEMPLATE) -> Path:
    """Write a byte-level BPE ``tokenizer.json`` + ``tokenizer_config.json`` in the SmolLM2 style:
    bos ``<|im_start|>``, eos ``<|im_end|>``, unk ``<|endoftext|>``, no pad unless given, ChatML template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=1, special_tokens=FOREIGN_SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS * 20, trainer=trainer)
    if add_bos_processor:
        tok.post_processor = processors.TemplateProcessing(
            single="<|im_start|> $A", pair="<|im_start|> $A $B", special_tokens=[("<|im_start|>", 1)])
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    config: dict[str, object] = {
        "tokenizer_class": "GPT2Tokenizer",
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "unk_token": "<|endoftext|>",
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "model_max_length": 8192,
        "clean_up_tokenization_spaces": False,
    }
    if pad_token is not None:
        config["pad_token"] = pad_token
    if chat_template is not None:
        config["chat_template"] = chat_template
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return directory


def build_tiny_hf_llama(directory: Path, *, hidden: int = 64, layers: int = 4, heads: int = 4, kv_heads: int = 2,
                        intermediate: int = 128, tie: bool = True, seed: int = 0, vocab_size: int = 1000) -> Path:
    """A random ``LlamaForCausalLM`` with the foreign tokenizer, saved with safetensors to ``directory``."""
    import torch
    import transformers

    tok_dir = build_foreign_tokenizer(directory, vocab_size=vocab_size)
    backend = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    config = transformers.LlamaConfig(
        vocab_size=backend.get_vocab_size(), hidden_size=hidden, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=512, rope_theta=100000.0, tie_word_embeddings=tie,
        bos_token_id=backend.token_to_id("<|im_start|>"), eos_token_id=backend.token_to_id("<|im_end|>"),
        initializer_range=0.1,
    )
    torch.manual_seed(seed)
    transformers.LlamaForCausalLM(config).save_pretrained(str(directory), safe_serialization=True)
    return directory
