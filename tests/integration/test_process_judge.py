"""``process.weights_from: judge`` for real: a tiny judge trained with ``arbiter.judge_training``, loaded by
``distill_process`` through ``arbiter.judge`` (no fake module), its step scores in the batches and a few
process-supervised optimizer steps.

The judge (about 12 s on one thread) is too small to be good: measured step AUROC ~0.64 on held-out pairs,
mean step score ~0.64 on correct steps against ~0.59 on corrupted ones. So the test asserts where the
weights come from exactly (each row's weights equal the judge's scores for that row, and they are not the
0/1 labels) and only the direction of the good/corrupted gap."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch
from kd_helpers import make_tiny_setup, tiny_config

from arbiter.judge import Judge
from arbiter.judge_training.config import JudgeTrainConfig
from arbiter.judge_training.train import train_judge
from training.data.toy_data import write_jsonl
from training.distill_process import ProcessConfig, ProcessTrainer, load_judge_scorer, train_process_student
from training.reasoning.step_data import KIND_STEP
from training.tasks import get_task
from training.tasks.arithmetic import corrupt

pytestmark = pytest.mark.usefixtures("one_torch_thread")

JUDGE = {
    "seed": 0, "num_threads": 1,
    "backbone": {"hidden_size": 48, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "num_key_value_heads": 2, "max_position_embeddings": 128},
    "data": {"train": 300, "val": 40, "test": 60, "max_length": 96, "mix": {"correct_vs_corrupt": 1.0}},
    "pretrain": {"steps": 100, "batch_size": 32, "lr": 5.0e-3, "warmup_steps": 20},
    "optim": {"max_steps": 150, "batch_pairs": 16, "lr": 3.0e-3, "warmup_steps": 10},
    "eval": {"every": 150, "batch_pairs": 64},
}


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("judge")
    threads = torch.get_num_threads()
    try:
        train_judge(JudgeTrainConfig.model_validate({**JUDGE, "out_dir": str(out)}))
    finally:
        torch.set_num_threads(threads)
    return out / "judge"


def corrupted_half(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` arithmetic examples, every second one corrupted (with step labels)."""
    rng = random.Random(seed)
    return [corrupt(e, rng) if i % 2 else e for i, e in enumerate(get_task("arithmetic").generate(n, seed))]


def process_data(setup: dict[str, Path], out_dir: Path, judge: Path, steps: int) -> dict[str, Any]:
    data = tiny_config(setup, out_dir, optim={"lr": 3e-3, "warmup_steps": 1, "max_steps": steps},
                       eval={"every": steps, "max_batches": 1, "generate_examples": 0},
                       checkpoint={"every": steps, "keep_last": 1}).model_dump(mode="json")
    data["process"] = {"weights_from": "judge", "judge": str(judge), "wrong_weight": 1.0}
    return data


def test_judge_step_weights_drive_process_supervision(judge_dir: Path, tmp_path: Path) -> None:
    setup = make_tiny_setup(tmp_path / "setup", n_train=8)
    examples = corrupted_half(48, 0)
    write_jsonl(setup["train"], examples)
    judge = Judge.load(judge_dir)
    expected = [judge.score_steps(e["prompt"], e["steps"]).scores for e in examples]

    # the real loader: Judge.load, not the (model, spec, tokenizer) tuple of load_judge
    scorer = load_judge_scorer(judge_dir)
    assert scorer(examples[1]["prompt"], examples[1]["steps"]) == pytest.approx(expected[1], rel=1e-6)

    trainer = ProcessTrainer(ProcessConfig.model_validate(process_data(setup, tmp_path / "peek", judge_dir, 2)))
    batch = next(iter(trainer.stream))
    for row in range(batch["step_weight"].shape[0]):
        index, weight, kind = batch["step_index"][row], batch["step_weight"][row], batch["span_kind"][row]
        steps = sorted({int(i) for i in index[kind == KIND_STEP].tolist()})
        row_weights = [float(weight[(kind == KIND_STEP) & (index == k)][0]) for k in steps]
        assert row_weights, "every arithmetic row has steps"
        assert any(len(s) == len(row_weights) and row_weights == pytest.approx(s, rel=1e-5) for s in expected)
        assert not all(w in (0.0, 1.0) for w in row_weights), "weights are judge probabilities, not labels"

    good = [s for e, row in zip(examples, expected, strict=True)
            for s, label in zip(row, e["step_labels"], strict=True) if label == 1.0]
    bad = [s for e, row in zip(examples, expected, strict=True)
           for s, label in zip(row, e["step_labels"], strict=True) if label == 0.0]
    assert bad and sum(bad) / len(bad) < sum(good) / len(good)

    result = train_process_student(process_data(setup, tmp_path / "run", judge_dir, 3))
    assert result.status == "completed" and result.step == 3 and result.student_dir is not None
