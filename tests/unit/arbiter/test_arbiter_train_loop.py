"""Short judge trainings: starting from an existing artifact, training from a pairs directory, best-step
selection and the outputs written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from arbiter.data.generate import build_splits
from arbiter.data.schema import write_pairs
from arbiter.judge_training.artifact import load_judge
from arbiter.judge_training.config import JudgeTrainConfig
from arbiter.judge_training.evaluate import selection_value
from arbiter.judge_training.train import train_judge
from training.model import Student
from training.tokenizer import DistilleryTokenizer


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pairs")
    for name, pairs in build_splits(24, 6, 6, seed=5).items():
        write_pairs(root / f"{name}.jsonl", pairs)
    return root


def short_config(out: Path, **overrides: object) -> JudgeTrainConfig:
    data = {"optim": {"max_steps": 3, "batch_pairs": 4, "warmup_steps": 1}, "eval": {"every": 2, "batch_pairs": 8},
            "out_dir": str(out), "vocab_size": 300, **overrides}
    return JudgeTrainConfig.model_validate(data)


def test_init_from_an_artifact_with_pairs_from_a_directory(tiny_artifact: Path, pairs_dir: Path, tmp_path: Path
                                                           ) -> None:
    threads = torch.get_num_threads()
    cfg = short_config(tmp_path / "run", init_from=str(tiny_artifact), data={"dir": str(pairs_dir)})
    try:
        report = train_judge(cfg)
    finally:
        torch.set_num_threads(threads)
    judge, spec, tokenizer = load_judge(tmp_path / "run" / "judge")
    source = Student.from_pretrained(str(tiny_artifact))
    assert judge.backbone.config == source.config
    assert tokenizer.fingerprint() == DistilleryTokenizer.load(tiny_artifact).fingerprint()
    assert report["counts"] == {"train": 24, "val": 6, "test": 6}
    assert report["test_set"].endswith("test.jsonl") and report["pretrain_steps"] == 0
    assert not (tmp_path / "run" / "data").exists()  # given pairs are not copied
    assert report["best_step"] in (2, 3)
    events = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["start", "eval", "eval", "test"]
    assert [e["step"] for e in events if e["event"] == "eval"] == [2, 3]
    assert spec.surprise_features and spec.max_length == 96


def test_pretraining_runs_and_lowers_the_lm_loss(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    cfg = short_config(tmp_path / "run", backbone={"hidden_size": 32, "intermediate_size": 64,
                                                   "num_hidden_layers": 1, "num_attention_heads": 2,
                                                   "num_key_value_heads": 1},
                       data={"train": 40, "val": 6, "test": 6},
                       pretrain={"steps": 30, "batch_size": 8, "lr": 1e-2, "warmup_steps": 2})
    cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"every": 15})})
    try:
        train_judge(cfg)
    finally:
        torch.set_num_threads(threads)
    events = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [e["loss_lm"] for e in events if e["event"] == "pretrain"]
    assert len(losses) == 2 and losses[1] < losses[0]
    assert (tmp_path / "run" / "data" / "train.jsonl").is_file()


def test_selection_value() -> None:
    metrics = {"pairwise_accuracy": 0.8, "clause_f1": None, "step_auroc": 0.6}
    assert selection_value(metrics, "mean") == pytest.approx(0.7)
    assert selection_value(metrics, "step_auroc") == 0.6
    assert selection_value(metrics, "clause_f1") == float("-inf")
