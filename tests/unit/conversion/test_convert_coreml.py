"""The Core ML conversion pipeline: options, export + report, quantization checks and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from conversion import convert_coreml, criteria
from conversion.convert_coreml import (
    DEFAULT_PROMPTS,
    CoreMLOptions,
    SeqLens,
    _length_inputs,
    build_decoder,
    build_modules,
    encode_prompts,
    exact_rewrite_errors,
    export_coreml,
    int4_block_size,
    lengths_within,
    quantized_reference,
    resolve_cache_len,
    rewrite_errors,
    verification_cache_len,
)
from conversion.coreml_report import ConversionStatus, CoreMLReport, report_path
from conversion.mil_executor import load_program
from training.model import Student

REPO = Path(__file__).resolve().parents[3]
REPORT_KEYS = {"model", "target", "options", "size_bytes", "op_histogram", "lint", "checks", "errors", "passed",
               "seconds"}
CHECK_KEYS = {"ane_rewrite_max_abs_error", "prefill_rel_error", "decode_rel_error", "greedy_tokens_identical",
              "prompts_checked", "pytorch_fp16_rel_error"}


@pytest.fixture(scope="module")
def exported(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CoreMLReport]:
    """Default options (ANE, fp16, stateful iOS18) with small shapes and a 4-chunk lm_head; the shipped
    cache (64) is longer than the check sequences need (32)."""
    out = tmp_path_factory.mktemp("export") / "student.mlpackage"
    options = CoreMLOptions(seq_lens="8,32", cache_len=64, lm_head_chunk=100, max_new_tokens=4,
                            prompts=DEFAULT_PROMPTS[:2])
    return out, export_coreml(tiny_artifact, out, options)


@pytest.fixture(scope="module")
def quantized(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CoreMLReport]:
    out = tmp_path_factory.mktemp("int4") / "student.mlpackage"
    options = CoreMLOptions(seq_lens="16", cache_len=64, quantize="int4", max_new_tokens=3,
                            prompts=DEFAULT_PROMPTS[:1])
    return out, export_coreml(tiny_artifact, out, options)


def test_export_passes_and_writes_the_report(exported: tuple[Path, CoreMLReport]) -> None:
    out, report = exported
    assert report.passed, report.errors
    assert report.status == ConversionStatus.PASSED and report.exceeded == []
    assert out.is_dir() and report.functions == ["prefill", "decode"]
    written = json.loads(report_path(out).read_text())
    assert report_path(out).name == "student.report.json"
    assert set(written) >= REPORT_KEYS and set(written["checks"]) >= CHECK_KEYS
    assert {"errors", "warnings", "findings"} <= set(written["lint"])
    assert written["lint"]["errors"] == 0
    checks = written["checks"]
    assert checks["ane_rewrite_rel_error"] <= 1e-5 and checks["ane_rewrite_tolerance"] == 1e-5
    assert checks["ane_rewrite_max_abs_error"] >= 0
    assert 0 < checks["pytorch_fp16_rel_error"] < 3e-3  # PyTorch's own fp16 on the same sequences
    assert checks["fp16_tolerance"] == max(3e-3, 1.5 * checks["pytorch_fp16_rel_error"])
    assert 0 < checks["prefill_rel_error"] <= checks["fp16_tolerance"] == checks["prefill_tolerance"]
    assert 0 < checks["decode_rel_error"] <= checks["fp16_tolerance"] == checks["decode_tolerance"]
    assert 0 < checks["kl_per_token"] <= checks["kl_tolerance"] == 1e-3
    assert checks["kl_per_token"] == max(checks["prefill_kl_per_token"], checks["decode_kl_per_token"])
    assert checks["greedy_tokens_identical"] is True and checks["prompts_checked"] == 2
    assert set(written["op_histogram"]) == {"prefill", "decode"}
    assert written["size_bytes"] > 0 and written["seconds"] > 0
    assert {"convert", "save", "lint", "verify"} <= set(written["timings"])


def test_verification_cache_is_sized_to_the_check_sequences(exported: tuple[Path, CoreMLReport],
                                                            tiny_artifact: Path) -> None:
    """The shipped decode keeps its 64-slot cache; the checks run a copy converted with 32 slots (the
    longest prompt + 4 generated tokens, rounded up to 32) and run the shipped decode for one step."""
    out, report = exported
    checks, options = report.checks, CoreMLOptions(**report.options)
    prompts, _ = encode_prompts(tiny_artifact, options.prompts, 320)
    assert max(len(p) for p in prompts) + options.max_new_tokens <= 32
    assert verification_cache_len(prompts, options.max_new_tokens, options, 64) == 32
    assert (checks.verification_cache_len, checks.deployment_cache_len) == (32, 64)
    assert checks.verification_program is not None and "converted again" in checks.verification_program
    assert checks.deployment_decode_rel_error is not None
    assert 0 < checks.deployment_decode_rel_error <= checks.fp16_tolerance
    assert "convert_verification" in report.timings
    shipped = load_program(out)
    cache = shipped.functions["decode"].inputs["key_cache"].sym_type.wrapped_type().get_shape()
    assert cache[-1] == 64  # what ships keeps the requested cache length
    assert not list(out.parent.glob(".coreml-verify-*"))  # the verification program is not left behind


def test_verification_cache_len_rules(tiny_student: Student) -> None:
    options = CoreMLOptions(seq_lens="16,32,64", max_new_tokens=16)
    assert verification_cache_len([[1] * 10, [1] * 20], 16, options, 2048) == 64  # 36 -> 64
    assert verification_cache_len([[1] * 10], 16, options, 2048) == 32
    assert verification_cache_len([[1] * 500], 16, options, 2048) == 64  # cut to seq_lens, as checked
    assert verification_cache_len([[1] * 10], 16, options, 32) == 32  # never above the shipped cache
    ranged = CoreMLOptions(seq_lens="1:1024", max_new_tokens=8)
    assert verification_cache_len([[1] * 100], 8, ranged, 2048) == 128
    assert lengths_within(SeqLens.parse("16,32,64").with_one(), 32) == SeqLens(1, 32, (1, 16, 32))
    assert lengths_within(SeqLens.parse("1:128"), 64) == SeqLens(1, 64, None)


def test_each_rmsnorm_is_one_fused_layer_norm(exported: tuple[Path, CoreMLReport], tiny_student: Student) -> None:
    """coremltools fuses the ANE RMSNorm pattern into ``layer_norm``: if a refactor breaks the fusion, the
    norms fall back to six fp16-rounded ops each and the fp16 error grows (see Fp16SafeRMSNorm)."""
    _, report = exported
    norms = 2 * tiny_student.config.num_hidden_layers + 1
    for function, histogram in report.op_histogram.items():
        assert histogram.get("layer_norm") == norms, (function, histogram)
        assert "rsqrt" not in histogram, (function, histogram)


def test_fused_attention_export_passes_with_one_attention_op_per_layer(tiny_artifact: Path, tmp_path: Path,
                                                                        tiny_student: Student) -> None:
    out = tmp_path / "fused.mlpackage"
    options = CoreMLOptions(seq_lens="8,32", cache_len=32, max_new_tokens=4, prompts=DEFAULT_PROMPTS[:2],
                            attention="fused")
    report = export_coreml(tiny_artifact, out, options)
    assert report.passed, report.errors
    assert report.checks.prefill_rel_error is not None and 0 < report.checks.prefill_rel_error <= 3e-3
    layers = tiny_student.config.num_hidden_layers
    for function, histogram in report.op_histogram.items():
        assert histogram.get("scaled_dot_product_attention") == layers, (function, histogram)
        assert "einsum" not in histogram and "softmax" not in histogram
    assert report.lint.errors == 0
    # within the fused layout's transpose/reshape budget, nothing off the Neural Engine (the tiny model's
    # 16-channel cache is the only warning: not a multiple of 32)
    codes = {f["code"] for f in report.lint.findings if f["level"] == "warning"}
    assert codes == {"STATE_ALIGNMENT"}, report.lint.findings


def test_int4_export_checks_against_dequantized_weights(quantized: tuple[Path, CoreMLReport]) -> None:
    _, report = quantized
    assert report.passed, report.errors
    q = report.checks.quantization
    assert q is not None and q["mode"] == "int4" and q["compressed_weights"] >= 6
    assert q["weight_rel_error"] <= q["weight_bound"]
    assert "dequantized" in report.checks.reference
    assert report.checks.prefill_rel_error is not None and report.checks.prefill_rel_error <= 3e-3
    # decode checked on the int4 decoder converted again with the check's 32-slot cache
    assert report.checks.decode_rel_error is not None and report.checks.decode_rel_error <= 3e-3
    assert (report.checks.verification_cache_len, report.checks.deployment_cache_len) == (32, 64)
    assert report.checks.kl_per_token is not None and report.checks.kl_per_token <= 1e-3


def test_a_dequantized_weight_outside_its_step_is_refused(quantized: tuple[Path, CoreMLReport],
                                                          tiny_student: Student) -> None:
    out, report = quantized
    program = load_program(out)
    op = next(op for op in program.functions["prefill"].operations if op.op_type.startswith("constexpr_"))
    scale = op.inputs["scale"]
    scale._sym_val.val = (scale.val * 3).astype(scale.val.dtype)
    options = CoreMLOptions(**report.options)
    prefill, _ = build_modules(tiny_student, options, 128)
    with pytest.raises(RuntimeError, match="int4 bound"):
        quantized_reference(prefill, program, ["prefill"], "int4", "fp16")


def test_options_are_validated() -> None:
    assert CoreMLOptions().stateful is True
    assert CoreMLOptions(target="iOS17").stateful is False
    with pytest.raises(ValidationError, match="iOS18"):
        CoreMLOptions(target="iOS17", stateful=True)
    with pytest.raises(ValidationError, match="int4"):
        CoreMLOptions(target="iOS17", quantize="int4")
    with pytest.raises(ValidationError, match="multiple of 32"):
        CoreMLOptions(cache_len=100)
    with pytest.raises(ValidationError):
        CoreMLOptions(lm_head_chunk=20000)
    with pytest.raises(ValidationError):
        CoreMLOptions(seq_lens="0:8")
    with pytest.raises(ValidationError, match="attention fused"):
        CoreMLOptions(target="iOS17", attention="fused")
    with pytest.raises(ValidationError, match="attention fused"):
        CoreMLOptions(ane=False, attention="fused")


def test_seq_lens_and_cache_resolution(tiny_student: Student) -> None:
    assert SeqLens.parse("32, 16,64") == SeqLens(16, 64, (16, 32, 64))
    assert SeqLens.parse("1:128") == SeqLens(1, 128, None)
    assert SeqLens.parse("16,32").with_one().enumerated == (1, 16, 32)
    with pytest.raises(ValueError):
        SeqLens.parse("x")
    assert resolve_cache_len(CoreMLOptions(), tiny_student.config) == 128
    with pytest.raises(ValueError, match="max_position_embeddings"):
        resolve_cache_len(CoreMLOptions(seq_lens="256"), tiny_student.config)
    with pytest.raises(ValueError, match="cache length"):
        resolve_cache_len(CoreMLOptions(seq_lens="64", cache_len=32), tiny_student.config)
    assert [int4_block_size((8, n)) for n in (64, 688, 40, 6)] == [32, 16, 8, 1]


def test_flexible_shapes_per_target() -> None:
    import coremltools as ct

    ranged = _length_inputs(SeqLens.parse("1:64"), 32, np.float16, "iOS18")
    ids, mask = (t.shape for t in ranged)
    assert isinstance(ids.shape[1], ct.RangeDim) and ids.shape[1].upper_bound == 64
    assert mask.shape[1] == 32 and isinstance(mask.shape[3], ct.RangeDim)
    enumerated = _length_inputs(SeqLens.parse("8,16"), None, np.float16, "iOS18")
    assert all(isinstance(t.shape, ct.EnumeratedShapes) for t in enumerated)
    ios17 = _length_inputs(SeqLens.parse("8,16"), None, np.float16, "iOS17")
    assert isinstance(ios17[0].shape, ct.EnumeratedShapes)  # one enumerated input below iOS18
    assert not isinstance(ios17[1].shape, ct.EnumeratedShapes)
    fixed = _length_inputs(SeqLens.parse("16"), None, np.float16, "iOS18")
    assert [tuple(t.shape.shape) for t in fixed] == [(1, 16), (1, 16, 1, 16)]


def test_failed_checks_exit_nonzero(tiny_artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(criteria, "FP16_REL_FLOOR", 1e-9)  # the shared rule, read where it is applied
    monkeypatch.setattr(criteria, "FP16_FLOOR_FACTOR", 1e-6)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Will it rain today?\n")
    out = tmp_path / "strict.mlpackage"
    threads = torch.get_num_threads()  # main() sets the process's torch threads
    try:
        code = convert_coreml.main([str(tiny_artifact), "--out", str(out), "--target", "iOS17", "--seq-lens",
                                    "16", "--max-new-tokens", "2", "--prompts", str(prompts)])
    finally:
        torch.set_num_threads(threads)
    assert code == 1
    report = json.loads(report_path(out).read_text())
    assert report["passed"] is False
    assert any(e.startswith("prefill_rel_error") for e in report["errors"])
    assert "prefill_rel_error" in report["exceeded"]
    assert report["status"] in ("tolerance_exceeded", "checks_failed")
    assert (report["status"] == "tolerance_exceeded") == (report["checks"]["greedy_tokens_identical"] is True)
    assert "FAILED" in capsys.readouterr().out


def test_a_programming_error_is_raised_with_its_traceback(tiny_artifact: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug (here a TypeError inside the conversion) is not turned into a report line: it propagates, with
    the frame that raised it, and no report (stale or new) is left for a caller to misread."""

    def broken(*args: object, **kwargs: object) -> None:
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")

    monkeypatch.setattr(convert_coreml, "build_modules", broken)
    out = tmp_path / "bug.mlpackage"
    report_path(out).write_text('{"status": "tolerance_exceeded"}')  # a stale report of an earlier run
    options = CoreMLOptions(seq_lens="16", target="iOS17", max_new_tokens=2, prompts=DEFAULT_PROMPTS[:1])
    with pytest.raises(TypeError, match="unsupported operand") as raised:
        export_coreml(tiny_artifact, out, options)
    assert raised.traceback[-1].name == "broken"
    assert not report_path(out).exists()


def test_a_conversion_error_is_reported_with_status_error(tiny_artifact: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """What a user can cause (a model coremltools cannot convert, an unusable artifact) ends in the report:
    status ``error`` and the exception's class, exit code 1 from the CLI."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise convert_coreml.ConversionError("coremltools could not convert the prefill module: op 'x'")

    monkeypatch.setattr(convert_coreml, "convert_module", refuse)
    out = tmp_path / "refused.mlpackage"
    options = CoreMLOptions(seq_lens="16", target="iOS17", max_new_tokens=2, prompts=DEFAULT_PROMPTS[:1])
    report = export_coreml(tiny_artifact, out, options)
    assert report.status == ConversionStatus.ERROR and report.error_type == "ConversionError"
    assert not report.passed and report.errors[-1].startswith("ConversionError: coremltools could not convert")
    written = json.loads(report_path(out).read_text())
    assert written["status"] == "error" and written["error_type"] == "ConversionError"

    missing = export_coreml(tmp_path / "no-such-student", tmp_path / "m.mlpackage", options)
    assert missing.status == ConversionStatus.ERROR and missing.error_type is not None


def test_coremltools_errors_become_conversion_errors(tiny_student: Student, monkeypatch: pytest.MonkeyPatch) -> None:
    import coremltools as ct

    def unsupported(*args: object, **kwargs: object) -> None:
        raise NotImplementedError("PyTorch convert function for op 'frobnicate' not implemented.")

    monkeypatch.setattr(ct, "convert", unsupported)
    options = CoreMLOptions(seq_lens="16", target="iOS17", ane=False)
    prefill, _ = build_modules(tiny_student, options, 64)
    with pytest.raises(convert_coreml.ConversionError, match="frobnicate") as raised:
        convert_coreml.convert_module(prefill, options.lengths, options, stateful=False)
    assert isinstance(raised.value.__cause__, NotImplementedError)


def test_cli_subprocess_writes_the_report(tiny_artifact: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Set a timer for\n\nThe quick brown fox\n")
    out = tmp_path / "cli.mlpackage"
    proc = subprocess.run(
        [sys.executable, "-m", "conversion.convert_coreml", str(tiny_artifact), "--out", str(out),
         "--target", "iOS17", "--seq-lens", "32", "--max-new-tokens", "2", "--prompts", str(prompts)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASSED" in proc.stdout and "report:" in proc.stdout
    report = json.loads((tmp_path / "cli.report.json").read_text())
    assert set(report) >= REPORT_KEYS and set(report["checks"]) >= CHECK_KEYS
    assert report["passed"] and report["checks"]["prompts_checked"] == 2
    assert report["target"] == "iOS17" and report["options"]["stateful"] is False
    assert report["checks"]["decode_rel_error"] is None
    assert np.isfinite(report["checks"]["prefill_rel_error"])


def test_cli_rejects_bad_options_and_lists_them(tiny_artifact: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as bad:
        convert_coreml.main([str(tiny_artifact), "--out", str(tmp_path / "x.mlpackage"), "--target", "iOS17",
                             "--stateful"])
    assert bad.value.code == 2 and "iOS18" in capsys.readouterr().err
    assert not (tmp_path / "x.mlpackage").exists()
    with pytest.raises(SystemExit) as shown:
        convert_coreml.main(["--help"])
    assert shown.value.code == 0
    help_text = capsys.readouterr().out
    for flag in ("--target", "--seq-lens", "--stateful", "--no-stateful", "--quantize", "--ane", "--no-ane",
                 "--max-new-tokens", "--prompts"):
        assert flag in help_text


def test_rewrite_check_measures_the_algebra_in_float64(tiny_student: Student) -> None:
    """The rewrite criterion compares float64 copies (the rewrite's algebra, not fp32 rounding noise):
    the tiny rewrite is within 1e-5 of the student, the originals stay fp32, and an algebraic change
    of 1e-3 in one weight is caught."""
    options = CoreMLOptions(seq_lens="8,32", cache_len=32, lm_head_chunk=100)
    prefill, _ = build_modules(tiny_student, options, 32)
    decoder = build_decoder(tiny_student, options, 32, torch.float32)
    prompts = [[1, 5, 9, 14, 3, 7], [2, 11, 4]]
    abs_error, rel = exact_rewrite_errors(tiny_student, prefill, decoder, prompts)
    assert 0 <= rel <= criteria.FP32_REL_TOLERANCE and abs_error >= 0
    modules = (tiny_student, prefill, decoder)
    assert all(p.dtype == torch.float32 for m in modules for p in m.parameters())
    assert decoder.key_cache.dtype == torch.float32
    assert rewrite_errors(tiny_student, prefill, decoder, prompts)[1] <= criteria.FP32_REL_TOLERANCE
    with torch.no_grad():  # prefill is this test's own module
        prefill.core.layers[0].mlp.down_proj.weight.mul_(1.001)
    assert exact_rewrite_errors(tiny_student, prefill, None, prompts)[1] > criteria.FP32_REL_TOLERANCE
