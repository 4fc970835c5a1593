"""End to end: the tiny student artifact through the Core ML CLI with default options, then the saved
package run by the reference executor against the repository's own greedy generation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conversion.convert_coreml import CoreMLOptions, encode_prompts, verification_cache_len
from conversion.coreml_report import report_path
from conversion.mil_executor import ExecutorRunner, greedy_candidate
from training.generation import generate
from training.model import Student
from training.tokenizer import DistilleryTokenizer

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_cli_default_conversion_round_trip(tiny_artifact: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiny.mlpackage"
    proc = subprocess.run(
        [sys.executable, "-m", "conversion.convert_coreml", str(tiny_artifact), "--out", str(out),
         "--max-new-tokens", "8"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(report_path(out).read_text())
    assert report["passed"] and report["errors"] == []
    assert report["target"] == "iOS18" and report["functions"] == ["prefill", "decode"]
    assert report["options"]["ane"] and report["options"]["quantize"] == "none"
    assert report["lint"]["errors"] == 0
    checks = report["checks"]
    assert checks["fp16_tolerance"] == max(3e-3, 1.5 * checks["pytorch_fp16_rel_error"])
    assert checks["prefill_rel_error"] <= checks["fp16_tolerance"] and checks["decode_rel_error"] <= checks["fp16_tolerance"]
    assert checks["ane_rewrite_rel_error"] <= 1e-5 and 0 <= checks["kl_per_token"] <= 1e-3
    assert checks["greedy_tokens_identical"] is True and checks["prompts_checked"] == 4
    # the shipped decode keeps the default cache (max_position_embeddings = 128); the checks ran the
    # decoder converted with a cache sized to the longest prompt + 8 generated tokens
    options = CoreMLOptions(**report["options"])
    prompts, _ = encode_prompts(tiny_artifact, options.prompts, 320)
    needed = max(len(p) for p in prompts) + 8
    assert checks["deployment_cache_len"] == 128 and report["options"]["cache_len"] is None
    assert checks["verification_cache_len"] == verification_cache_len(prompts, 8, options, 128)
    assert needed <= checks["verification_cache_len"] < needed + 32 and checks["verification_cache_len"] < 128

    student = Student.from_pretrained(str(tiny_artifact))
    tokenizer = DistilleryTokenizer.load(tiny_artifact)
    runner = ExecutorRunner(out, pad_id=student.config.pad_token_id)
    for text in ("Q: 7+3*2-4=?\n", "Set a timer for 5 minutes"):
        prompt = tokenizer.encode(text, add_bos=True)
        expected = generate(student, torch.tensor([prompt]), max_new_tokens=8)[0, len(prompt):].tolist()
        got = greedy_candidate(runner, prompt, 8, student.config.eos_token_id)
        assert got == expected[: len(got)] and len(got) == len(expected)
