"""Weights are checked against the config from safetensors headers before any model is allocated (issue 16).

A ``config.json`` with ``intermediate_size: 10000000`` used to build a 5 GB model before failing; a
list-shaped ``config.json`` gave an AttributeError.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from training import artifact
from training.artifact import ArtifactError, load_student, weight_shapes
from training.model import Student
from training.model_config import ConfigError, ModelConfig


class _MustNotAllocate:
    """Stands in for Student: building a model at all fails the test."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("a Student was allocated before the weights were checked against the config")


def _plain_copy(src: Path, dst: Path, **config_changes: object) -> Path:
    """A manifest-less (plain Hugging Face) copy of an artifact with ``config.json`` fields changed."""
    shutil.copytree(src, dst)
    (dst / "manifest.json").unlink()
    config = json.loads((dst / "config.json").read_text())
    config.update(config_changes)
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def _load(directory: Path) -> Student:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", artifact.UnverifiedArtifactWarning)
        return load_student(directory)


@pytest.mark.parametrize(("change", "tensor", "have", "want"), [
    ({"intermediate_size": 10_000_000}, "model.layers.0.mlp.gate_proj.weight", (64, 32), (10_000_000, 32)),
    ({"vocab_size": 5_000_000}, "model.embed_tokens.weight", None, (5_000_000, 32)),
    ({"hidden_size": 64, "head_dim": 8}, "model.embed_tokens.weight", None, None),
])
def test_absurd_config_fails_before_allocation(tiny_artifact: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch, change: dict[str, object],
                                               tensor: str, have: tuple[int, ...] | None,
                                               want: tuple[int, ...] | None) -> None:
    directory = _plain_copy(tiny_artifact, tmp_path / "student", **change)
    monkeypatch.setattr(artifact, "Student", _MustNotAllocate)
    with pytest.raises(ArtifactError) as info:
        _load(directory)
    message = str(info.value)
    assert tensor in message and "config.json" in message
    shapes = weight_shapes([directory / "model.safetensors"])
    assert str(have or shapes[tensor]) in message
    if want is not None:
        assert str(want) in message


def test_missing_tensor_fails_before_allocation(tiny_artifact: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    directory = _plain_copy(tiny_artifact, tmp_path / "student", num_hidden_layers=40)
    monkeypatch.setattr(artifact, "Student", _MustNotAllocate)
    with pytest.raises(ArtifactError, match=r"missing tensors \['model\.layers\.10\."):
        _load(directory)


def test_matching_weights_still_load(tiny_artifact: Path, tiny_student: Student, tmp_path: Path) -> None:
    model = _load(_plain_copy(tiny_artifact, tmp_path / "student"))
    for key, value in tiny_student.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_extra_tensors_are_allowed(tiny_artifact: Path, tmp_path: Path) -> None:
    """Judge heads and other extras beside the model's tensors are not a mismatch."""
    directory = _plain_copy(tiny_artifact, tmp_path / "student")
    state = artifact.read_safetensors([directory / "model.safetensors"])
    save_file({**state, "judge.score_head.weight": torch.zeros(1, 35)}, str(directory / "model.safetensors"))
    _load(directory)


@pytest.mark.parametrize("text", ["[1, 2]", "null", "\"llama\"", "3"])
def test_non_object_config_is_a_clear_error(tiny_artifact: Path, tmp_path: Path, text: str) -> None:
    directory = _plain_copy(tiny_artifact, tmp_path / "student")
    (directory / "config.json").write_text(text)
    with pytest.raises(ConfigError, match="JSON object"):
        _load(directory)
    with pytest.raises(ConfigError, match="JSON object"):
        ModelConfig.from_hf_dict(json.loads(text))


def test_non_object_rope_parameters_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="rope_parameters"):
        ModelConfig.from_hf_dict({"rope_parameters": ["default"]})


@pytest.mark.parametrize("changes", [
    {}, {"tie_word_embeddings": False}, {"attention_bias": True}, {"mlp_bias": True, "head_dim": 16},
    {"num_key_value_heads": 4, "num_hidden_layers": 1},
])
def test_parameter_shapes_are_the_students(changes: dict[str, object]) -> None:
    config = ModelConfig(**changes)  # type: ignore[arg-type]
    state = {k: tuple(v.shape) for k, v in Student(config).state_dict().items()}
    if config.tie_word_embeddings:
        state.pop("lm_head.weight")
    assert config.parameter_shapes() == state
