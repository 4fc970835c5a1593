"""The Core ML conversion report: its schema, where it is written and its one-screen summary.

The report of ``MODEL.mlpackage`` is ``MODEL.report.json`` beside it. Top-level keys are stable:
``model``, ``target``, ``options``, ``functions``, ``conversion``, ``size_bytes``, ``op_histogram``,
``lint`` (``errors``, ``warnings``, ``findings``), ``checks`` (``ane_rewrite_max_abs_error``,
``prefill_rel_error``, ``decode_rel_error``, ``greedy_tokens_identical``, ``prompts_checked``, plus
tolerances and details), ``errors``, ``passed``, ``seconds`` (wall clock), ``cpu_seconds`` (this
process, all threads) and ``timings`` (wall clock per step).
Relative errors are ``max|coreml - torch| / max|torch|`` over all logits compared.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

REPORT_SUFFIX = ".report.json"


def report_path(package: str | Path) -> Path:
    """``dir/MODEL.mlpackage`` -> ``dir/MODEL.report.json``."""
    package = Path(package)
    return package.with_name(package.stem + REPORT_SUFFIX)


class LintSummary(BaseModel):
    """Counts and findings of :func:`conversion.ane_lint.lint_program`."""

    errors: int = 0
    warnings: int = 0
    findings: list[dict[str, Any]] = Field(default_factory=list)


class Checks(BaseModel):
    """Numeric checks. ``None`` means not run (e.g. no decode function without ``--stateful``).

    ``pytorch_fp16_rel_error`` is context, not a check: the same relative error for the reference itself
    run in fp16 by PyTorch (``.half()``) on the same sequences, i.e. what fp16 arithmetic costs this model
    (the reference: the student, or with ``--quantize`` the converted module with dequantized weights).
    """

    ane_rewrite_max_abs_error: float | None = None
    prefill_rel_error: float | None = None
    decode_rel_error: float | None = None
    pytorch_fp16_rel_error: float | None = None
    greedy_tokens_identical: bool | None = None
    prompts_checked: int = 0
    ane_rewrite_tolerance: float | None = None
    prefill_tolerance: float | None = None
    decode_tolerance: float | None = None
    reference: str = "student"
    executor: str = "mil-numpy"
    greedy: list[dict[str, list[int]]] = Field(default_factory=list)
    greedy_divergences: list[dict[str, Any]] = Field(default_factory=list)
    predict: dict[str, Any] | None = None
    quantization: dict[str, Any] | None = None


class CoreMLReport(BaseModel):
    """Everything one conversion produced and measured."""

    model: str
    package: str = ""
    target: str
    options: dict[str, Any]
    functions: list[str] = Field(default_factory=list)
    conversion: str = "torch.jit.trace"
    size_bytes: int = 0
    op_histogram: dict[str, dict[str, int]] = Field(default_factory=dict)
    lint: LintSummary = Field(default_factory=LintSummary)
    checks: Checks = Field(default_factory=Checks)
    errors: list[str] = Field(default_factory=list)
    passed: bool = False
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    timings: dict[str, float] = Field(default_factory=dict)


def write_report(report: CoreMLReport, path: str | Path) -> Path:
    """Write the report as indented JSON; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.model_dump(mode="json"), indent=2) + "\n")
    return path


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2e}"


def summary(report: CoreMLReport) -> str:
    """A short human summary of the report."""
    c = report.checks
    lines = [
        f"Core ML {'PASSED' if report.passed else 'FAILED'}: {report.package or report.model}",
        f"  target {report.target}, functions {', '.join(report.functions) or '-'}, "
        f"{report.size_bytes / 1e6:.2f} MB, {report.seconds:.1f} s wall, {report.cpu_seconds:.1f} s CPU "
        f"({report.conversion})",
        "  options: " + ", ".join(f"{k}={v}" for k, v in report.options.items() if k != "prompts"),
        f"  ANE rewrite max abs error {_fmt(c.ane_rewrite_max_abs_error)} (tol {_fmt(c.ane_rewrite_tolerance)})",
        f"  prefill rel error {_fmt(c.prefill_rel_error)} (tol {_fmt(c.prefill_tolerance)}), decode rel error "
        f"{_fmt(c.decode_rel_error)} (tol {_fmt(c.decode_tolerance)}) vs {c.reference} [{c.executor}]",
        *([f"  PyTorch's own fp16 on the same sequences: rel error {_fmt(c.pytorch_fp16_rel_error)}"]
          if c.pytorch_fp16_rel_error is not None else []),
        f"  greedy tokens identical: {c.greedy_tokens_identical} on {c.prompts_checked} prompts"
        + (f" ({sum(d['near_tie'] for d in c.greedy_divergences)} of {len(c.greedy_divergences)} divergences "
           "at near ties)" if c.greedy_divergences else ""),
        f"  ANE lint: {report.lint.errors} errors, {report.lint.warnings} warnings",
    ]
    for finding in report.lint.findings:
        if finding["level"] != "info":
            lines.append(f"    {finding['level']}: [{finding['function']}] {finding['code']}: {finding['message']}")
    if c.quantization:
        q = c.quantization
        lines.append(f"  quantization {q.get('mode')}: weights rel error {_fmt(q.get('weight_rel_error'))}, "
                     f"logits rel error vs student {_fmt(q.get('logits_rel_error_vs_student'))}, greedy "
                     f"agreement vs student {q.get('greedy_agreement_vs_student')}")
    lines.extend(f"  error: {e}" for e in report.errors)
    lines.extend(f"  hint: {h}" for h in hints(report))
    return "\n".join(lines)


def hints(report: CoreMLReport) -> list[str]:
    """What to try when a check failed (empty when it passed or nothing applies)."""
    c, options = report.checks, report.options
    tolerance_failed = any("exceeds the tolerance" in e and "rel_error" in e for e in report.errors)
    if not tolerance_failed or options.get("precision") != "fp16":
        return []
    found = []
    if c.pytorch_fp16_rel_error is not None and c.pytorch_fp16_rel_error > (c.prefill_tolerance or 0):
        found.append(f"PyTorch's own fp16 already exceeds the tolerance on these prompts "
                     f"({c.pytorch_fp16_rel_error:.2e}): this model is at the fp16 floor; use --precision fp32 "
                     "where exact logits matter")
    if options.get("attention") == "split" and options.get("ane") and options.get("target") == "iOS18":
        found.append("on trained models most fp16 error comes from rounding attention logits and weights; "
                     "--attention fused (one fused op a layer) usually lowers it (see BENCHMARKS.md)")
    return found
