"""Student comparison: loss against the evaluator, agreement, accuracy, judge win-rate, Markdown, the CLI."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch

from training import compare
from training.compare import CompareError, compare_students, load_judge, to_markdown, verdict_score
from training.data.toy_data import write_jsonl
from training.kd.data_adapter import eval_batches
from training.kd.evaluation import evaluate_loss, generate_completions
from training.model import Student
from training.tasks import get_task
from training.tokenizer import DistilleryTokenizer


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cmp") / "val.jsonl"
    write_jsonl(path, get_task("arithmetic").generate(6, 11))
    return path


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory, tiny_student: Student,
          tiny_tokenizer: DistilleryTokenizer) -> Path:
    """A second student, same shape and tokenizer, different weights."""
    torch.manual_seed(123)
    model = Student(tiny_student.config)
    return model.save_pretrained(tmp_path_factory.mktemp("other") / "student", tokenizer=tiny_tokenizer)


class PreferJudge:
    """Prefers the answer found in ``favourite``; counts its calls."""

    def __init__(self, favourite: list[str]) -> None:
        self.favourite = set(favourite)
        self.calls = 0

    def compare(self, prompt: str, a: str, b: str) -> str:
        self.calls += 1
        if a in self.favourite and b not in self.favourite:
            return "a"
        if b in self.favourite and a not in self.favourite:
            return "b"
        return "tie"


class LongerJudge:
    """Prefers the longer answer (a mapping verdict); counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def compare(self, prompt: str, a: str, b: str) -> dict[str, str]:
        self.calls += 1
        return {"winner": "a" if len(a) > len(b) else "b" if len(b) > len(a) else "tie"}


class FirstJudge:
    """Always prefers the first answer: pure position bias."""

    def compare(self, prompt: str, a: str, b: str) -> float:
        return 0.9


@pytest.mark.parametrize(("verdict", "score"), [("a", 1.0), ("B", 0.0), ("tie", 0.5), (0.7, 1.0), (0.2, 0.0),
                                                (0.5, 0.5), ({"winner": "b"}, 0.0),
                                                (types.SimpleNamespace(winner="a"), 1.0)])
def test_verdict_score_reads_every_shape(verdict: object, score: float) -> None:
    assert verdict_score(verdict) == score


@pytest.mark.parametrize("verdict", ["maybe", 1.5, True, None])
def test_verdict_score_refuses_the_rest(verdict: object) -> None:
    with pytest.raises(ValueError):
        verdict_score(verdict)


def test_a_student_against_itself(tiny_artifact: Path, data: Path,
                                  tiny_tokenizer: DistilleryTokenizer) -> None:
    judge = PreferJudge([])
    report = compare_students(tiny_artifact, tiny_artifact, data, task="arithmetic", judge=judge,
                              max_new_tokens=4)
    assert report["examples"] == 6 and report["greedy_identical"] == 1.0 and report["top1_agreement"] == 1.0
    assert report["a"]["loss"] == report["b"]["loss"]
    assert judge.calls == 0
    assert report["judge"]["win_rate_a"] == 0.5 and report["judge"]["ties_identical"] == 6
    model = Student.from_pretrained(str(tiny_artifact))
    batches = eval_batches([str(data)], tiny_tokenizer, report["max_length"], 4, data.parent / "q.jsonl")
    reference = evaluate_loss(model, batches, max_batches=100)
    assert report["a"]["loss"] == pytest.approx(reference["val_loss"], rel=1e-5)
    assert report["a"]["tokens"] == reference["val_tokens"]


def test_two_students_with_a_judge(tiny_artifact: Path, other: Path, data: Path) -> None:
    judge = LongerJudge()
    report = compare_students(tiny_artifact, other, data, judge=judge, max_new_tokens=8)
    differing = [d for d in report["diffs"] if not d["identical"]]
    assert differing, "the two random students should not decode identically"
    assert 0.0 <= report["top1_agreement"] < 1.0
    assert report["accuracy_source"] == ["task:arithmetic"]  # each example names its task
    assert judge.calls == 2 * len(differing)  # both orders, never for identical outputs
    expected = [1.0 if len(d["a"]["output"]) > len(d["b"]["output"]) else
                0.0 if len(d["a"]["output"]) < len(d["b"]["output"]) else 0.5 for d in report["diffs"]]
    assert report["judge"]["win_rate_a"] == pytest.approx(sum(expected) / len(expected))
    assert report["judge"]["order_consistency"] == 1.0
    biased = compare_students(tiny_artifact, other, data, judge=FirstJudge(), max_new_tokens=8,
                              max_examples=3)
    assert biased["judge"]["win_rate_a"] == 0.5 and biased["judge"]["order_consistency"] == 0.0


def test_exact_match_accuracy_without_a_task(tiny_artifact: Path, tiny_tokenizer: DistilleryTokenizer,
                                             tmp_path: Path) -> None:
    model = Student.from_pretrained(str(tiny_artifact))
    prompts = ["Q: 1+2=?\n", "Q: 3*4=?\n", "Will it rain?"]
    outputs = generate_completions(model, tiny_tokenizer, prompts, max_new_tokens=6)
    path = tmp_path / "own.jsonl"
    pairs = enumerate(zip(prompts, outputs, strict=True))
    records = [{"id": str(i), "prompt": p, "completion": o} for i, (p, o) in pairs]
    records[2]["completion"] = outputs[2] + " and more"
    write_jsonl(path, records)
    with open(path, "a") as handle:
        handle.write("not json\n")
    report = compare_students(tiny_artifact, tiny_artifact, path, max_new_tokens=6)
    assert report["accuracy_source"] == ["exact_match"] and report["bad_records"] == 1
    assert report["a"]["accuracy"] == pytest.approx(2 / 3)


def test_different_tokenizers_have_no_top1_agreement(tiny_artifact: Path, tmp_path: Path, data: Path) -> None:
    from training.tasks import get_task as task

    tokenizer = DistilleryTokenizer.train(task("arithmetic").sample_texts(200, 0), vocab_size=300)
    torch.manual_seed(0)
    config = dataclasses.replace(Student.from_pretrained(str(tiny_artifact)).config,
                                 vocab_size=tokenizer.vocab_size)
    path = Student(config).save_pretrained(tmp_path / "b", tokenizer=tokenizer)
    report = compare_students(tiny_artifact, path, data, max_new_tokens=4, max_examples=2)
    assert report["examples"] == 2 and report["top1_agreement"] is None
    assert report["top1_agreement_reason"] == "the students' tokenizers differ"


def test_markdown_lists_summary_and_differing_examples() -> None:
    row = {"id": "e|1", "prompt": "p\nq", "reference": "r", "identical": False,
           "a": {"output": "x", "metrics": {"accuracy": 1.0}, "loss": 0.5},
           "b": {"output": "y", "metrics": {"accuracy": 0.0}, "loss": 0.7}}
    report = {"data": "d.jsonl", "examples": 2, "accuracy_source": ["exact_match"],
              "a": {"path": "A", "loss": 0.5, "accuracy": 1.0},
              "b": {"path": "B", "loss": 0.7, "accuracy": 0.5},
              "greedy_identical": 0.5, "top1_agreement": None,
              "judge": {"win_rate_a": 0.75, "win_rate_b": 0.25}, "diffs": [row, {**row, "identical": True}]}
    text = to_markdown(report)
    assert "| loss (nats/token) | 0.5000 | 0.7000 |" in text
    assert "| judge win-rate | 0.7500 | 0.2500 |" in text
    assert "| top-1 token agreement | — |" in text
    assert "| e\\|1 | p\\nq | r | x | 1.0000 | y | 0.0000 |" in text
    assert "Differing outputs (1;" in text


def test_load_judge_through_arbiter(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    module = types.ModuleType("arbiter.judge")
    monkeypatch.setitem(sys.modules, "arbiter.judge", module)

    class Judge:
        @classmethod
        def load(cls, path: Path) -> object:
            return PreferJudge([str(path)]) if path.name == "good" else object()

    module.Judge = Judge  # type: ignore[attr-defined]
    assert isinstance(load_judge(tmp_path / "good"), PreferJudge)
    with pytest.raises(CompareError, match="no compare"):
        load_judge(tmp_path / "bad")


def test_a_real_arbiter_judge_agrees_with_its_own_win_rate(tiny_artifact: Path, other: Path, data: Path,
                                                           tiny_student: Student,
                                                           tiny_tokenizer: DistilleryTokenizer,
                                                           tmp_path: Path) -> None:
    judge_module = pytest.importorskip("arbiter.judge")
    from arbiter.judge_training.artifact import save_judge
    from arbiter.judge_training.model import JudgeModel

    torch.manual_seed(7)
    backbone = Student(tiny_student.config)
    directory = save_judge(JudgeModel(backbone, step_head=False), tmp_path / "judge",
                           tokenizer=tiny_tokenizer, max_length=96)
    judge = load_judge(directory)
    report = compare_students(tiny_artifact, other, data, judge=judge, max_new_tokens=8)
    differing = [d for d in report["diffs"] if not d["identical"]]
    assert differing and report["judge"]["order_consistency"] == 1.0  # a reward model has no position bias
    prompts = [d["prompt"] for d in differing]
    theirs = judge_module.win_rate(judge, prompts, [d["a"]["output"] for d in differing],
                                   [d["b"]["output"] for d in differing])
    ours = sum(d["judge_score_a"] for d in differing) / len(differing)
    assert ours == pytest.approx(theirs["win_rate_a"])
    with pytest.raises(CompareError, match="cannot load the judge"):
        load_judge(tiny_artifact)  # a student, not a judge artifact


def test_cli_writes_json_and_markdown(tiny_artifact: Path, other: Path, data: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    module = types.ModuleType("arbiter.judge")
    module.Judge = types.SimpleNamespace(load=lambda path: FirstJudge())  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "arbiter.judge", module)
    out = tmp_path / "cmp"
    argv = [str(tiny_artifact), str(other), "--data", str(data), "--task", "arithmetic",
            "--judge", str(tmp_path),
            "--max-new-tokens", "4", "--max-examples", "3", "--out", str(out), "--format", "json"]
    assert compare.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((out / "comparison.json").read_text())
    assert printed == saved and saved["judge"]["win_rate_a"] == 0.5
    assert (out / "comparison.md").read_text().startswith("# Comparison on")
    events = [json.loads(line)["event"] for line in (out / "compare.jsonl").read_text().splitlines()]
    assert events == ["comparison_started", "comparison_done"]
    assert compare.main([str(tiny_artifact), str(other), "--data", str(tmp_path / "none.jsonl")]) == 2
    assert compare.main([str(tmp_path / "missing"), str(other), "--data", str(data)]) == 2
    assert compare.main([str(tiny_artifact), str(other), "--data", str(data), "--task", "chess"]) == 2
    shutil.rmtree(out)
