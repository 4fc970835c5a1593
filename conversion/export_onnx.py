"""Export a student artifact to ONNX with a KV cache and prove it matches PyTorch.

    python -m conversion.export_onnx STUDENT_DIR --out DIR [--quantize none|int8|int4|all] [--opset 18]
        [--exporter dynamo|torchscript] [--max-new-tokens 16] [--prompts FILE] [--rtol 1e-5] [--atol A]
        [--decode-steps 4] [--threads N]

DIR receives ``model.onnx`` (one graph for prefill and decode; see :mod:`conversion.onnx_wrapper` for its
inputs and outputs), ``model_int8.onnx`` / ``model_int4.onnx`` when asked, the student's ``config.json``,
``generation_config.json``, ``tokenizer.json`` and ``tokenizer_config.json`` (so DIR is self-contained),
``report.json`` and a ``manifest.json`` of sha256 hashes (:func:`training.artifact.verify_manifest` checks
it). DIR is written atomically. The exit code is 0 when the fp32 graph passed (logits and caches within
``--rtol`` of PyTorch relative to the largest reference magnitude, max|Δ| / max|ref| <= 1e-5 by default
(:func:`conversion.criteria.fp32_verdict`), on fixed and random left-padded batches, prefill and cached
steps, and greedy tokens identical to ``Student.generate``; with ``--atol`` max abs errors are bounded
too), 1 when it failed, 2 when the input was refused (a tampered artifact, a bad flag, an output
directory that is not ours to replace).

report.json (format ``distillery-onnx-export``, version 1):

* ``model``: source, num_parameters and shape; ``exporter``, ``opset``, ``versions``, ``position_ids``
* ``inputs`` / ``outputs``: name, dtype, shape (symbolic dims as strings) of each graph input and output
* ``checks``: rtol (the relative criterion), atol (the optional absolute bound, null when off),
  max_abs_error and max_rel_error of logits (relative to the largest reference logit),
  max_abs_error_present and max_rel_error_present (caches), argmax_agreement, decode_steps_checked
  (cached steps compared), batches, greedy_tokens_identical, greedy_runs, greedy_new_tokens,
  greedy_mismatches, criterion, failures, passed
* ``fp32`` and ``variants.{int8,int4}`` (only those requested): file, max_abs_error, max_rel_error,
  argmax_agreement (vs fp32 PyTorch), size_bytes, ms_per_token (median cached decode step, batch 1)
* ``prompts``: source (tokenizer or token_ids) and per-prompt samples of the greedy generation
* ``copied_files``, ``threads``, ``timings_s`` (load, export, verify, quantize, total), ``passed``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import onnx
import onnxruntime
import torch
from pydantic import Field, model_validator

from conversion.criteria import FP32_REL_TOLERANCE
from conversion.onnx_graph import (
    DEFAULT_OPSET,
    OPSET_RANGES,
    check_graph,
    describe_io,
    export_graph,
)
from conversion.onnx_quantize import QUANTIZE_CHOICES, quantize, requested_variants
from conversion.onnx_verify import fp32_metrics, variant_metrics, verify_graph
from conversion.verify_common import (
    REPORT_FILE,
    ExportSourceConfig,
    check_output_dir,
    copy_companion_files,
    model_summary,
    resolve_prompts,
    torch_threads,
)
from training.artifact import ArtifactError, write_artifact
from training.model import Student
from training.model_config import ConfigError

MODEL_FILE = "model.onnx"
REPORT_FORMAT = "distillery-onnx-export"


class OnnxExportConfig(ExportSourceConfig):
    """Validated options of one export (the CLI flags)."""

    exporter: Literal["dynamo", "torchscript"] = Field("dynamo",
                                                       description="torch.onnx exporter: dynamo (torch.export based) "
                                                                   "or torchscript")
    opset: int = Field(DEFAULT_OPSET, description="ONNX opset version; the range depends on the exporter")
    quantize: Literal["none", "int8", "int4", "all"] = Field(
        "none", description="also write quantized variants: none, int8, int4 or all")

    @model_validator(mode="after")
    def _opset_in_range(self) -> OnnxExportConfig:
        low, high = OPSET_RANGES[self.exporter]
        if not low <= self.opset <= high:
            raise ValueError(f"the {self.exporter} exporter supports opset {low}..{high}, got {self.opset}")
        return self


def export_onnx(config: OnnxExportConfig) -> dict[str, Any]:
    """Load (manifest verified), export, check, verify, optionally quantize; write DIR; return the report.

    Raises :class:`training.artifact.ArtifactError` for a tampered or incomplete artifact and ValueError
    for an output directory that must not be replaced.
    """
    start = time.perf_counter()
    student = Student.from_pretrained(str(config.student_dir))
    prompt_set = resolve_prompts(config.student_dir, config.prompts, student.config.vocab_size)
    prompts = prompt_set.ids
    check_output_dir(config.out, config.student_dir)
    timings = {"load": time.perf_counter() - start}
    report: dict[str, Any] = {}

    def populate(tmp: Path) -> None:
        model_path = tmp / MODEL_FILE
        t0 = time.perf_counter()
        export_graph(student, model_path, exporter=config.exporter, opset=config.opset)
        check_graph(model_path)
        timings["export"] = time.perf_counter() - t0
        copied = copy_companion_files(config.student_dir, tmp)
        t0 = time.perf_counter()
        checks, greedy = verify_graph(student, model_path, prompts, rtol=config.rtol, atol=config.atol,
                                      max_new_tokens=config.max_new_tokens, decode_steps=config.decode_steps,
                                      threads=config.threads)
        fp32 = fp32_metrics(model_path, checks, prompts[0], threads=config.threads)
        timings["verify"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        variants = {}
        for name in requested_variants(config.quantize):
            path = quantize(model_path, name)
            variants[name] = variant_metrics(student, path, prompts[0], decode_steps=config.decode_steps,
                                             threads=config.threads).to_dict()
        timings["quantize"] = time.perf_counter() - t0
        timings["total"] = time.perf_counter() - start
        io = describe_io(model_path)
        report.update({
            "format": REPORT_FORMAT,
            "format_version": 1,
            "model": model_summary(student, config.student_dir),
            "exporter": config.exporter,
            "opset": io["opset"],
            "versions": {"torch": torch.__version__, "onnx": onnx.__version__,
                         "onnxruntime": onnxruntime.__version__},
            "position_ids": "computed in the graph from attention_mask (cumsum of real tokens - 1)",
            "inputs": io["inputs"],
            "outputs": io["outputs"],
            "copied_files": copied,
            "prompts": {"source": prompt_set.source,
                        "samples": prompt_set.samples(greedy.continuations, student.config.eos_token_id)},
            "checks": checks.to_dict(),
            "fp32": fp32.to_dict(),
            "variants": variants,
            "threads": {"requested": config.threads, "torch": torch.get_num_threads()},
            "timings_s": {k: round(v, 3) for k, v in timings.items()},
            "passed": checks.passed,
        })
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")

    with torch_threads(config.threads):
        write_artifact(config.out, populate)
    return report


def summary(report: dict[str, Any], out: Path) -> str:
    """A few human-readable lines about an export report."""
    checks, fp32, model = report["checks"], report["fp32"], report["model"]
    lines = [
        f"ONNX export of {model['source']} ({model['num_parameters'] / 1e6:.2f}M params) with the "
        f"{report['exporter']} exporter, opset {report['opset']} -> {out / MODEL_FILE} "
        f"({fp32['size_bytes'] / 1e6:.2f} MB, {fp32['ms_per_token']:.2f} ms/token)",
        f"fp32 vs PyTorch: max rel {checks['max_rel_error']:.2e} (rtol {checks['rtol']:.0e}), "
        f"max abs {checks['max_abs_error']:.2e}{_atol_text(checks)}, cache max rel "
        f"{checks['max_rel_error_present']:.2e}, "
        f"{checks['decode_steps_checked']} cached steps; greedy tokens "
        f"{'identical' if checks['greedy_tokens_identical'] else 'DIFFER'} ({checks['greedy_runs']} runs x "
        f"{checks['greedy_new_tokens']} tokens): {'PASS' if report['passed'] else 'FAIL'}",
    ]
    for name, v in report["variants"].items():
        lines.append(
            f"{name}: max abs {v['max_abs_error']:.2e}, argmax agreement {100 * v['argmax_agreement']:.1f}%, "
            f"{v['size_bytes'] / 1e6:.2f} MB, {v['ms_per_token']:.2f} ms/token"
        )
    t = report["timings_s"]
    lines.append(f"time: export {t['export']:.1f} s, verify {t['verify']:.1f} s, "
                 f"quantize {t['quantize']:.1f} s, total {t['total']:.1f} s")
    for mismatch in checks["greedy_mismatches"]:
        lines.append(f"greedy mismatch: {mismatch}")
    lines.extend(f"failed: {failure}" for failure in checks["failures"])
    return "\n".join(lines)


def _atol_text(checks: dict[str, Any]) -> str:
    return "" if checks["atol"] is None else f" (atol {checks['atol']:.0e})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m conversion.export_onnx",
        description="Export a Distillery student to ONNX (one KV-cache graph for prefill and decode, "
                    "Optimum input/output names), verify it in onnxruntime against PyTorch, optionally "
                    "quantize it. Exit code 0 = fp32 verification passed, 1 = failed, 2 = input refused.",
    )
    parser.add_argument("student_dir", type=Path, help="student artifact directory (manifest is verified)")
    parser.add_argument("--out", type=Path, required=True, help="output directory (replaced atomically)")
    parser.add_argument("--quantize", choices=QUANTIZE_CHOICES, default="none",
                        help="also build int8 (dynamic) and/or int4 (MatMulNBits) variants (default: none)")
    parser.add_argument("--exporter", choices=("dynamo", "torchscript"), default="dynamo",
                        help="torch.onnx exporter (default: dynamo)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help="ONNX opset (dynamo {}..{}, torchscript {}..{}; default {})".format(
                            *OPSET_RANGES["dynamo"], *OPSET_RANGES["torchscript"], DEFAULT_OPSET))
    parser.add_argument("--max-new-tokens", type=int, default=16,
                        help="greedy tokens generated per prompt in the check (default 16)")
    parser.add_argument("--prompts", type=Path, default=None,
                        help="text file, one prompt per line, for the greedy check "
                             "(default: built-in prompts)")
    parser.add_argument("--rtol", type=float, default=FP32_REL_TOLERANCE,
                        help="max relative error of fp32 logits and caches vs PyTorch, max|Δ| / max|ref| "
                             f"(default {FP32_REL_TOLERANCE:g})")
    parser.add_argument("--atol", type=float, default=None,
                        help="optional extra bound on the max abs error of logits and caches (default: none; "
                             "the check is relative, --rtol)")
    parser.add_argument("--decode-steps", type=int, default=4,
                        help="cached single-token steps checked after each prefill (default 4)")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads for PyTorch and onnxruntime (default: their own; "
                             "1 is faster on a busy machine)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = OnnxExportConfig(
            student_dir=args.student_dir, out=args.out, exporter=args.exporter, opset=args.opset,
            quantize=args.quantize, max_new_tokens=args.max_new_tokens, prompts=args.prompts, rtol=args.rtol,
            atol=args.atol, decode_steps=args.decode_steps, threads=args.threads,
        )
        report = export_onnx(config)
    except (ArtifactError, ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary(report, config.out))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
