"""End to end: `python -m arbiter.judge_training.train` on a tiny config, then the artifact through the API.

A few hundred pairs and a few seconds of training cannot teach a 2-layer model arithmetic (that takes the
minutes of `make judge`, which measures it on held-out pairs), so this run's pair mix leans on what a tiny
run can learn: format violations (70% of pairs; 10% corrupted solutions keep step labels of both kinds).
Measured with seeds 0-3: pairwise accuracy 0.90-0.95 (malformed pairs ~all right, corrupted ones anywhere
from 0.25 to chance); even with every corrupted pair wrong the expected value stays above 0.85, so the
floor of 0.7 is robust while still failing for a judge that learned nothing (0.5) or ranks backwards.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from arbiter.data import read_pairs
from arbiter.judge import Judge, step_weights, win_rate
from arbiter.judge_training.train import main
from training.data.toy_data import is_heldout

CONFIG = """
seed: 0
num_threads: 1
backbone: {hidden_size: 48, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4,
           num_key_value_heads: 2, max_position_embeddings: 128}
data:
  train: 400
  val: 60
  test: 200
  max_length: 96
  mix: {correct_vs_malformed: 0.7, correct_vs_corrupt: 0.1, tie_correct: 0.2}
pretrain: {steps: 200, batch_size: 32, lr: 5.0e-3, warmup_steps: 20}
optim: {max_steps: 200, batch_pairs: 16, lr: 3.0e-3, warmup_steps: 10}
eval: {every: 100, batch_pairs: 64}
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("judge_run")
    config = root / "judge.yaml"
    config.write_text(CONFIG)
    out = root / "out"
    threads = torch.get_num_threads()
    try:
        assert main(["--config", str(config), "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)  # the CLI sets the configured count for the whole process
    return out, json.loads((out / "report.json").read_text())


def test_report_holds_the_headline_metrics(run: tuple[Path, dict[str, Any]]) -> None:
    _, report = run
    assert report["pairwise_accuracy"] >= 0.7
    for key in ("clause_f1", "step_auroc", "three_way_accuracy"):
        assert 0.0 <= report[key] <= 1.0
    assert report["tie_model"] == "davidson" and report["tie_nu"] > 0
    assert report["params"] > report["backbone_params"] > 0
    assert report["wall_seconds"] > 0 and report["cpu_seconds"] > 0
    assert report["counts"] == {"train": 400, "val": 60, "test": 200}
    assert report["best_step"] in (100, 200)


def test_outputs_log_and_held_out_test_data(run: tuple[Path, dict[str, Any]]) -> None:
    out, report = run
    events = [json.loads(line)["event"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert events == ["start", "pretrain", "pretrain", "eval", "eval", "test"]
    test_pairs = read_pairs(out / "data" / "test.jsonl")
    assert len(test_pairs) == 200 and all(is_heldout(p.prompt) for p in test_pairs)
    train_prompts = {p.prompt for p in read_pairs(out / "data" / "train.jsonl")}
    assert not train_prompts & {p.prompt for p in test_pairs}
    metrics = json.loads((out / "judge" / "metrics.json").read_text())
    assert metrics["pairwise_accuracy"] == report["pairwise_accuracy"]


def test_trained_judge_through_the_api(run: tuple[Path, dict[str, Any]]) -> None:
    out, report = run
    judge = Judge.load(out / "judge")
    pairs = [p for p in read_pairs(out / "data" / "test.jsonl") if p.winner != "tie"]
    verdicts = judge.compare_batch([p.prompt for p in pairs], [p.a for p in pairs], [p.b for p in pairs])
    agree = sum((v.reward_a > v.reward_b) == (p.winner == "a") for v, p in zip(verdicts, pairs, strict=True))
    assert abs(agree / len(pairs) - report["pairwise_accuracy"]) < 0.02
    chosen = [p.a if p.winner == "a" else p.b for p in pairs]
    rejected = [p.b if p.winner == "a" else p.a for p in pairs]
    rates = win_rate(judge, [p.prompt for p in pairs], chosen, rejected)
    assert rates["win_rate_a"] > 0.6
    prompt = pairs[0].prompt
    steps = pairs[0].steps_a or ["1+1=2"]
    weights = step_weights(judge, prompt, steps)
    assert len(weights) == len(steps) and all(0.0 <= w <= 1.0 for w in weights)
