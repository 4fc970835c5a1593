"""Students from teachers: layer selection, the copy, shape checks, config validation, the trainer wiring."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from training.kd.config import KDConfig, StudentInitSection
from training.model import Student
from training.model_config import ModelConfig
from training.student_init import (
    StudentInitError,
    check_shape_keys,
    hidden_layer_map,
    select_layers,
    student_from_teacher,
)
from training.tokenizer import DistilleryTokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---- select_layers --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "k", "want"), [
    (30, 5, [0, 5, 10, 15, 20, 25, 29]),   # the last layer is always kept
    (12, 3, [0, 3, 6, 9, 11]),
    (13, 3, [0, 3, 6, 9, 12]),             # the stride lands on the last layer: not added twice
    (4, 1, [0, 1, 2, 3]),
    (4, 10, [0, 3]),
    (1, 2, [0]),
])
def test_select_layers_every_k(n: int, k: int, want: list[int]) -> None:
    assert select_layers(n, every_k=k) == want


def test_select_layers_explicit_list_is_kept() -> None:
    assert select_layers(12, layers=[0, 5, 11]) == [0, 5, 11]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({}, "exactly one"),
    ({"layers": [0], "every_k": 2}, "exactly one"),
    ({"layers": []}, "empty"),
    ({"layers": [0, 12]}, r"\[12\]"),
    ({"layers": [-1]}, r"\[-1\]"),
    ({"layers": [3, 3]}, "increasing"),
    ({"layers": [5, 2]}, "increasing"),
    ({"every_k": 0}, "positive"),
])
def test_select_layers_refuses(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(StudentInitError, match=match):
        select_layers(12, **kwargs)  # type: ignore[arg-type]


# ---- student_from_teacher -----------------------------------------------------------------------------------
def _teacher(tied: bool, layers: int = 4) -> Student:
    torch.manual_seed(7)
    cfg = ModelConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=tied)
    teacher = Student(cfg).eval()
    with torch.no_grad():  # norms away from their init of ones, so copying them is visible
        for name, p in teacher.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(0.1 * torch.randn_like(p))
    return teacher


def _expected_parameters(cfg: ModelConfig, layers: int) -> int:
    """Closed form: embeddings + final norm (+ head) + per layer q, k, v, o, gate, up, down and two norms."""
    h, i, v, d = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.head_dim
    assert d is not None
    q, kv = cfg.num_attention_heads * d, cfg.num_key_value_heads * d
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h
    return v * h + h + (0 if cfg.tie_word_embeddings else v * h) + layers * per_layer


@pytest.mark.parametrize("tied", [True, False])
def test_all_layers_give_the_teachers_logits(tied: bool) -> None:
    teacher = _teacher(tied)
    student = student_from_teacher(teacher, [0, 1, 2, 3]).eval()
    ids = torch.randint(0, 96, (2, 11))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding
    with torch.no_grad():
        want = teacher(ids, attention_mask=mask)
        got = student(ids, attention_mask=mask)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6 * float(want.abs().max()))
    assert student.num_parameters() == teacher.num_parameters()


@pytest.mark.parametrize("tied", [True, False])
def test_subset_copies_each_tensor_by_name(tied: bool) -> None:
    teacher = _teacher(tied)
    layers = [0, 3]
    student = student_from_teacher(teacher, layers)
    assert student.config.num_hidden_layers == 2
    assert student.training
    for field in ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "vocab_size",
                  "tie_word_embeddings", "max_position_embeddings", "rope_theta", "rms_norm_eps"):
        assert getattr(student.config, field) == getattr(teacher.config, field), field
    t_state = teacher.state_dict()
    s_state = student.state_dict()
    assert len(s_state) == 3 + 9 * 2  # embeddings, norm, head (tied: the same tensor twice), 9 per layer
    for name, tensor in s_state.items():
        match = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", name)
        source = f"model.layers.{layers[int(match[1])]}.{match[2]}" if match else name
        assert torch.equal(tensor, t_state[source]), name
        assert tensor.data_ptr() != t_state[source].data_ptr(), f"{name} shares storage with the teacher"
    # the copied layer 3 is really layer 3, not layer 1 (which a plain prefix copy would take)
    assert not torch.equal(s_state["model.layers.1.mlp.up_proj.weight"], t_state["model.layers.1.mlp.up_proj.weight"])
    assert (student.lm_head.weight is student.model.embed_tokens.weight) == tied
    assert student.num_parameters() == _expected_parameters(teacher.config, 2)
    assert teacher.num_parameters() == _expected_parameters(teacher.config, 4)


def test_check_shape_keys_names_conflicts_and_accepts_agreement() -> None:
    derived = ModelConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2)
    check_shape_keys({"hidden_size": 32, "num_hidden_layers": 2}, derived)
    with pytest.raises(StudentInitError) as err:
        check_shape_keys({"hidden_size": 16, "num_hidden_layers": 3, "num_attention_heads": 4}, derived)
    text = str(err.value)
    assert "student.hidden_size=16" in text and "student.num_hidden_layers=3" in text
    assert "num_attention_heads" not in text


def test_hidden_layer_map() -> None:
    assert hidden_layer_map(2, 4, init_layers=[1, 3]) == {0: 1, 1: 3}
    assert hidden_layer_map(2, 4, pairs=[(0, 0), (1, 2)], init_layers=[1, 3]) == {0: 0, 1: 2}
    assert hidden_layer_map(2, 4) == {0: 1, 1: 3}  # spread evenly, last on last
    with pytest.raises(StudentInitError, match="out of range"):
        hidden_layer_map(2, 4, pairs=[(2, 0)])
    with pytest.raises(StudentInitError, match="out of range"):
        hidden_layer_map(2, 4, pairs=[(0, 4)])
    with pytest.raises(StudentInitError, match="hidden_layer_map"):
        hidden_layer_map(3, 2)


# ---- config --------------------------------------------------------------------------------------------------
def _base(**extra: object) -> dict[str, object]:
    return {"out_dir": "x", "tokenizer": "t", "data": {"train": ["a.jsonl"]},
            "teacher": {"kind": "checkpoint", "path": "teacher"}, **extra}


def test_config_student_init_and_hidden_keys_validate() -> None:
    cfg = KDConfig.model_validate(_base(student_init={"from_teacher": True, "every_k": 2},
                                        loss={"hidden_weight": 0.5, "hidden_layer_map": [[0, 1]]}))
    assert cfg.student_init_path() == "teacher"
    assert cfg.loss.hidden_layer_map == [(0, 1)]
    named = KDConfig.model_validate(_base(student_init={"from_teacher": "other", "layers": [0, 2]}))
    assert named.student_init_path() == "other"
    assert KDConfig.model_validate(_base()).student_init is None  # default: today's behaviour
    assert StudentInitSection(from_teacher="d", layers=[1]).every_k is None


@pytest.mark.parametrize(("extra", "match"), [
    ({"student_init": {"from_teacher": True}}, "exactly one"),
    ({"student_init": {"from_teacher": True, "layers": [0], "every_k": 2}}, "exactly one"),
    ({"student_init": {"from_teacher": True, "every_k": 2}, "init_from": "s"}, "init_from"),
    ({"student_init": {"from_teacher": True, "every_k": 2}, "teacher": {"kind": "cache", "path": "c"}}, "teacher.path"),
    ({"student_init": {"from_teacher": True, "every_k": 2, "depth": 3}}, "depth"),
    ({"loss": {"hidden_weight": 1.0}, "teacher": None}, "needs a teacher"),
    ({"loss": {"hidden_layer_map": [[0, 1], [0, 2]]}}, "twice"),
    ({"loss": {"hidden_layer_map": [[0, -1]]}}, "negative"),
])
def test_config_refuses(extra: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        KDConfig.model_validate(_base(**extra))


def test_example_config_builds_a_two_layer_student_of_the_toy_teacher() -> None:
    """configs/student_from_teacher.yaml validates, and its student_init on assets/teacher gives layers 0 and 3."""
    from training.kd.config import load_config
    from training.student_init import build_student_from_teacher

    repo = Path(__file__).resolve().parents[3]
    cfg = load_config(repo / "configs" / "student_from_teacher.yaml")
    assert cfg.student_init is not None and cfg.loss.hidden_weight > 0
    student, layers = build_student_from_teacher(repo / str(cfg.student_init_path()), cfg.student_init.layers,
                                                 cfg.student_init.every_k,
                                                 cfg.student.model_dump(include=cfg.student.model_fields_set))
    teacher = Student.from_pretrained(str(repo / "assets" / "teacher"))
    assert layers == [0, 3]
    assert student.config.num_hidden_layers == 2 and student.config.hidden_size == teacher.config.hidden_size
    assert student.num_parameters() == _expected_parameters(teacher.config, 2)


def test_build_from_a_plain_hugging_face_llama_directory(tmp_path: Path, tiny_tokenizer: DistilleryTokenizer) -> None:
    """A Hugging Face Llama directory (config.json + model.safetensors, no Distillery manifest) works too."""
    from training.student_init import build_student_from_teacher

    teacher = _teacher(tied=False)
    out = tmp_path / "hf"
    teacher.save_pretrained(out, tokenizer=tiny_tokenizer)
    for name in list(out.iterdir()):
        if name.name not in ("config.json", "model.safetensors"):
            name.unlink()
    with pytest.warns(UserWarning):
        student, layers = build_student_from_teacher(out, None, 2, {})
    assert layers == [0, 2, 3]
    assert torch.equal(student.state_dict()["model.layers.1.mlp.gate_proj.weight"],
                       teacher.state_dict()["model.layers.2.mlp.gate_proj.weight"])
    assert torch.equal(student.lm_head.weight, teacher.lm_head.weight)
