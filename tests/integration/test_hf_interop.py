"""Hugging Face interop: Distillery artifacts load in transformers (and back) with the same numbers."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import pytest
import torch
from torch import Tensor

from training.artifact import UnverifiedArtifactWarning
from training.generation import left_pad
from training.model import Student
from training.model_config import ModelConfig
from training.tokenizer import DistilleryTokenizer

transformers = pytest.importorskip("transformers")

ATOL = 1e-4
PROMPTS = [[17, 40, 99, 5, 230, 8, 77, 12], [64, 3], [300, 12, 45, 46, 47], [9]]


def _variants(base: ModelConfig) -> dict[str, ModelConfig]:
    """Untied GQA, tied, and an unusual shape (explicit head_dim, one kv head, biases, other rope_theta)."""
    return {
        "untied": dataclasses.replace(base, initializer_range=0.2),
        "tied": dataclasses.replace(base, initializer_range=0.2, tie_word_embeddings=True),
        "odd": dataclasses.replace(
            base,
            initializer_range=0.2,
            head_dim=12,
            num_key_value_heads=1,
            attention_bias=True,
            mlp_bias=True,
            rope_theta=500000.0,
            rms_norm_eps=1e-6,
        ),
    }


@pytest.fixture(scope="module", params=["untied", "tied", "odd"])
def saved(
    request: pytest.FixtureRequest,
    tiny_config: ModelConfig,
    tiny_tokenizer: DistilleryTokenizer,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Student, object, Path]:
    """(Distillery student, the HF LlamaForCausalLM loaded from its artifact, artifact dir) per variant."""
    cfg = _variants(tiny_config)[request.param]
    torch.manual_seed(21)
    student = Student(cfg).eval()
    with torch.no_grad():  # random biases and norm gains, so every tensor's mapping is exercised
        for name, param in student.named_parameters():
            if name.endswith(".bias"):
                param.normal_(0.0, 0.1)
            elif name.endswith("norm.weight"):
                param.uniform_(0.5, 1.5)
    out = tmp_path_factory.mktemp("hf") / request.param
    student.save_pretrained(str(out), tokenizer=tiny_tokenizer)
    hf = transformers.LlamaForCausalLM.from_pretrained(str(out)).eval()
    return Student.from_pretrained(str(out)), hf, out


def _padded() -> tuple[Tensor, Tensor, Tensor]:
    ids, mask = left_pad(PROMPTS, pad_id=0)
    return ids, mask, (mask.cumsum(-1) - 1).clamp_min(0)


def test_hf_config_is_understood(saved: tuple[Student, object, Path]) -> None:
    """transformers reads the shape, tie flag and rope_theta Distillery wrote."""
    student, hf, _ = saved
    cfg = hf.config
    assert cfg.model_type == "llama"
    assert cfg.tie_word_embeddings == student.config.tie_word_embeddings
    assert cfg.head_dim == student.config.head_dim
    assert cfg.num_key_value_heads == student.config.num_key_value_heads
    assert cfg.rope_parameters["rope_theta"] == student.config.rope_theta
    assert cfg.rms_norm_eps == student.config.rms_norm_eps
    assert (hf.lm_head.weight is hf.model.embed_tokens.weight) == student.config.tie_word_embeddings


def test_hf_logits_equal_distillery_logits(saved: tuple[Student, object, Path]) -> None:
    """Unpadded batch: LlamaForCausalLM and Student give the same fp32 logits."""
    student, hf, _ = saved
    ids = torch.randint(3, student.config.vocab_size, (3, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = student(ids), hf(input_ids=ids).logits
    assert ours.abs().max() > 0.1, "logits should not be trivially small"
    assert (ours - theirs).abs().max() < ATOL


def test_hf_logits_equal_with_left_padding(saved: tuple[Student, object, Path]) -> None:
    """Left-padded batch with mask (HF given the same real-token positions): real positions agree."""
    student, hf, _ = saved
    ids, mask, pos = _padded()
    with torch.no_grad():
        ours = student(ids, attention_mask=mask)
        theirs = hf(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    real = mask.bool()
    assert (ours[real] - theirs[real]).abs().max() < ATOL


def test_hf_greedy_generate_equals_distillery_generate(saved: tuple[Student, object, Path]) -> None:
    """Greedy generation from left-padded prompts: identical token sequences (eos handling included)."""
    student, hf, _ = saved
    ids, mask, _ = _padded()
    eos = student.config.eos_token_id
    ours = student.generate(ids, attention_mask=mask, max_new_tokens=12, eos_token_id=eos, pad_token_id=0)
    with torch.no_grad():
        theirs = hf.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=12,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=0,
        )
    assert ours.shape[1] > ids.shape[1]
    assert torch.equal(ours, theirs)


def test_hf_tokenizer_from_artifact_has_identical_ids(
    saved: tuple[Student, object, Path], tiny_tokenizer: DistilleryTokenizer
) -> None:
    """PreTrainedTokenizerFast (and AutoTokenizer) from the artifact encode exactly like Distillery."""
    _, _, out = saved
    fast = transformers.PreTrainedTokenizerFast.from_pretrained(str(out))
    auto = transformers.AutoTokenizer.from_pretrained(str(out))
    text = "Q: 7+3*2-4=?\n<think><step>3*2=6</step></think><answer>9</answer> héllo 😀"
    ids = tiny_tokenizer.encode(text)
    for hf_tok in (fast, auto):
        assert hf_tok(text)["input_ids"] == ids
        assert hf_tok.decode(ids) == text
        assert (hf_tok.pad_token_id, hf_tok.bos_token_id, hf_tok.eos_token_id) == (0, 1, 2)


@pytest.mark.parametrize("tie", [False, True])
def test_hf_saved_llama_loads_in_distillery(tie: bool, tmp_path: Path) -> None:
    """A random LlamaForCausalLM saved with save_pretrained(safe_serialization=True) loads (unverified) into
    Student with equal logits, with and without left padding."""
    cfg = transformers.LlamaConfig(
        vocab_size=96,
        hidden_size=48,
        intermediate_size=80,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rope_theta=5000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=tie,
        initializer_range=0.2,
        pad_token_id=0,
    )
    torch.manual_seed(5)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, param in hf.named_parameters():
            if name.endswith("norm.weight"):
                param.uniform_(0.5, 1.5)
    hf.save_pretrained(str(tmp_path), safe_serialization=True)
    assert not (tmp_path / "manifest.json").exists()
    with pytest.warns(UnverifiedArtifactWarning):
        student = Student.from_pretrained(str(tmp_path))
    assert student.config.tie_word_embeddings is tie
    assert student.config.rope_theta == 5000.0 and student.config.rms_norm_eps == 1e-6
    ids = torch.randint(1, 96, (2, 10), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    pos = (mask.cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        assert (student(ids) - hf(input_ids=ids).logits).abs().max() < ATOL
        ours = student(ids, attention_mask=mask)
        theirs = hf(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    assert (ours[mask.bool()] - theirs[mask.bool()]).abs().max() < ATOL


def test_hf_config_without_optional_keys_loads_like_transformers(tmp_path: Path) -> None:
    """A config.json lacking tie_word_embeddings / num_key_value_heads / rms_norm_eps means the same model in
    Distillery as in transformers (untied head kept, full MHA, eps 1e-6)."""
    cfg = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=1,
        num_attention_heads=4,
        max_position_embeddings=32,
        initializer_range=0.2,
    )
    torch.manual_seed(6)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    hf.save_pretrained(str(tmp_path), safe_serialization=True)
    data = json.loads((tmp_path / "config.json").read_text())
    for key in ("tie_word_embeddings", "num_key_value_heads", "rms_norm_eps"):
        data.pop(key, None)
    (tmp_path / "config.json").write_text(json.dumps(data))
    reloaded = transformers.LlamaForCausalLM.from_pretrained(str(tmp_path)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnverifiedArtifactWarning)
        student = Student.from_pretrained(str(tmp_path))
    ids = torch.randint(1, 64, (1, 8), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (student(ids) - reloaded(input_ids=ids).logits).abs().max() < ATOL
