"""ONNX export of the tiny artifact: one KV-cache graph checked in onnxruntime against PyTorch."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from pydantic import ValidationError

from conversion.export_onnx import MODEL_FILE, OnnxExportConfig, export_onnx, main
from conversion.onnx_graph import check_graph, describe_io, export_graph
from conversion.onnx_session import OnnxCausalLM
from conversion.onnx_verify import verify_graph
from conversion.verify_common import (
    DEFAULT_PROMPTS,
    eager_step,
    encode_prompts,
    greedy_generate,
    pad_prompts,
)
from training.artifact import ArtifactError, verify_manifest
from training.model import Student
from training.tokenizer import DistilleryTokenizer

ATOL = 1e-4
Exported = tuple[Path, dict[str, Any]]
Capsys = pytest.CaptureFixture[str]


@pytest.fixture(scope="module")
def exported(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """The tiny artifact exported once with the default (dynamo) exporter and an int8 variant."""
    out = tmp_path_factory.mktemp("onnx") / "export"
    config = OnnxExportConfig(student_dir=tiny_artifact, out=out, quantize="int8", max_new_tokens=8,
                              decode_steps=2, threads=1)
    return out, export_onnx(config)


@pytest.fixture(scope="module")
def student(tiny_artifact: Path) -> Student:
    return Student.from_pretrained(str(tiny_artifact))


def test_report_passes_with_fp32_error_within_atol(exported: Exported) -> None:
    out, report = exported
    checks = report["checks"]
    assert report["passed"] is True and checks["passed"] is True
    assert checks["max_abs_error"] <= ATOL
    assert checks["max_abs_error_present"] <= ATOL
    assert 0 <= checks["max_rel_error"] < 1e-3
    assert checks["greedy_tokens_identical"] is True
    assert checks["decode_steps_checked"] == 4 * 3  # 4 batches x (1 chunk + 2 decode steps)
    assert "random_b3_t10_left_padded" in checks["batches"]
    assert report["exporter"] == "dynamo" and report["opset"] == 18
    assert json.loads((out / "report.json").read_text()) == report


def test_graph_has_optimum_names_and_symbolic_dims(exported: Exported,
                                                   student: Student) -> None:
    out, _ = exported
    check_graph(out / MODEL_FILE)
    io = describe_io(out / MODEL_FILE)
    cfg = student.config
    inputs = {i["name"]: i for i in io["inputs"]}
    outputs = {o["name"]: o for o in io["outputs"]}
    assert list(inputs)[:2] == ["input_ids", "attention_mask"]
    assert inputs["input_ids"]["shape"] == ["batch_size", "sequence_length"]
    assert inputs["attention_mask"]["shape"] == ["batch_size", "total_sequence_length"]
    assert inputs["input_ids"]["dtype"] == "int64"
    for i in range(cfg.num_hidden_layers):
        for kind in ("key", "value"):
            assert inputs[f"past_key_values.{i}.{kind}"]["shape"] == [
                "batch_size", cfg.num_key_value_heads, "past_sequence_length", cfg.head_dim]
            assert outputs[f"present.{i}.{kind}"]["shape"] == [
                "batch_size", cfg.num_key_value_heads, "total_sequence_length", cfg.head_dim]
    assert outputs["logits"]["shape"] == ["batch_size", "sequence_length", cfg.vocab_size]
    assert len(inputs) == 2 + 2 * cfg.num_hidden_layers and "position_ids" not in inputs


@pytest.mark.parametrize("lengths", [(9,), (9, 5, 2)], ids=["batch1", "batch3_left_padded"])
def test_prefill_past0_then_cached_steps_match_pytorch(exported: Exported, student: Student,
                                                       lengths: tuple[int, ...]) -> None:
    out, _ = exported
    runner = OnnxCausalLM(out / MODEL_FILE)
    reference = eager_step(student)
    cfg = student.config
    rng = np.random.default_rng(3)
    ids, mask = pad_prompts([rng.integers(3, cfg.vocab_size, n).tolist() for n in lengths], cfg.pad_token_id)
    assert (mask[:, 0] == 0).sum() == len(lengths) - 1  # shorter rows are left-padded
    got, got_cache = runner.step(ids, mask, None)  # past length 0
    want, want_cache = reference(ids, mask, None)
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
    for new_len in (3, 1, 1):  # a chunk with past > 0, then single-token decode
        past_len = got_cache[0].shape[2]
        new = rng.integers(3, cfg.vocab_size, (len(lengths), new_len))
        mask = np.concatenate([mask, np.ones_like(new)], axis=1)
        got, got_cache = runner.step(new, mask, got_cache)
        want, want_cache = reference(new, mask, want_cache)
        assert got.shape == (len(lengths), new_len, cfg.vocab_size)
        assert got_cache[0].shape == (len(lengths), cfg.num_key_value_heads, past_len + new_len, cfg.head_dim)
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
        for g, w in zip(got_cache, want_cache, strict=True):
            np.testing.assert_allclose(g, w, atol=ATOL, rtol=0)


def test_greedy_generation_with_bundled_tokenizer_is_identical(exported: Exported,
                                                               student: Student) -> None:
    out, _ = exported
    tokenizer = DistilleryTokenizer.load(out)  # the export directory is self-contained
    runner = OnnxCausalLM(out / MODEL_FILE)
    cfg = student.config
    ids, mask = pad_prompts(encode_prompts(tokenizer, DEFAULT_PROMPTS, cfg.vocab_size), cfg.pad_token_id)
    want = student.generate(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), max_new_tokens=10)
    got = greedy_generate(runner.step, ids, mask, max_new_tokens=10, eos_token_id=cfg.eos_token_id,
                          pad_token_id=cfg.pad_token_id)
    np.testing.assert_array_equal(got, want.numpy())
    assert got.shape[1] == ids.shape[1] + 10


def test_greedy_eos_handling_matches_generate(exported: Exported, student: Student) -> None:
    """Make the second generated token of row 0 the eos: that row then pads, the others continue."""
    out, _ = exported
    runner = OnnxCausalLM(out / MODEL_FILE)
    cfg = student.config
    ids, mask = pad_prompts([[5, 6, 7, 8], [9, 10]], cfg.pad_token_id)
    free = greedy_generate(runner.step, ids, mask, max_new_tokens=6, eos_token_id=-1, pad_token_id=0)
    eos = int(free[0, ids.shape[1] + 1])
    got = greedy_generate(runner.step, ids, mask, max_new_tokens=6, eos_token_id=eos,
                          pad_token_id=cfg.pad_token_id)
    want = student.generate(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), max_new_tokens=6,
                            eos_token_id=eos).numpy()
    np.testing.assert_array_equal(got, want)
    assert eos in got[0, ids.shape[1]:]


def test_verifier_catches_a_perturbed_onnx_initializer(exported: Exported, student: Student,
                                                       tmp_path: Path) -> None:
    out, _ = exported
    model = onnx.load(str(out / MODEL_FILE))
    target = max((t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT),
                 key=lambda t: int(np.prod(t.dims)))
    weights = numpy_helper.to_array(target).copy()
    weights.flat[::7] += 0.05
    target.CopyFrom(numpy_helper.from_array(weights, target.name))
    onnx.save(model, str(tmp_path / "perturbed.onnx"))
    prompts = encode_prompts(None, DEFAULT_PROMPTS[:2], student.config.vocab_size)
    checks, _ = verify_graph(student, tmp_path / "perturbed.onnx", prompts, atol=ATOL, max_new_tokens=4,
                             decode_steps=1)
    assert not checks.passed
    assert checks.max_abs_error > ATOL


def test_verifier_catches_a_torch_weight_changed_after_export(exported: Exported,
                                                              student: Student) -> None:
    out, _ = exported
    changed = copy.deepcopy(student)
    with torch.no_grad():
        changed.model.layers[0].mlp.down_proj.weight[0, 0] += 0.5
    prompts = encode_prompts(None, DEFAULT_PROMPTS[:2], student.config.vocab_size)
    checks, _ = verify_graph(changed, out / MODEL_FILE, prompts, atol=ATOL, max_new_tokens=4, decode_steps=1)
    assert not checks.passed and checks.max_abs_error > ATOL


def test_output_directory_is_self_contained_and_manifested(exported: Exported,
                                                           tiny_artifact: Path) -> None:
    out, report = exported
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (out / name).read_bytes() == (tiny_artifact / name).read_bytes()
    assert sorted(report["copied_files"]) == sorted(
        ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"])
    manifest = verify_manifest(out)
    assert {"model.onnx", "model_int8.onnx", "report.json"} <= set(manifest["files"])
    samples = report["prompts"]["samples"]
    assert report["prompts"]["source"] == "tokenizer" and len(samples) == len(DEFAULT_PROMPTS)
    assert all(isinstance(s["completion"], str) for s in samples)


def test_int8_variant_reports_agreement_size_and_speed(exported: Exported) -> None:
    out, report = exported
    int8 = report["variants"]["int8"]
    assert set(int8) == {"file", "max_abs_error", "max_rel_error", "argmax_agreement", "size_bytes",
                         "ms_per_token"}
    assert (out / int8["file"]).stat().st_size == int8["size_bytes"]
    assert int8["size_bytes"] < report["fp32"]["size_bytes"]
    assert 0.5 < int8["argmax_agreement"] <= 1.0
    assert ATOL < int8["max_abs_error"] < 1.0  # quantized, yet close
    assert int8["ms_per_token"] > 0
    assert "int4" not in report["variants"]


def test_tampered_artifact_is_refused(tiny_artifact: Path, tmp_path: Path, capsys: Capsys) -> None:
    bad = tmp_path / "tampered"
    shutil.copytree(tiny_artifact, bad)
    weights = bad / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256"):
        Student.from_pretrained(str(bad))
    with pytest.raises(ArtifactError):
        export_onnx(OnnxExportConfig(student_dir=bad, out=tmp_path / "out"))
    assert main([str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "model.safetensors" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_refuses_to_replace_unrelated_or_source_directories(tiny_artifact: Path, tmp_path: Path) -> None:
    unrelated = tmp_path / "docs"
    unrelated.mkdir()
    (unrelated / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty"):
        export_onnx(OnnxExportConfig(student_dir=tiny_artifact, out=unrelated))
    with pytest.raises(ValueError, match="student directory"):
        export_onnx(OnnxExportConfig(student_dir=tiny_artifact, out=tiny_artifact))
    assert (unrelated / "notes.txt").read_text() == "keep me"


def test_torchscript_exporter_also_verifies(student: Student, tmp_path: Path) -> None:
    path = tmp_path / "ts.onnx"
    export_graph(student, path, exporter="torchscript", opset=17)
    check_graph(path)
    assert describe_io(path)["opset"] == 17
    prompts = encode_prompts(None, DEFAULT_PROMPTS[:2], student.config.vocab_size)
    checks, _ = verify_graph(student, path, prompts, atol=ATOL, max_new_tokens=6, decode_steps=2)
    assert checks.passed and checks.greedy_tokens_identical and checks.max_abs_error <= ATOL


def test_artifact_without_tokenizer_exports_with_token_id_prompts(tiny_student: Student,
                                                                   tmp_path: Path) -> None:
    source = tmp_path / "no_tokenizer"
    tiny_student.save_pretrained(source)
    report = export_onnx(OnnxExportConfig(student_dir=source, out=tmp_path / "out", exporter="torchscript",
                                          opset=17, max_new_tokens=3, decode_steps=1, threads=1))
    assert report["passed"] and report["prompts"]["source"] == "token_ids"
    assert all(s["prompt"] is None and s["prompt_ids"] for s in report["prompts"]["samples"])
    assert report["copied_files"] == ["config.json", "generation_config.json"]
    assert not (tmp_path / "out" / "tokenizer.json").exists()


def test_config_is_validated_at_the_edge(tiny_artifact: Path, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="opset"):
        OnnxExportConfig(student_dir=tiny_artifact, out=tmp_path, opset=14)
    with pytest.raises(ValidationError, match="opset"):
        OnnxExportConfig(student_dir=tiny_artifact, out=tmp_path, exporter="torchscript", opset=21)
    with pytest.raises(ValidationError):
        OnnxExportConfig(student_dir=tiny_artifact, out=tmp_path, atol=0)
    with pytest.raises(ValidationError, match="prompts"):
        OnnxExportConfig(student_dir=tiny_artifact, out=tmp_path, prompts=tmp_path / "missing.txt")
    with pytest.raises(ValidationError, match="not a directory"):
        OnnxExportConfig(student_dir=tmp_path / "nope", out=tmp_path)
    with pytest.raises(ValueError, match="exporter"):
        export_graph(Student.from_pretrained(str(tiny_artifact)), tmp_path / "x.onnx", exporter="jit")


def test_help_lists_the_flags(capsys: Capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--out", "--quantize", "--opset", "--max-new-tokens", "--prompts", "--atol", "--exporter"):
        assert flag in text
