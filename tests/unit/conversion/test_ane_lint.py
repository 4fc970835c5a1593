"""ANE lint: clean on the default conversion, and each rule fires on a program crafted to break it."""

from __future__ import annotations

import coremltools as ct
import numpy as np
import pytest
import torch
from coremltools.converters.mil.mil import Builder as mb
from coremltools.converters.mil.mil import types

from conversion.ane_lint import LintReport, lint_program
from conversion.ane_model import prefill_mask
from conversion.convert_coreml import CoreMLOptions, build_modules, build_prefill, convert_module
from conversion.mil_executor import MilFunction, rel_error
from training.model import Student
from training.model_config import ModelConfig

FP16 = types.fp16


def _codes(report: LintReport, level: str | None = None) -> set[str]:
    return {f.code for f in report.findings if level is None or f.level == level}


@pytest.fixture(scope="module")
def default_programs(tiny_student: Student) -> dict[str, object]:
    """The default options (ANE rewrite, fp16, stateful) on the tiny student: prefill and decode."""
    options = CoreMLOptions(seq_lens="8,16", cache_len=32)
    prefill, decoder = build_modules(tiny_student, options, 32)
    return {
        "prefill": convert_module(prefill, options.lengths, options, stateful=False)._mil_program,
        "decode": convert_module(decoder, options.lengths.with_one(), options, stateful=True)._mil_program,
    }


def test_default_conversion_has_no_error_level_findings(default_programs: dict[str, object],
                                                        tiny_student: Student) -> None:
    budget = {"main": {"transpose": tiny_student.config.num_hidden_layers + 1, "reshape": 0}}
    for name, program in default_programs.items():
        report = lint_program(program, budget)
        assert report.errors == [], (name, report.errors)
        codes = _codes(report)
        assert "LAYOUT_OPS" not in codes and "FP32_COMPUTE" not in codes and "EINSUM_FORM" not in codes
        assert "TABLE_LOOKUP" in codes  # the embedding gather, noted as expected
        histogram = report.op_histogram["main"]
        assert histogram["conv"] == 4 * tiny_student.config.num_hidden_layers + 1  # qkv, o, gate_up, down + head
        assert histogram["einsum"] == 2 * tiny_student.config.num_hidden_layers * tiny_student.config.num_attention_heads
        assert "const" not in histogram
    decode = lint_program(default_programs["decode"])
    # tiny: 2 kv heads x head_dim 8 = 16 channels per cache row, not a multiple of 32
    alignment = [f for f in decode.findings if f.code == "STATE_ALIGNMENT"]
    assert len(alignment) == 2 and all(f.level == "warning" and "[1]" in f.message for f in alignment)


def test_plain_student_layout_is_flagged(tiny_student: Student) -> None:
    options = CoreMLOptions(seq_lens="8", ane=False, stateful=False)
    prefill, _ = build_modules(tiny_student, options, 32)
    program = convert_module(prefill, options.lengths, options, stateful=False)._mil_program
    report = lint_program(program, {"main": {"transpose": 3, "reshape": 0}})
    layout = [f for f in report.findings if f.code == "LAYOUT_OPS"]
    assert {f.level for f in layout} == {"warning"} and len(layout) == 2


def test_dimension_over_16384_is_an_error() -> None:
    weight = np.zeros((20000, 16, 1, 1), np.float32)

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 16, 1, 4), dtype=FP16)], opset_version=ct.target.iOS18)
    def prog(x):  # type: ignore[no-untyped-def]
        return mb.conv(x=x, weight=weight.astype(np.float16), name="wide_head")

    report = lint_program(prog)
    errors = report.errors
    assert len(errors) == 1 and errors[0].code == "DIM_LIMIT" and errors[0].ops == ("wide_head",)
    assert report.to_dict()["errors"] == 1


def test_concatenated_outputs_wider_than_16384_are_only_noted() -> None:
    half = np.zeros((10000, 16, 1, 1), np.float16)

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 16, 1, 4), dtype=FP16)], opset_version=ct.target.iOS18)
    def prog(x):  # type: ignore[no-untyped-def]
        logits = mb.concat(values=[mb.conv(x=x, weight=half), mb.conv(x=x, weight=half)], axis=1)
        return mb.transpose(x=mb.squeeze(x=logits, axes=[2]), perm=[0, 2, 1])

    report = lint_program(prog)
    assert report.errors == []
    assert "OUTPUT_ASSEMBLY" in _codes(report, "info")


def test_state_not_multiple_of_32_and_not_fp16_is_flagged() -> None:
    @mb.program(input_specs=[mb.StateTensorSpec((2, 64, 20), dtype=FP16)], opset_version=ct.target.iOS18)
    def prog(cache):  # type: ignore[no-untyped-def]
        return mb.read_state(input=cache)

    (finding,) = [f for f in lint_program(prog).findings if f.code == "STATE_ALIGNMENT"]
    assert finding.level == "warning" and "axes [2]" in finding.message

    @mb.program(input_specs=[mb.StateTensorSpec((2, 64, 32), dtype=types.fp32)], opset_version=ct.target.iOS18)
    def wide(cache):  # type: ignore[no-untyped-def]
        return mb.read_state(input=cache)

    assert _codes(lint_program(wide)) >= {"STATE_DTYPE", "FP32_COMPUTE"}
    assert "STATE_ALIGNMENT" not in _codes(lint_program(wide))


def test_off_ane_ops_fp32_budget_and_einsum_forms() -> None:
    table = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float16)

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 8, 1, 5), dtype=FP16),
                             mb.TensorSpec(shape=(3,), dtype=types.int32)], opset_version=ct.target.iOS18)
    def prog(x, ids):  # type: ignore[no-untyped-def]
        looked_up = mb.gather(x=table, indices=ids, axis=0)
        summed = mb.cumsum(x=x, axis=3)
        t1 = mb.transpose(x=summed, perm=[0, 3, 2, 1])
        t2 = mb.transpose(x=t1, perm=[0, 3, 2, 1])
        odd = mb.einsum(values=(t2, t1), equation="nchw,nwhu->nchu")
        wide = mb.cast(x=odd, dtype="fp32")
        return looked_up, mb.mul(x=wide, y=np.float32(2.0))

    report = lint_program(prog, {"main": {"transpose": 1}})
    assert "TABLE_LOOKUP" in _codes(report, "info")
    warnings = _codes(report, "warning")
    assert warnings >= {"OFF_ANE_OP", "LAYOUT_OPS", "EINSUM_FORM", "FP32_COMPUTE"}
    (off,) = [f for f in report.findings if f.code == "OFF_ANE_OP"]
    assert "cumsum" in off.message
    assert report.errors == []


def test_vocabulary_over_16384_is_chunked_and_runs() -> None:
    """40000 tokens: past the ANE's 16384 limit and int16 indices. The tied head is split into three
    chunks that also serve the embedding lookup; only the logits concatenation exceeds the limit."""
    config = ModelConfig(vocab_size=40000, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=True)
    torch.manual_seed(0)
    student = Student(config).eval()
    options = CoreMLOptions(seq_lens="8", stateful=False)
    prefill = build_prefill(student, options)
    assert len(prefill.core.lm_head.chunks) == 3
    program = convert_module(prefill, options.lengths, options, stateful=False)._mil_program
    report = lint_program(program)
    assert report.errors == []
    (assembly,) = [f for f in report.findings if f.code == "OUTPUT_ASSEMBLY"]
    assert assembly.level == "info"
    ids = np.array([[39999, 32768, 23615, 16384, 16383, 5, 0, 32767]], np.int32)
    out = MilFunction(program)({"input_ids": ids, "mask": prefill_mask(8).numpy()})["logits"]
    with torch.no_grad():
        ref = student(torch.from_numpy(ids).long()).numpy()
    assert rel_error(out, ref) <= 3e-3
