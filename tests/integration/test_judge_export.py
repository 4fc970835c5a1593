"""A judge artifact through the student export commands (its backbone LM) and through arbiter.judge_export
(the whole judge: backbone + heads), each verified numerically against PyTorch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from arbiter.judge import Judge
from arbiter.judge_export import main as judge_export_main
from arbiter.judge_training.artifact import save_judge
from arbiter.judge_training.encoding import encode_input, pad_inputs
from arbiter.judge_training.model import JudgeModel
from conversion.export_onnx import main as export_onnx_main
from training.artifact import verify_manifest
from training.model import Student
from training.model_config import ModelConfig
from training.tokenizer import DistilleryTokenizer

CLAUSES = ("answer_correct", "steps_valid", "format_ok")
PROMPT = "Q: 7+3*2-4=?\n"
RESPONSES = [
    "<think><step>3*2=6</step><step>7+6=13</step><step>13-4=9</step></think><answer>9</answer>",
    "<think><step>3*2=5</step><step>7+5=12</step></think><answer>8</answer>",
    "<answer>9",
]


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory: pytest.TempPathFactory, tiny_config: ModelConfig,
              tiny_tokenizer: DistilleryTokenizer) -> Path:
    """A judge whose heads have large weights, so export errors are not hidden by tiny outputs."""
    torch.manual_seed(3)
    model = JudgeModel(Student(tiny_config), CLAUSES, step_head=True)
    with torch.no_grad():
        for head in (model.score_head, model.clause_head, model.step_head):
            assert head is not None
            head.weight.normal_(std=3.0)
            head.bias.normal_(std=1.0)
    return save_judge(model, tmp_path_factory.mktemp("judge") / "judge", tokenizer=tiny_tokenizer, max_length=96)


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_full_judge_exports_and_matches_pytorch(judge_dir: Path, tmp_path: Path, exporter: str) -> None:
    out = tmp_path / f"judge-onnx-{exporter}"
    assert judge_export_main([str(judge_dir), "--out", str(out), "--exporter", exporter]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] and report["checks"]["max_abs_error"] <= 1e-4
    assert [o["name"] for o in report["outputs"]] == ["score", "clause_logits", "step_logits"]
    assert [i["name"] for i in report["inputs"]] == ["input_ids", "attention_mask", "response_mask"]
    verify_manifest(out)
    spec = json.loads((out / "judge_config.json").read_text())
    assert spec["clauses"] == list(CLAUSES) and "tie_log_nu" in spec

    # the exported graph, used on its own, reproduces the API's rewards and step probabilities
    judge = Judge.load(judge_dir)
    tokenizer = DistilleryTokenizer.load(out)
    inputs = [encode_input(tokenizer, PROMPT, r, spec["max_length"]) for r in RESPONSES]
    padded = pad_inputs(inputs, tokenizer.pad_id, "left")
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    score, clauses, steps = session.run(None, {"input_ids": padded.input_ids.numpy(),
                                               "attention_mask": padded.attention_mask.numpy(),
                                               "response_mask": padded.response_mask.numpy()})
    verdicts = judge.score_batch([PROMPT] * len(RESPONSES), RESPONSES)
    np.testing.assert_allclose(score, [v.reward for v in verdicts], atol=1e-4)
    np.testing.assert_allclose(1 / (1 + np.exp(-clauses[0])), list(verdicts[0].clauses.values()), atol=1e-5)
    first = [int(padded.offsets[0]) + p for p in inputs[0].step_positions]
    np.testing.assert_allclose(1 / (1 + np.exp(-steps[0, first])), verdicts[0].steps, atol=1e-5)


def test_judge_backbone_goes_through_the_student_onnx_export(judge_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "backbone-onnx"
    assert export_onnx_main([str(judge_dir), "--out", str(out), "--exporter", "torchscript",
                             "--max-new-tokens", "4"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] and report["checks"]["max_abs_error"] <= 1e-4
    assert not (out / "judge_config.json").exists()


def test_export_refuses_a_plain_student(tiny_artifact: Path, tmp_path: Path) -> None:
    assert judge_export_main([str(tiny_artifact), "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_judge_backbone_goes_through_the_student_coreml_conversion(judge_dir: Path, tmp_path: Path) -> None:
    from conversion.convert_coreml import main as convert_coreml_main

    out = tmp_path / "judge.mlpackage"
    assert convert_coreml_main([str(judge_dir), "--out", str(out), "--seq-lens", "16,32",
                                "--max-new-tokens", "4"]) == 0
    assert out.is_dir()
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert report["passed"] and report["errors"] == []


def test_full_judge_converts_to_coreml_and_matches_pytorch(judge_dir: Path, tmp_path: Path) -> None:
    from arbiter.judge_coreml import main as judge_coreml_main
    from arbiter.judge_coreml import report_file

    out = tmp_path / "judge.mlpackage"
    assert judge_coreml_main([str(judge_dir), "--out", str(out), "--pairs", "4"]) == 0
    report = json.loads(report_file(out).read_text())
    assert report["passed"] and report["errors"] == [] and out.is_dir()
    assert report["outputs"] == ["score", "clause_logits", "step_logits"]
    assert report["inputs"] == ["input_ids", "attention_mask", "response_mask", "mask"]
    checks = report["checks"]
    assert checks["inputs_checked"] == 2 * (2 + 4) and checks["decision_flips"] == []
    assert max(checks["rewrite_rel_error"].values()) <= 1e-5 and checks["rewrite_rel_tolerance"] == 1e-5
    # the student's fp16 rule: each output within max(3e-3, 1.5 x PyTorch's own fp16 error of it)
    for name, value in checks["program_rel_error"].items():
        floor = checks["pytorch_fp16_rel_error"][name]
        assert checks["program_rel_tolerance"][name] == max(3e-3, 1.5 * floor)
        assert 0 < value <= checks["program_rel_tolerance"][name]
    # fp16 rounds (errors are not 0) but stays within 0.02 logits + 0.3% of the reference
    assert all(v > 0 for v in checks["program_max_abs_error"].values()), checks
    assert all(0 < v <= 1.0 for v in checks["tolerance_used"].values()), checks
    assert report["lint"]["errors"] == 0


def test_judge_coreml_verification_catches_a_wrong_reference(judge_dir: Path, tmp_path: Path) -> None:
    from arbiter.judge_coreml import AneJudge, JudgeCoreMLOptions, check_inputs, convert, verify
    from arbiter.judge_training.artifact import load_judge
    from conversion.mil_executor import MilFunction

    judge, spec, tokenizer = load_judge(judge_dir)
    options = JudgeCoreMLOptions(pairs=1)
    module = AneJudge(judge).eval()
    function = MilFunction(convert(module, options)._mil_program, "main")
    with torch.no_grad():
        judge.score_head.bias.add_(0.5)  # the reference now disagrees with the program by 0.5
    checks = verify(judge, module, function, check_inputs(tokenizer, spec.max_length, 1), options)
    assert checks["program_max_abs_error"]["score"] > 0.4


def test_judge_coreml_refuses_a_plain_student(tiny_artifact: Path, tmp_path: Path) -> None:
    from arbiter.judge_coreml import main as judge_coreml_main

    assert judge_coreml_main([str(tiny_artifact), "--out", str(tmp_path / "x.mlpackage")]) == 2
    assert not (tmp_path / "x.mlpackage").exists()
