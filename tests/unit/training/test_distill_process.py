"""The process-supervision entry point: CLI run to an artifact, config validation, the trainer's wiring of
weights and teacher, exact resume, accumulation invariance, judge scores, and the process metrics."""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from kd_helpers import make_tiny_setup, tiny_config
from safetensors.torch import load_file

from training.artifact import verify_manifest
from training.data.toy_data import write_jsonl
from training.distill_process import (
    ProcessConfig,
    ProcessTrainer,
    bind_step_scorer,
    load_judge_scorer,
    load_process_config,
    main,
    process_task_metrics,
    train_process_student,
)
from training.kd.config import ConfigFileError
from training.losses import KDLossWeights
from training.reasoning.process_losses import process_loss, process_token_weights
from training.reasoning.step_data import KIND_STEP, mix_corrupted
from training.tasks import get_task

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny KD setup with a training file where half of the solutions have a corrupted step."""
    paths = make_tiny_setup(tmp_path_factory.mktemp("process"), n_train=8)
    examples = mix_corrupted(get_task("arithmetic").generate(48, 0), 0.5, seed=0)
    assert sum(0.0 in e["step_labels"] for e in examples) >= 10
    write_jsonl(paths["train"], examples)
    return paths


def process_data(setup: dict[str, Path], out_dir: Path, **overrides: Any) -> dict[str, Any]:
    process = overrides.pop("process", {})
    data = tiny_config(setup, out_dir, **overrides).model_dump(mode="json")
    data["process"] = {"wrong_weight": 0.5, "unlikelihood_weight": 0.2, **process}
    data["eval"]["generate_examples"] = 2
    return data


def process_config(setup: dict[str, Path], out_dir: Path, **overrides: Any) -> ProcessConfig:
    return ProcessConfig.model_validate(process_data(setup, out_dir, **overrides))


def log_records(out_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out_dir / "logs" / "train.jsonl").read_text().splitlines()]


def test_cli_trains_and_writes_a_student_artifact(setup: dict[str, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    data = process_data(setup, tmp_path / "run", optim={"max_steps": 4, "warmup_steps": 1},
                        eval={"every": 4}, checkpoint={"every": 2})
    config = tmp_path / "process.yaml"
    config.write_text(yaml.safe_dump(data))
    assert main(["--config", str(config), "process.unlikelihood_weight=0.3"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == "completed" and summary["step"] == 4
    student = Path(summary["student_dir"])
    verify_manifest(student)
    assert (student / "model.safetensors").is_file()
    assert "process_supervision" in (student / "README.md").read_text()
    records = log_records(tmp_path / "run")
    train = [r for r in records if r["event"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert sum(r["wrong_step_tokens"] for r in train) > 0
    assert all(r["unlikelihood"] > 0 and r["kd"] > 0 and r["ce"] > 0 for r in train if r["wrong_step_tokens"])
    (evaluation,) = [r for r in records if r["event"] == "eval"]
    assert {"val_loss", "kd_loss", "accuracy", "step_accuracy", "steps_per_example"} <= set(evaluation)
    assert 0.0 <= evaluation["step_accuracy"] <= 1.0


def test_help_and_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: dict[str, Path]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0 and "process" in capsys.readouterr().out
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(process_data(setup, tmp_path / "bad")))
    for override, fragment in [("process.wrong_weight=-1", "process.wrong_weight"),
                               ("process.judge=some/dir", "weights_from"),
                               ("loss.chunked=true", "chunked"),
                               ("process.nonsense=1", "process.nonsense"),
                               ("process.weights_from=judge", "process.judge")]:
        assert main(["--config", str(config), override]) == 2, override
        assert fragment in capsys.readouterr().err, override


def test_shipped_config_is_valid() -> None:
    cfg = load_process_config(REPO / "configs" / "process.yaml", ["process.wrong_weight=0"])
    assert cfg.process.weights_from == "labels" and cfg.process.wrong_weight == 0.0
    assert cfg.num_threads == 1 and cfg.task == "arithmetic" and not cfg.loss.chunked
    assert cfg.process.weights().unlikelihood_weight == cfg.process.unlikelihood_weight


def test_micro_batch_loss_is_the_process_loss(setup: dict[str, Path], tmp_path: Path) -> None:
    """The trainer's loss equals the pure process loss of the student's and teacher's logits on the batch."""
    trainer = ProcessTrainer(process_config(setup, tmp_path / "run"))
    batch = next(iter(trainer.stream))
    assert bool(((batch["span_kind"] == KIND_STEP) & (batch["step_weight"] == 0)).any())
    loss, terms = trainer.micro_batch_loss(batch, normalizer=100.0)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        logits = trainer.student.run(ids, attention_mask=mask, position_ids=batch["position_ids"]).logits
        teacher = trainer.teacher.logits(ids, mask)
    weights = process_token_weights(batch["labels"], batch["step_weight"], batch["span_kind"], batch["step_index"],
                                    trainer.process_weights)
    expected, _ = process_loss(logits, batch["labels"], weights, KDLossWeights(kd=1.0, ce=0.5), 0.2,
                               teacher_logits=teacher, normalizer=100.0)
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    assert terms["loss"] == pytest.approx(float(expected), rel=1e-5)
    with pytest.raises(ValueError, match="step annotations"):
        trainer.micro_batch_loss({k: v for k, v in batch.items() if k != "span_kind"}, 100.0)
    with pytest.raises(TypeError):
        ProcessTrainer(tiny_config(setup, tmp_path / "kd"))  # type: ignore[arg-type]


def test_resume_equals_uninterrupted(setup: dict[str, Path], tmp_path: Path) -> None:
    overrides = {"optim": {"max_steps": 5, "warmup_steps": 1}, "eval": {"every": 5}, "checkpoint": {"every": 5}}
    full = ProcessTrainer(process_config(setup, tmp_path / "full", **overrides)).train()
    part = ProcessTrainer(process_config(setup, tmp_path / "split", **overrides), stop_after_steps=2).train()
    assert part.status == "stopped_early" and part.step == 2
    rest = ProcessTrainer(process_config(setup, tmp_path / "split", **overrides)).train()
    assert rest.status == "completed" and rest.step == 5
    a, b = load_file(str(full.student_dir / "model.safetensors")), load_file(str(rest.student_dir / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_gradient_accumulation_matches_one_big_batch(setup: dict[str, Path], tmp_path: Path) -> None:
    big = ProcessTrainer(process_config(setup, tmp_path / "big", data={"batch_size": 8}, optim={"max_steps": 1}))
    small = ProcessTrainer(process_config(setup, tmp_path / "small", data={"batch_size": 4},
                                          optim={"max_steps": 1, "grad_accum": 2}))
    small.student.load_state_dict(big.student.state_dict())
    batch = next(iter(big.stream))
    halves = [{k: (v[:4] if v.dim() else v) for k, v in batch.items()},
              {k: (v[4:] if v.dim() else v) for k, v in batch.items()}]
    for half in halves:
        half["num_target_tokens"] = (half["labels"] != -100).sum()
    ok_big, terms_big = big.train_step([batch])
    ok_small, terms_small = small.train_step(halves)
    assert ok_big and ok_small
    assert terms_small["loss"] == pytest.approx(terms_big["loss"], rel=1e-5)
    assert terms_small["wrong_step_tokens"] == terms_big["wrong_step_tokens"]
    for (name, p), q in zip(big.student.named_parameters(), small.student.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_judge_scores_replace_the_labels(setup: dict[str, Path], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, str, list[str]]] = []

    def step_weights(judge: Any, prompt: str, steps: list[str]) -> list[float]:
        calls.append((judge, prompt, steps))
        return [0.75] + [0.25] * (len(steps) - 1)

    class FakeJudge:
        """Stands in for arbiter.judge.Judge."""

        def __init__(self, path: Path) -> None:
            self.path = path

        @classmethod
        def load(cls, path: Path) -> FakeJudge:
            return cls(Path(path))

        def score_steps(self, prompt: str, steps: list[str]) -> None:
            raise AssertionError("scored through step_weights, not directly")

    judge_dir = tmp_path / "judge"
    fake = types.ModuleType("arbiter.judge")
    fake.Judge = FakeJudge  # type: ignore[attr-defined]
    fake.step_weights = step_weights  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "arbiter.judge", fake)
    cfg = process_config(setup, tmp_path / "run", process={"weights_from": "judge", "judge": str(judge_dir)})
    trainer = ProcessTrainer(cfg)
    batch = next(iter(trainer.stream))
    # step_weights scores with the judge Judge.load returned
    assert calls and isinstance(calls[0][0], FakeJudge) and calls[0][0].path == judge_dir
    index, weight = batch["step_index"], batch["step_weight"]
    assert torch.all(weight[index == 0] == 0.75) and torch.all(weight[index > 0] == 0.25)
    result = train_process_student(process_data(setup, tmp_path / "api"),
                                   ["optim.max_steps=2", "eval.every=2", "process.weights_from=judge"],
                                   step_scorer=lambda prompt, steps: [1.0] * len(steps))
    assert result.status == "completed" and result.student_dir is not None
    fake.Judge = types.SimpleNamespace(load=lambda path: object())  # type: ignore[attr-defined]
    with pytest.raises(ConfigFileError, match="score_steps"):
        load_judge_scorer(judge_dir)


def test_bind_step_scorer_checks_scores() -> None:
    scorer = bind_step_scorer("j", lambda judge, prompt, steps: [0.5 for _ in steps])
    assert scorer("Q", ["a", "b"]) == [0.5, 0.5]
    with pytest.raises(ValueError, match="scores for"):
        bind_step_scorer("j", lambda judge, prompt, steps: [0.5])("Q", ["a", "b"])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bind_step_scorer("j", lambda judge, prompt, steps: [1.5])("Q", ["a"])


def test_process_task_metrics() -> None:
    example = {"prompt": "Q: 3*6+5-3=?\n"}
    right = "<think><step>3*6=18</step><step>18+5=23</step><step>23-3=20</step></think><answer>20</answer>"
    wrong = "<think><step>3*6=18</step><step>18+5=13</step><step>13-3=10</step></think><answer>10</answer>"
    metrics = process_task_metrics("arithmetic", [example] * 3, [right, wrong, "<answer>20</answer>"])
    assert metrics["step_accuracy"] == pytest.approx(4 / 6)
    assert metrics["steps_per_example"] == pytest.approx(2.0)
    assert process_task_metrics("arithmetic", [example], ["garbage"])["step_accuracy"] == 0.0
    calls = ['<tool_call>{"name": "x", "arguments": {}}</tool_call>', '<tool_call>{"name": "x", "arguments": {',
             "no call at all", '<tool_call>{"name": "x"}']
    metrics = process_task_metrics("toolcall", [{}] * 4, calls)
    assert metrics == {"json_valid": 0.5, "json_repaired": 0.25, "json_invalid": 0.25}
    assert process_task_metrics("eightball", [{}], ["x"]) == {}
    with pytest.raises(ValueError):
        process_task_metrics("arithmetic", [example], [])
