"""Verify an exported graph in onnxruntime (CPUExecutionProvider) against the eager PyTorch student.

:func:`verify_graph` is the fp32 gate (logit and cache errors, decode steps, greedy tokens);
:func:`variant_metrics` measures a quantized graph (error vs fp32 PyTorch, argmax agreement, size, speed)
and :func:`fp32_metrics` gives the fp32 graph the same figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from conversion.criteria import FP32_REL_TOLERANCE
from conversion.onnx_graph import graph_size_bytes
from conversion.onnx_session import OnnxCausalLM
from conversion.verify_common import (
    CheckResult,
    GreedyResult,
    decode_ms_per_token,
    measure_errors,
    verify_step,
)
from training.model import Student

TIMING_TOKENS = 32


def verify_graph(student: Student, path: Path, prompts: Sequence[Sequence[int]], *,
                 rtol: float = FP32_REL_TOLERANCE, atol: float | None = None, max_new_tokens: int,
                 decode_steps: int = 4, threads: int | None = None) -> tuple[CheckResult, GreedyResult]:
    """Run every fp32 check of :func:`conversion.verify_common.verify_step` on the graph at ``path``
    (relative errors within ``rtol``, greedy tokens identical, max abs errors within ``atol`` when
    given; ``threads``: onnxruntime intra-op threads, None = its default)."""
    runner = OnnxCausalLM(path, threads=threads)
    return verify_step(student, runner.step, prompts, rtol=rtol, atol=atol, max_new_tokens=max_new_tokens,
                       decode_steps=decode_steps)


@dataclass
class VariantMetrics:
    """One graph's figures: errors vs the fp32 PyTorch student, argmax agreement on real positions,
    bytes on disk (model + external data) and median ms per cached decode token (batch 1)."""

    file: str
    max_abs_error: float
    max_rel_error: float
    argmax_agreement: float
    size_bytes: int
    ms_per_token: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def variant_metrics(student: Student, path: Path, timing_prompt: Sequence[int], *,
                    timing_tokens: int = TIMING_TOKENS, decode_steps: int = 4,
                    threads: int | None = None) -> VariantMetrics:
    """Measure the graph at ``path`` (a quantized variant) on the reference batches and decode steps."""
    runner = OnnxCausalLM(path, threads=threads)
    stats, _ = measure_errors(student, runner.step, decode_steps=decode_steps)
    return VariantMetrics(
        file=path.name,
        max_abs_error=stats.max_abs_error,
        max_rel_error=stats.max_rel_error,
        argmax_agreement=stats.argmax_agreement,
        size_bytes=graph_size_bytes(path),
        ms_per_token=decode_ms_per_token(runner.step, timing_prompt, timing_tokens),
    )


def fp32_metrics(path: Path, checks: CheckResult, timing_prompt: Sequence[int], *,
                 timing_tokens: int = TIMING_TOKENS, threads: int | None = None) -> VariantMetrics:
    """The fp32 graph's figures in the same form as a variant's, errors taken from its verification."""
    runner = OnnxCausalLM(path, threads=threads)
    return VariantMetrics(
        file=path.name,
        max_abs_error=checks.max_abs_error,
        max_rel_error=checks.max_rel_error,
        argmax_agreement=checks.argmax_agreement,
        size_bytes=graph_size_bytes(path),
        ms_per_token=decode_ms_per_token(runner.step, timing_prompt, timing_tokens),
    )
