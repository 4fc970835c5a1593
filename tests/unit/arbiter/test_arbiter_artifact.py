"""Judge artifacts: the student artifact format plus judge heads and judge_config.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from arbiter.judge_training.artifact import JUDGE_CONFIG_FILE, load_judge, read_spec, save_judge
from arbiter.judge_training.model import JudgeModel
from training.artifact import ArtifactError, extra_tensors, load_state_dict
from training.model import Student
from training.model_config import ModelConfig
from training.tokenizer import DistilleryTokenizer

CLAUSES = ("answer_correct", "steps_valid", "format_ok")


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory, tiny_config: ModelConfig, tiny_tokenizer: DistilleryTokenizer
          ) -> tuple[JudgeModel, Path]:
    torch.manual_seed(1)
    model = JudgeModel(Student(tiny_config), CLAUSES, step_head=True).eval()
    with torch.no_grad():
        model.score_head.weight.normal_(std=1.0)
        model.tie_log_nu.fill_(-0.5)
    path = save_judge(model, tmp_path_factory.mktemp("judge") / "judge", tokenizer=tiny_tokenizer, max_length=80,
                      metrics={"pairwise_accuracy": 0.5})
    return model, path


def test_round_trip_gives_identical_outputs(saved: tuple[JudgeModel, Path], tiny_config: ModelConfig) -> None:
    model, path = saved
    loaded, spec, tokenizer = load_judge(path)
    assert spec.clauses == CLAUSES and spec.step_head and spec.max_length == 80 and spec.tie_model == "davidson"
    assert spec.surprise_features
    ids = torch.randint(16, tiny_config.vocab_size, (2, 11))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    response = torch.zeros_like(ids)
    response[:, 6:] = 1
    assert loaded.surprise_features and model.surprise_features
    want, got = model(ids, mask, response), loaded(ids, mask, response)
    assert torch.equal(want.score, got.score)
    assert want.step_logits is not None and got.step_logits is not None
    assert torch.equal(want.step_logits, got.step_logits)
    assert float(loaded.tie_log_nu.detach()) == -0.5
    assert tokenizer.vocab_size == tiny_config.vocab_size


def test_judge_directory_is_a_student_artifact(saved: tuple[JudgeModel, Path]) -> None:
    model, path = saved
    student = Student.from_pretrained(str(path))
    assert student.config == model.backbone.config
    heads = extra_tensors(path, "judge.")
    assert "judge.score_head.weight" in heads and "judge.tie_log_nu" in heads
    _, state = load_state_dict(path)
    assert not any(k.startswith("judge.") for k in student.state_dict())
    assert set(heads) <= set(state)
    manifest = json.loads((path / "manifest.json").read_text())
    assert JUDGE_CONFIG_FILE in manifest["files"]
    assert json.loads((path / "metrics.json").read_text()) == {"pairwise_accuracy": 0.5}


def test_tampered_or_missing_judge_config_is_refused(saved: tuple[JudgeModel, Path], tmp_path: Path) -> None:
    _, path = saved
    tampered = tmp_path / "tampered"
    shutil.copytree(path, tampered)
    (tampered / JUDGE_CONFIG_FILE).write_text((tampered / JUDGE_CONFIG_FILE).read_text().replace("80", "81"))
    with pytest.raises(ArtifactError, match="judge_config.json"):
        load_judge(tampered)


def test_a_plain_student_artifact_is_not_a_judge(tiny_artifact: Path) -> None:
    with pytest.raises(ArtifactError, match="not a judge artifact"):
        read_spec(tiny_artifact)
