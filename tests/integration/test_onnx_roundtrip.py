"""End to end: both CLIs on a student artifact, then the ONNX directory used on its own (moved elsewhere):
tokenizer from the directory, onnxruntime greedy generation with a KV cache, text identical to PyTorch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conversion.onnx_session import OnnxCausalLM
from conversion.verify_common import greedy_generate, pad_prompts
from training.artifact import verify_manifest
from training.model import Student
from training.model_config import ModelConfig
from training.tokenizer import DistilleryTokenizer

REPO = Path(__file__).resolve().parents[2]
PROMPTS = ["Q: 7+3*2-4=?\n", "Set a timer for 5 minutes", "Will it rain"]


def run_cli(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    # 2 OpenMP threads, or what the environment sets (1 under pytest-xdist: each worker has one core)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env=env)


@pytest.fixture(scope="module")
def onnx_dir(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default CLI (dynamo exporter) with every variant, then the directory moved away from its source."""
    out = tmp_path_factory.mktemp("roundtrip") / "onnx"
    proc = run_cli("conversion.export_onnx", str(tiny_artifact), "--out", str(out), "--quantize", "all",
                   "--max-new-tokens", "12", "--threads", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "int8:" in proc.stdout and "int4:" in proc.stdout
    moved = tmp_path_factory.mktemp("elsewhere") / "deployed"
    shutil.move(str(out), moved)
    return moved


def test_report_and_manifest(onnx_dir: Path) -> None:
    report = json.loads((onnx_dir / "report.json").read_text())
    assert report["passed"] and report["exporter"] == "dynamo"
    checks = report["checks"]
    assert checks["rtol"] == 1e-5 and checks["atol"] is None and checks["failures"] == []
    assert checks["max_rel_error"] <= 1e-5 and checks["max_rel_error_present"] <= 1e-5
    assert checks["greedy_tokens_identical"]
    for name in ("int8", "int4"):
        variant = report["variants"][name]
        assert (onnx_dir / variant["file"]).is_file()
        assert 0.0 <= variant["argmax_agreement"] <= 1.0 and variant["size_bytes"] > 0
    verify_manifest(onnx_dir)


def test_deployed_directory_generates_the_same_text_as_pytorch(onnx_dir: Path, tiny_artifact: Path) -> None:
    tokenizer = DistilleryTokenizer.load(onnx_dir)
    config = ModelConfig.load(onnx_dir / "config.json")
    generation = json.loads((onnx_dir / "generation_config.json").read_text())
    runner = OnnxCausalLM(onnx_dir / "model.onnx")
    ids, mask = pad_prompts([tokenizer.encode(p) for p in PROMPTS], generation["pad_token_id"])
    onnx_tokens = greedy_generate(runner.step, ids, mask, max_new_tokens=20,
                                  eos_token_id=generation["eos_token_id"],
                                  pad_token_id=generation["pad_token_id"])
    student = Student.from_pretrained(str(tiny_artifact))
    assert student.config == config
    torch_tokens = student.generate(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                                    max_new_tokens=20).numpy()
    np.testing.assert_array_equal(onnx_tokens, torch_tokens)
    width = ids.shape[1]
    texts = [tokenizer.decode(row[width:].tolist()) for row in onnx_tokens]
    assert texts == [tokenizer.decode(row[width:].tolist()) for row in torch_tokens]


@pytest.mark.parametrize("variant", ["int8", "int4"])
def test_quantized_variants_generate(onnx_dir: Path, variant: str) -> None:
    runner = OnnxCausalLM(onnx_dir / f"model_{variant}.onnx")
    tokenizer = DistilleryTokenizer.load(onnx_dir)
    ids, mask = pad_prompts([tokenizer.encode(p) for p in PROMPTS], 0)
    out = greedy_generate(runner.step, ids, mask, max_new_tokens=8, eos_token_id=-1, pad_token_id=0)
    assert out.shape == (len(PROMPTS), ids.shape[1] + 8)
    assert ((out >= 0) & (out < tokenizer.vocab_size)).all()


def test_pytorch_export_cli(tiny_artifact: Path, tmp_path: Path) -> None:
    out = tmp_path / "pt2"
    proc = run_cli("conversion.export_pytorch", str(tiny_artifact), "--out", str(out),
                   "--max-new-tokens", "8", "--threads", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] and report["checks"]["greedy_tokens_identical"]
    assert (out / "prefill.pt2").is_file() and (out / "decode.pt2").is_file()
    verify_manifest(out)
