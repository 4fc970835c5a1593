"""Student transformer: shapes, masking, RoPE, GQA, RMSNorm, tying, config validation, initialisation."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from training.model import (
    Attention,
    RMSNorm,
    Student,
    apply_rope,
    build_attention_bias,
    default_position_ids,
    repeat_kv,
    rope_cos_sin,
    rope_inverse_frequencies,
)
from training.model_config import ConfigError, ModelConfig


@pytest.fixture(scope="module")
def sharp_student(tiny_config: ModelConfig) -> Student:
    """tiny_config with a wide init and random norm gains, so differences are not drowned by tiny logits."""
    torch.manual_seed(1)
    model = Student(dataclasses.replace(tiny_config, initializer_range=0.2)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("layernorm.weight") or name == "model.norm.weight":
                param.uniform_(0.5, 1.5)
    return model


def _ids(config: ModelConfig, shape: tuple[int, int], seed: int) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(3, config.vocab_size, shape, generator=gen)


def _rope_reference(x: Tensor, positions: list[int], theta: float) -> Tensor:
    """RoPE written element by element: pair (x_i, x_{i+d/2}) rotated by pos * theta^(-2i/d)."""
    out = torch.empty_like(x)
    d = x.shape[-1]
    half = d // 2
    for t, pos in enumerate(positions):
        for i in range(half):
            angle = pos * theta ** (-2.0 * i / d)
            c, s = math.cos(angle), math.sin(angle)
            a, b = x[..., t, i], x[..., t, i + half]
            out[..., t, i] = a * c - b * s
            out[..., t, i + half] = a * s + b * c
    return out


def _rope(x: Tensor, positions: list[int], theta: float) -> Tensor:
    """Distillery's RoPE applied to x (B, heads, T, D) at the given positions."""
    inv = rope_inverse_frequencies(x.shape[-1], theta)
    cos, sin = rope_cos_sin(torch.tensor([positions]).expand(x.shape[0], -1), inv, x.dtype)
    return apply_rope(x, cos, sin)


# ---- shapes ---------------------------------------------------------------------------------------------


def test_forward_logits_shape(tiny_student: Student, tiny_config: ModelConfig) -> None:
    """student(ids) returns (B, T, V) float logits."""
    logits = tiny_student(_ids(tiny_config, (3, 7), 0))
    assert logits.shape == (3, 7, tiny_config.vocab_size)
    assert logits.dtype == torch.float32


def test_run_hidden_states_and_cache_shapes(tiny_student: Student, tiny_config: ModelConfig) -> None:
    """run() returns layers+1 hidden states (embeddings first, norm applied only to last_hidden_state) and one
    (k, v) pair per layer shaped (B, n_kv, T, head_dim)."""
    ids = _ids(tiny_config, (2, 5), 1)
    out = tiny_student.run(ids, use_cache=True, output_hidden_states=True)
    assert out.hidden_states is not None and out.past_key_values is not None
    assert len(out.hidden_states) == tiny_config.num_hidden_layers + 1
    assert all(h.shape == (2, 5, tiny_config.hidden_size) for h in out.hidden_states)
    torch.testing.assert_close(out.hidden_states[0], tiny_student.model.embed_tokens(ids))
    torch.testing.assert_close(out.last_hidden_state, tiny_student.model.norm(out.hidden_states[-1]))
    assert len(out.past_key_values) == tiny_config.num_hidden_layers
    for k, v in out.past_key_values:
        assert k.shape == v.shape == (2, tiny_config.num_key_value_heads, 5, tiny_config.head_dim)


def test_run_without_cache_or_logits(tiny_student: Student, tiny_config: ModelConfig) -> None:
    """Defaults return no cache and no hidden states; compute_logits=False returns no logits."""
    out = tiny_student.run(_ids(tiny_config, (1, 4), 2), compute_logits=False)
    assert out.logits is None and out.past_key_values is None and out.hidden_states is None
    assert out.last_hidden_state.shape == (1, 4, tiny_config.hidden_size)


def test_kv_cache_step_matches_full_forward(sharp_student: Student, tiny_config: ModelConfig) -> None:
    """Prefill + one cached step gives the same last logits as a full forward, and the cache grows by one."""
    ids = _ids(tiny_config, (2, 9), 3)
    full = sharp_student(ids)
    pre = sharp_student.run(ids[:, :8], use_cache=True)
    step = sharp_student.run(ids[:, 8:], past_key_values=pre.past_key_values, use_cache=True)
    assert step.logits is not None and step.past_key_values is not None
    assert step.past_key_values[0][0].shape[2] == 9
    torch.testing.assert_close(step.logits[:, -1], full[:, -1], atol=1e-5, rtol=1e-5)


def test_run_requires_exactly_one_input(tiny_student: Student, tiny_config: ModelConfig) -> None:
    """Passing both or neither of input_ids / inputs_embeds is a ValueError."""
    ids = _ids(tiny_config, (1, 3), 4)
    with pytest.raises(ValueError, match="exactly one"):
        tiny_student.run(ids, inputs_embeds=tiny_student.model.embed_tokens(ids))
    with pytest.raises(ValueError, match="exactly one"):
        tiny_student.run()


def test_inputs_embeds_path_equals_input_ids_path(sharp_student: Student, tiny_config: ModelConfig) -> None:
    """Feeding embed_tokens(ids) as inputs_embeds gives the logits of feeding ids (with and without mask)."""
    ids = _ids(tiny_config, (2, 6), 5)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    embeds = sharp_student.model.embed_tokens(ids)
    for m in (None, mask):
        a = sharp_student.run(ids, attention_mask=m).logits
        b = sharp_student.run(inputs_embeds=embeds, attention_mask=m).logits
        assert a is not None and b is not None
        torch.testing.assert_close(a, b, atol=0, rtol=0)


# ---- masking --------------------------------------------------------------------------------------------


def test_causal_mask_later_tokens_never_change_earlier_logits(
    sharp_student: Student, tiny_config: ModelConfig
) -> None:
    """Changing token t changes logits at t (the check can fail) but not at positions < t."""
    ids = _ids(tiny_config, (1, 12), 6)
    base = sharp_student(ids)
    for t in (3, 7, 11):
        changed = ids.clone()
        changed[0, t] = (changed[0, t] + 17) % tiny_config.vocab_size
        out = sharp_student(changed)
        torch.testing.assert_close(out[:, :t], base[:, :t], atol=1e-6, rtol=0)
        assert (out[:, t] - base[:, t]).abs().max() > 1e-3


def test_left_padded_batch_matches_examples_run_alone(
    sharp_student: Student, tiny_config: ModelConfig
) -> None:
    """With left padding and a mask, logits at real positions equal each example's unpadded logits."""
    lengths = [9, 4, 1, 6]
    seqs = [_ids(tiny_config, (1, n), 10 + i)[0] for i, n in enumerate(lengths)]
    width = max(lengths)
    ids = torch.full((len(seqs), width), tiny_config.pad_token_id)
    mask = torch.zeros_like(ids)
    for row, seq in enumerate(seqs):
        ids[row, width - len(seq) :] = seq
        mask[row, width - len(seq) :] = 1
    batched = sharp_student(ids, attention_mask=mask)
    assert torch.isfinite(batched).all(), "fully padded query rows must not produce NaN"
    for row, seq in enumerate(seqs):
        alone = sharp_student(seq[None])
        torch.testing.assert_close(batched[row, width - len(seq) :], alone[0], atol=1e-5, rtol=1e-5)


def test_left_padding_without_mask_differs(sharp_student: Student, tiny_config: ModelConfig) -> None:
    """Sanity for the padding test: without the mask, pad tokens do leak into real positions."""
    seq = _ids(tiny_config, (1, 4), 20)
    padded = torch.cat((torch.full((1, 3), tiny_config.pad_token_id), seq), dim=1)
    assert (sharp_student(padded)[0, 3:] - sharp_student(seq)[0]).abs().max() > 1e-3


def test_build_attention_bias_semantics() -> None:
    """Causal + padding mask as an additive bias; a pad query sees only itself; KV-cache offsets queries."""
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    bias = build_attention_bias(mask, 4, 4, torch.float32, torch.device("cpu"), 2)
    allowed = bias == 0
    assert bias.shape == (2, 1, 4, 4)
    assert allowed[1, 0].equal(torch.tril(torch.ones(4, 4, dtype=torch.bool)))
    expected_row0 = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]], dtype=torch.bool)
    assert allowed[0, 0].equal(expected_row0)
    assert (bias[~allowed] == torch.finfo(torch.float32).min).all()
    # two cached positions + two new queries: the queries are positions 2 and 3
    cached = build_attention_bias(None, 2, 4, torch.float32, torch.device("cpu"), 1)
    assert (cached[0, 0] == 0).equal(torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool))


def test_default_position_ids_skip_left_padding() -> None:
    """Positions count real tokens (left padding does not shift them) and continue after a cache."""
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    pos = default_position_ids(mask, 2, 0, 5, torch.device("cpu"))
    assert pos.tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]
    assert default_position_ids(mask, 2, 4, 1, torch.device("cpu")).tolist() == [[2], [4]]
    assert default_position_ids(None, 2, 3, 2, torch.device("cpu")).tolist() == [[3, 4], [3, 4]]


# ---- RoPE -----------------------------------------------------------------------------------------------


def test_rope_inverse_frequencies_formula() -> None:
    """inv_freq[i] == theta^(-2i/d)."""
    d, theta = 16, 500.0
    expected = torch.tensor([theta ** (-2.0 * i / d) for i in range(d // 2)])
    torch.testing.assert_close(rope_inverse_frequencies(d, theta), expected)


@pytest.mark.parametrize("theta", [10000.0, 37.0])
def test_rope_matches_explicit_pair_rotation(theta: float) -> None:
    """apply_rope equals the element-wise rotation of (x_i, x_{i+d/2}) by pos * theta^(-2i/d)."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 8, dtype=torch.float64)
    positions = [0, 1, 4, 17, 63]
    # cos/sin tables are fp32 (as in Hugging Face), hence the fp32-level tolerance on fp64 inputs
    torch.testing.assert_close(
        _rope(x, positions, theta), _rope_reference(x, positions, theta), atol=1e-5, rtol=1e-5
    )


def test_rope_position_zero_is_identity_and_other_positions_are_not() -> None:
    """Position 0 leaves vectors unchanged; position 5 does not."""
    x = torch.randn(1, 1, 2, 8, dtype=torch.float64)
    torch.testing.assert_close(_rope(x, [0, 0], 10000.0), x)
    assert (_rope(x, [5, 5], 10000.0) - x).abs().max() > 1e-2


def test_rope_preserves_norms() -> None:
    """Rotation keeps the norm of every head vector at every position."""
    torch.manual_seed(1)
    x = torch.randn(2, 4, 6, 16, dtype=torch.float64)
    rotated = _rope(x, [0, 3, 9, 100, 1000, 4095], 10000.0)
    torch.testing.assert_close(rotated.norm(dim=-1), x.norm(dim=-1))


def test_rope_dot_product_depends_only_on_relative_position() -> None:
    """q·k for q at m and k at n depends on m - n only (and does depend on it)."""
    torch.manual_seed(2)
    q = torch.randn(1, 1, 1, 16, dtype=torch.float64)
    k = torch.randn(1, 1, 1, 16, dtype=torch.float64)

    def score(m: int, n: int) -> float:
        return float((_rope(q, [m], 10000.0) * _rope(k, [n], 10000.0)).sum())

    same_offset = [score(m, m - 3) for m in (3, 10, 57, 300)]
    assert max(same_offset) - min(same_offset) < 1e-4
    assert abs(score(10, 7) - score(10, 8)) > 1e-2


# ---- attention, GQA -------------------------------------------------------------------------------------


def test_repeat_kv_repeats_each_head_for_its_group() -> None:
    """repeat_kv maps query head h to kv head h // groups (Hugging Face layout)."""
    x = torch.arange(2 * 3 * 1 * 1).float().view(2, 3, 1, 1)
    out = repeat_kv(x, 2)
    assert out.shape == (2, 6, 1, 1)
    assert out[0, :, 0, 0].tolist() == [0, 0, 1, 1, 2, 2]
    assert repeat_kv(x, 1) is x


def _mha_reference(attn: Attention, x: Tensor, positions: list[int], theta: float) -> Tensor:
    """Plain multi-head causal attention: kv heads repeated explicitly, einsum + softmax, copied weights."""
    b, t, _ = x.shape
    nh, nkv, d = attn.n_heads, attn.n_kv, attn.head_dim
    groups = nh // nkv
    q = (x @ attn.q_proj.weight.T).view(b, t, nh, d).transpose(1, 2)
    k = (x @ attn.k_proj.weight.T).view(b, t, nkv, d).transpose(1, 2)
    v = (x @ attn.v_proj.weight.T).view(b, t, nkv, d).transpose(1, 2)
    q, k = _rope_reference(q, positions, theta), _rope_reference(k, positions, theta)
    k_full = torch.stack([k[:, h // groups] for h in range(nh)], dim=1)
    v_full = torch.stack([v[:, h // groups] for h in range(nh)], dim=1)
    scores = torch.einsum("bhqd,bhkd->bhqk", q, k_full) / math.sqrt(d)
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    scores = scores.masked_fill(~causal, float("-inf"))
    out = torch.einsum("bhqk,bhkd->bhqd", scores.softmax(-1), v_full)
    return out.transpose(1, 2).reshape(b, t, nh * d) @ attn.o_proj.weight.T


@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"), [(4, 2, 8), (4, 1, 6), (6, 3, 4), (2, 2, 8)])
def test_gqa_attention_matches_explicit_multi_head_reference(
    heads: int, kv_heads: int, head_dim: int
) -> None:
    """Attention.forward equals a hand-written MHA over explicitly repeated kv heads (same weights)."""
    torch.manual_seed(3)
    cfg = ModelConfig(
        vocab_size=64,
        hidden_size=24,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        num_hidden_layers=1,
        intermediate_size=16,
        rope_theta=100.0,
    )
    attn = Attention(cfg).double()
    for p in attn.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, 7, 24, dtype=torch.float64)
    positions = list(range(7))
    cos, sin = rope_cos_sin(torch.tensor([positions] * 2), rope_inverse_frequencies(head_dim, 100.0), x.dtype)
    bias = build_attention_bias(None, 7, 7, x.dtype, x.device, 2)
    out, (k, v) = attn(x, cos, sin, bias, None)
    torch.testing.assert_close(out, _mha_reference(attn, x, positions, 100.0), atol=1e-5, rtol=1e-5)
    assert k.shape == v.shape == (2, kv_heads, 7, head_dim)


def test_gqa_reference_detects_wrong_head_grouping() -> None:
    """The check is sensitive to the kv-head assignment: tiling kv heads (h % n_kv) gives other outputs."""
    torch.manual_seed(4)
    cfg = ModelConfig(
        vocab_size=64,
        hidden_size=16,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=1,
        intermediate_size=16,
    )
    attn = Attention(cfg).double()
    for p in attn.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(1, 5, 16, dtype=torch.float64)
    cos, sin = rope_cos_sin(torch.arange(5)[None], rope_inverse_frequencies(4, 10000.0), x.dtype)
    bias = build_attention_bias(None, 5, 5, x.dtype, x.device, 1)
    q = attn.q_proj(x).view(1, 5, 4, 4).transpose(1, 2)
    k = attn.k_proj(x).view(1, 5, 2, 4).transpose(1, 2)
    v = attn.v_proj(x).view(1, 5, 2, 4).transpose(1, 2)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    tiled = F.scaled_dot_product_attention(q, k.repeat(1, 2, 1, 1), v.repeat(1, 2, 1, 1), attn_mask=bias)
    wrong = attn.o_proj(tiled.transpose(1, 2).reshape(1, 5, 16))
    right, _ = attn(x, cos, sin, bias, None)
    assert (wrong - right).abs().max() > 1e-3


# ---- RMSNorm, tying, init -------------------------------------------------------------------------------


def test_rmsnorm_matches_formula() -> None:
    """RMSNorm(x) == x / sqrt(mean(x^2) + eps) * weight."""
    torch.manual_seed(5)
    norm = RMSNorm(10, eps=1e-3)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
    x = torch.randn(3, 4, 10) * 7
    expected = x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-3) * norm.weight
    torch.testing.assert_close(norm(x), expected)


def test_rmsnorm_bf16_module_keeps_dtype() -> None:
    """A bf16 norm on bf16 input returns bf16 (normalised in fp32 internally) close to the fp32 result."""
    torch.manual_seed(7)
    norm = RMSNorm(8, eps=1e-5)
    x = torch.randn(2, 8) * 1e3  # large inputs: squaring them in bf16 would lose the mean badly
    expected = norm(x)
    out = norm.bfloat16()(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, atol=2e-2, rtol=2e-2)


def test_tied_embeddings_share_storage(tiny_config: ModelConfig) -> None:
    """With tie_word_embeddings the head is the embedding Parameter; untied heads are separate tensors."""
    tied = Student(dataclasses.replace(tiny_config, tie_word_embeddings=True))
    untied = Student(tiny_config)
    assert tied.lm_head.weight is tied.model.embed_tokens.weight
    assert tied.lm_head.weight.data_ptr() == tied.model.embed_tokens.weight.data_ptr()
    with torch.no_grad():
        tied.model.embed_tokens.weight[5, 0] = 123.0
    assert tied.lm_head.weight[5, 0].item() == 123.0
    assert untied.lm_head.weight.data_ptr() != untied.model.embed_tokens.weight.data_ptr()
    vh = tiny_config.vocab_size * tiny_config.hidden_size
    assert untied.num_parameters() - tied.num_parameters() == vh


def test_reset_parameters_statistics() -> None:
    """Linear/embedding weights ~ N(0, 0.02), output projections scaled by 1/sqrt(2 * layers), norms one."""
    torch.manual_seed(6)
    cfg = ModelConfig(
        vocab_size=512,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=8,
        num_attention_heads=4,
        num_key_value_heads=2,
        initializer_range=0.02,
    )
    model = Student(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(3.0)
    model.reset_parameters()
    scaled = 0.02 / math.sqrt(16)
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            assert torch.equal(p, torch.ones_like(p)), name
            continue
        expected = scaled if name.endswith(("o_proj.weight", "down_proj.weight")) else 0.02
        assert abs(p.std().item() - expected) < 0.1 * expected, (name, p.std().item(), expected)
        assert abs(p.mean().item()) < 0.1 * expected, name


# ---- ModelConfig ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_attention_heads": 3}, "not divisible"),
        ({"num_attention_heads": 4, "num_key_value_heads": 3}, "multiple of"),
        ({"num_attention_heads": 2, "num_key_value_heads": 4}, "multiple of"),
        ({"num_attention_heads": 0}, "num_attention_heads must be a positive integer"),
        ({"num_key_value_heads": 0}, "num_key_value_heads must be a positive integer"),
        ({"hidden_size": 36, "num_attention_heads": 4}, "must be even"),
        ({"head_dim": 5}, "must be even"),
        ({"head_dim": 0}, "head_dim must be a positive integer"),
        ({"vocab_size": 0}, "vocab_size must be a positive integer"),
        ({"num_hidden_layers": 2.0}, "num_hidden_layers must be a positive integer"),
        ({"hidden_size": True}, "hidden_size must be a positive integer"),
        ({"eos_token_id": 512}, "eos_token_id=512 is outside"),
        ({"bos_token_id": -1}, "bos_token_id=-1 is outside"),
        ({"pad_token_id": None}, "pad_token_id must be an integer"),
        ({"rms_norm_eps": 0.0}, "must be positive"),
        ({"rope_theta": -1.0}, "must be positive"),
    ],
)
def test_model_config_validation_errors(kwargs: dict[str, object], match: str) -> None:
    """Invalid shapes and token ids raise ConfigError with a message naming the problem."""
    with pytest.raises(ConfigError, match=match):
        ModelConfig(vocab_size=kwargs.pop("vocab_size", 512), **kwargs)  # type: ignore[arg-type]


def test_model_config_derives_head_dim_and_groups() -> None:
    """head_dim defaults to hidden/heads; an explicit head_dim may differ; groups = heads / kv heads."""
    cfg = ModelConfig(hidden_size=64, num_attention_heads=8, num_key_value_heads=2)
    assert cfg.head_dim == 8 and cfg.num_kv_groups == 4
    assert ModelConfig(hidden_size=36, num_attention_heads=4, head_dim=12).head_dim == 12


def test_hf_dict_round_trip(tiny_config: ModelConfig, tmp_path: Path) -> None:
    """to_hf_dict -> from_hf_dict and save -> load reproduce the config; the dict is a Llama config."""
    cfg = dataclasses.replace(
        tiny_config,
        rope_theta=500000.0,
        head_dim=16,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=5,
        eos_token_id=6,
        pad_token_id=7,
    )
    data = cfg.to_hf_dict()
    assert data["model_type"] == "llama" and data["architectures"] == ["LlamaForCausalLM"]
    assert data["hidden_act"] == "silu" and data["rope_scaling"] is None
    assert ModelConfig.from_hf_dict(data) == cfg
    cfg.save(tmp_path / "config.json")
    assert ModelConfig.load(tmp_path / "config.json") == cfg
    assert json.loads((tmp_path / "config.json").read_text())["head_dim"] == 16


def test_from_hf_dict_reads_transformers_v5_layout(tiny_config: ModelConfig) -> None:
    """rope_theta inside rope_parameters, eos lists and null pad ids (as transformers writes them) load."""
    data = tiny_config.to_hf_dict()
    del data["rope_theta"]
    data.update(
        rope_parameters={"rope_type": "default", "rope_theta": 1234.0},
        eos_token_id=[2, 9],
        pad_token_id=None,
        dtype="float32",
        transformers_version="5.0.0",
    )
    cfg = ModelConfig.from_hf_dict(data)
    assert cfg.rope_theta == 1234.0 and cfg.eos_token_id == 2 and cfg.pad_token_id == 0


def test_from_hf_dict_missing_keys_follow_llama_config_defaults(tiny_config: ModelConfig) -> None:
    """A config.json without tie_word_embeddings / num_key_value_heads / rms_norm_eps means what it means to
    transformers' LlamaConfig: untied head, one kv head per query head, eps 1e-6."""
    data = tiny_config.to_hf_dict()
    for key in ("tie_word_embeddings", "num_key_value_heads", "rms_norm_eps"):
        del data[key]
    cfg = ModelConfig.from_hf_dict(data)
    assert cfg.tie_word_embeddings is False
    assert cfg.num_key_value_heads == cfg.num_attention_heads
    assert cfg.rms_norm_eps == 1e-6
    data["num_key_value_heads"] = None
    assert ModelConfig.from_hf_dict(data).num_key_value_heads == cfg.num_attention_heads


@pytest.mark.parametrize(
    ("update", "match"),
    [
        ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope_scaling"),
        ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}}, "rope_parameters"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"model_type": "mistral"}, "Llama models only"),
    ],
)
def test_from_hf_dict_refuses_unsupported_features(
    tiny_config: ModelConfig, update: dict[str, object], match: str
) -> None:
    """RoPE scaling, non-silu activations and other architectures are refused, not silently ignored."""
    data = tiny_config.to_hf_dict()
    data.update(update)
    with pytest.raises(ConfigError, match=match):
        ModelConfig.from_hf_dict(data)


def test_load_rejects_invalid_json(tmp_path: Path) -> None:
    """A config.json that is not JSON is a ConfigError naming the file."""
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        ModelConfig.load(path)


def test_rope_frequencies_stay_fp32_when_the_model_is_cast(tiny_config: ModelConfig) -> None:
    """.bfloat16()/.half() cast the weights but keep exact fp32 RoPE frequencies (16-bit ones misplace
    positions); a bf16 forward still returns bf16 logits."""
    exact = rope_inverse_frequencies(tiny_config.head_dim, tiny_config.rope_theta)
    assert exact.dtype == torch.float32 and not torch.equal(exact.bfloat16().float(), exact)
    model = Student(tiny_config).eval()
    for cast in (model.bfloat16, model.half, model.float):
        assert cast() is model
        assert model.rope_inv_freq.dtype == torch.float32
        assert torch.equal(model.rope_inv_freq, exact)
    model.bfloat16()
    assert model.lm_head.weight.dtype == torch.bfloat16
    logits = model(_ids(tiny_config, (1, 5), 30))
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
