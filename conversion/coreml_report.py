"""The Core ML conversion report: its schema, where it is written and its one-screen summary.

The report of ``MODEL.mlpackage`` is ``MODEL.report.json`` beside it. Top-level keys are stable:
``model``, ``target``, ``options``, ``functions``, ``conversion``, ``size_bytes``, ``op_histogram``,
``lint`` (``errors``, ``warnings``, ``findings``), ``checks`` (``ane_rewrite_max_abs_error``,
``ane_rewrite_rel_error``, ``prefill_rel_error``, ``decode_rel_error``, ``pytorch_fp16_rel_error``,
``fp16_tolerance``, ``kl_per_token``, ``greedy_tokens_identical``, ``prompts_checked``,
``verification_cache_len``, plus tolerances and details; see :class:`Checks`), ``errors``, ``passed``, ``seconds`` (wall clock), ``cpu_seconds`` (this
process, all threads), ``timings`` (wall clock per step), ``status`` (:class:`ConversionStatus`, what
callers decide on), ``exceeded`` (the measurements over their tolerance) and ``error_type`` (the exception
class when the conversion stopped on bad input or a conversion error).
Relative errors are ``max|coreml - torch| / max|torch|`` over all logits compared.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from conversion.criteria import FP16_FLOOR_FACTOR

REPORT_SUFFIX = ".report.json"


def report_path(package: str | Path) -> Path:
    """``dir/MODEL.mlpackage`` -> ``dir/MODEL.report.json``."""
    package = Path(package)
    return package.with_name(package.stem + REPORT_SUFFIX)


class ConversionStatus(str, Enum):
    """The outcome of one conversion, for code to decide on (``report.errors`` is for people)."""

    PASSED = "passed"
    """Every check passed."""
    TOLERANCE_EXCEEDED = "tolerance_exceeded"
    """Every failure is a measurement over its tolerance (named in ``exceeded``); no other check failed."""
    CHECKS_FAILED = "checks_failed"
    """Another check failed: greedy tokens, ANE lint errors, the verification program's ops."""
    ERROR = "error"
    """The conversion stopped: an unusable input (artifact, config, file) or a coremltools conversion error
    (``error_type`` names the exception). Programming errors are raised, not reported."""


class LintSummary(BaseModel):
    """Counts and findings of :func:`conversion.ane_lint.lint_program`."""

    errors: int = 0
    warnings: int = 0
    findings: list[dict[str, Any]] = Field(default_factory=list)


class Checks(BaseModel):
    """Numeric checks. ``None`` means not run (e.g. no decode function without ``--stateful``).

    ``pytorch_fp16_rel_error`` is the same relative error for the reference itself run in fp16 by PyTorch
    (``.half()``) on the same sequences, i.e. what fp16 arithmetic costs this model (the reference: the
    student, or with ``--quantize`` the converted module with dequantized weights). It sets the fp16
    tolerance: ``fp16_tolerance = max(3e-3, 1.5 x pytorch_fp16_rel_error)``
    (:func:`conversion.criteria.fp16_tolerance`), applied to prefill and decode relative errors
    (``prefill_tolerance`` / ``decode_tolerance`` are the tolerances applied).

    ``ane_rewrite_rel_error`` (max|Δ| / max|ref| of the rewrite against the student, both in float64:
    the rewrite's algebra, :func:`conversion.convert_coreml.exact_rewrite_errors`) is checked against
    ``ane_rewrite_tolerance``; ``ane_rewrite_max_abs_error`` (same comparison) and
    ``ane_rewrite_fp32_rel_error`` (the fp32 rewrite against the fp32 student: algebra plus both sides'
    fp32 rounding noise) are context. ``kl_per_token`` is the larger of ``prefill_kl_per_token`` and
    ``decode_kl_per_token``, each the mean KL(reference || program) in nats over the compared positions,
    checked against ``kl_tolerance``.

    The checks run on sequences of at most ``verification_cache_len`` tokens (prompt + generated). When
    that is shorter than the shipped cache (``deployment_cache_len``), decode is verified on the same
    decoder converted again with the shorter cache (``verification_program`` says so) and the shipped
    decode function is run for one step (``deployment_decode_rel_error``).
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
    ane_rewrite_rel_error: float | None = None
    ane_rewrite_fp32_rel_error: float | None = None
    kl_per_token: float | None = None
    prefill_kl_per_token: float | None = None
    decode_kl_per_token: float | None = None
    kl_tolerance: float | None = None
    fp16_tolerance: float | None = None
    deployment_cache_len: int | None = None
    verification_cache_len: int | None = None
    verification_program: str | None = None
    deployment_decode_rel_error: float | None = None


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
    status: ConversionStatus = ConversionStatus.ERROR
    exceeded: list[str] = Field(default_factory=list)
    error_type: str | None = None

    def settle(self, *, other_failures: bool) -> None:
        """Set ``passed`` and ``status`` from ``errors``, ``exceeded`` and whether a non-tolerance check
        failed (``other_failures``); a report whose ``error_type`` is set stays :attr:`ConversionStatus.ERROR`."""
        self.passed = not self.errors
        if self.error_type is not None:
            self.status = ConversionStatus.ERROR
        elif self.passed:
            self.status = ConversionStatus.PASSED
        elif other_failures or not self.exceeded:
            self.status = ConversionStatus.CHECKS_FAILED
        else:
            self.status = ConversionStatus.TOLERANCE_EXCEEDED


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
        f"  ANE rewrite rel error {_fmt(c.ane_rewrite_rel_error)} (tol {_fmt(c.ane_rewrite_tolerance)}), "
        f"max abs error {_fmt(c.ane_rewrite_max_abs_error)} (float64; fp32 vs fp32: "
        f"{_fmt(c.ane_rewrite_fp32_rel_error)})",
        f"  prefill rel error {_fmt(c.prefill_rel_error)} (tol {_fmt(c.prefill_tolerance)}), decode rel error "
        f"{_fmt(c.decode_rel_error)} (tol {_fmt(c.decode_tolerance)}) vs {c.reference} [{c.executor}]",
        *([f"  PyTorch's own fp16 on the same sequences: rel error {_fmt(c.pytorch_fp16_rel_error)} "
           f"(fp16 tolerance = max(3e-3, 1.5 x that) = {_fmt(c.fp16_tolerance)})"]
          if c.pytorch_fp16_rel_error is not None else []),
        f"  KL(reference || program) {_fmt(c.kl_per_token)} nats/token (tol {_fmt(c.kl_tolerance)})",
        *([f"  verification cache {c.verification_cache_len} slots (shipped {c.deployment_cache_len}): "
           f"{c.verification_program}"] if c.verification_program else []),
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
    tolerance_failed = any("rel_error" in name for name in report.exceeded)
    if not tolerance_failed or options.get("precision") != "fp16":
        return []
    found = []
    floor = c.pytorch_fp16_rel_error
    if floor is not None and FP16_FLOOR_FACTOR * floor >= (c.prefill_tolerance or 0):
        found.append(f"PyTorch's own fp16 error on these prompts ({floor:.2e}) sets the tolerance "
                     f"({FP16_FLOOR_FACTOR:g}x it): this model is at the fp16 floor; use --precision fp32 "
                     "where exact logits matter")
    if options.get("attention") == "split" and options.get("ane") and options.get("target") == "iOS18":
        found.append("on trained models most fp16 error comes from rounding attention logits and weights; "
                     "--attention fused (one fused op a layer) usually lowers it (see BENCHMARKS.md)")
    return found
