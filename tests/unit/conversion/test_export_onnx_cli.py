"""``python -m conversion.export_onnx`` as a user runs it: report.json keys and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conversion.export_onnx import main

REPO = Path(__file__).resolve().parents[3]
Capsys = pytest.CaptureFixture[str]


def test_cli_subprocess_writes_report_with_stable_keys(tiny_artifact: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Q: 5-1+8=?\\n\nSet a timer\n")
    out = tmp_path / "onnx"
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.run(
        [sys.executable, "-m", "conversion.export_onnx", str(tiny_artifact), "--out", str(out),
         "--exporter", "torchscript", "--opset", "17", "--max-new-tokens", "5", "--prompts", str(prompts),
         "--atol", "1e-4", "--decode-steps", "2", "--threads", "1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "PASS" in proc.stdout and "fp32 vs PyTorch" in proc.stdout
    report = json.loads((out / "report.json").read_text())
    assert {"format", "model", "opset", "exporter", "inputs", "outputs", "checks", "fp32", "variants",
            "timings_s", "passed", "copied_files", "prompts", "versions", "position_ids"} <= set(report)
    assert {"max_abs_error", "max_rel_error", "greedy_tokens_identical", "decode_steps_checked",
            "max_abs_error_present", "atol", "passed"} <= set(report["checks"])
    assert report["passed"] is True and report["opset"] == 17 and report["exporter"] == "torchscript"
    assert report["variants"] == {}
    assert report["threads"] == {"requested": 1, "torch": 1}
    assert [s["prompt"] for s in report["prompts"]["samples"]] == ["Q: 5-1+8=?\n", "Set a timer"]
    assert all(len(s["token_ids"]) <= 5 for s in report["prompts"]["samples"])
    assert (out / "model.onnx").is_file() and (out / "tokenizer.json").is_file()


def test_failed_fp32_check_exits_1(tiny_artifact: Path, tmp_path: Path, capsys: Capsys) -> None:
    """An atol below float32 round-off cannot be met: the report is written and the exit code is 1."""
    out = tmp_path / "onnx"
    code = main([str(tiny_artifact), "--out", str(out), "--exporter", "torchscript", "--opset", "17",
                 "--atol", "1e-12", "--max-new-tokens", "2", "--decode-steps", "1", "--threads", "1"])
    assert code == 1
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] is False and report["checks"]["max_abs_error"] > 1e-12
    assert "FAIL" in capsys.readouterr().out


def test_bad_flag_values_exit_2(tiny_artifact: Path, tmp_path: Path, capsys: Capsys) -> None:
    assert main([str(tiny_artifact), "--out", str(tmp_path / "o"), "--opset", "9"]) == 2
    assert "opset" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([str(tiny_artifact), "--out", str(tmp_path / "o"), "--quantize", "fp8"])
    assert exc.value.code == 2
