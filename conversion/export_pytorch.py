"""Export a student artifact as torch.export programs (``.pt2``) and prove they match eager PyTorch.

    python -m conversion.export_pytorch STUDENT_DIR --out DIR [--max-new-tokens 16] [--prompts FILE]
        [--rtol 1e-5] [--atol A] [--decode-steps 4] [--threads N]

DIR receives two programs saved with ``torch.export.save`` (load with ``torch.export.load(path).module()``):

``prefill.pt2``  (input_ids (B, T) int64, attention_mask (B, T) int64)
                 -> (logits (B, T, V), present.0.key, present.0.value, ...), presents (B, n_kv, T, head_dim)
``decode.pt2``   (input_ids (B, 1), attention_mask (B, P+1), past_key_values.0.key, .0.value, ...)
                 -> (logits (B, 1, V), present.0.key, ...), presents (B, n_kv, P+1, head_dim)

with dynamic batch_size >= 1, sequence_length >= 1 and past_sequence_length >= 1 (mask length P+1 is a
derived dimension). Position ids come from the attention mask inside the programs, as in
:mod:`conversion.onnx_wrapper`. Programs are stored in inference IR (``run_decompositions({})``: functional
ATen, no training-only ops), which is what downstream consumers of a ``.pt2`` expect. DIR also gets the
student's config/tokenizer files, ``report.json`` and a sha256 ``manifest.json``; it is written atomically.
The programs are verified after loading them back: logits and caches within ``--rtol`` of the eager student
relative to the largest reference magnitude (max|Δ| / max|ref| <= 1e-5 by default,
:func:`conversion.criteria.fp32_verdict`; ``--atol`` adds an absolute bound) on fixed and random
left-padded batches over several decode steps, and greedy tokens identical to ``Student.generate``. Exit code 0 = passed, 1 = failed, 2 = input refused.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.export import Dim, ExportedProgram

from conversion.criteria import FP32_REL_TOLERANCE
from conversion.onnx_wrapper import (
    ATTENTION_MASK,
    BATCH,
    INPUT_IDS,
    LOGITS,
    PAST_SEQUENCE,
    SEQUENCE,
    CachedCausalLM,
    PrefillCausalLM,
    past_names,
    present_names,
)
from conversion.verify_common import (
    REPORT_FILE,
    ExportSourceConfig,
    StepFn,
    check_output_dir,
    copy_companion_files,
    model_summary,
    resolve_prompts,
    torch_threads,
    verify_step,
)
from training.artifact import ArtifactError, write_artifact
from training.model import Student
from training.model_config import ConfigError

PREFILL_FILE = "prefill.pt2"
DECODE_FILE = "decode.pt2"
REPORT_FORMAT = "distillery-pt2-export"
TRACE_BATCH, TRACE_SEQUENCE, TRACE_PAST = 2, 5, 3


class PytorchExportConfig(ExportSourceConfig):
    """Validated options of one export (the CLI flags)."""



@contextmanager
def quiet_export() -> Iterator[None]:
    """Silence torch.export's deprecation chatter and the serializer's notes about symbols that were
    simplified away (neither affects the programs)."""
    serde = logging.getLogger("torch._export.serde.serialize")
    level = serde.level
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        serde.setLevel(logging.ERROR)
        try:
            yield
        finally:
            serde.setLevel(level)


def _cache_shape(student: Student, batch: int, length: int) -> tuple[int, int, int, int]:
    cfg = student.config
    assert cfg.head_dim is not None
    return (batch, cfg.num_key_value_heads, length, cfg.head_dim)


def export_programs(student: Student) -> tuple[ExportedProgram, ExportedProgram]:
    """Trace the prefill and decode programs with dynamic dims; both in inference IR.

    Tracing sizes (batch 2, sequence 5, past 3) avoid 0 and 1, which torch.export would specialize.
    ``prefer_deferred_runtime_asserts_over_guards`` turns a stride guard of the KV-cache ``cat`` +
    ``repeat_interleave`` that the shape solver cannot prove for all past lengths (``Min(32p+32, 64p+64)
    == 32p+32``) into a runtime assert instead of a constraint violation.
    """
    cfg = student.config
    layers = cfg.num_hidden_layers
    batch, sequence, past = Dim(BATCH, min=1), Dim(SEQUENCE, min=1), Dim(PAST_SEQUENCE, min=1)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (TRACE_BATCH, TRACE_SEQUENCE), generator=generator)
    mask = torch.ones(TRACE_BATCH, TRACE_SEQUENCE, dtype=torch.long)
    mask[1, 0] = 0
    with torch.no_grad():
        prefill = torch.export.export(
            PrefillCausalLM(student).eval(), (ids, mask),
            dynamic_shapes={"input_ids": {0: batch, 1: sequence}, "attention_mask": {0: batch, 1: sequence}},
            prefer_deferred_runtime_asserts_over_guards=True,
        ).run_decompositions({})
        cache = [torch.randn(_cache_shape(student, TRACE_BATCH, TRACE_PAST), generator=generator)
                 for _ in range(2 * layers)]
        decode_mask = torch.ones(TRACE_BATCH, TRACE_PAST + 1, dtype=torch.long)
        decode_mask[1, 0] = 0
        decode = torch.export.export(
            CachedCausalLM(student).eval(), (ids[:, :1], decode_mask, *cache),
            dynamic_shapes={
                "input_ids": {0: batch},
                "attention_mask": {0: batch, 1: past + 1},
                "past": tuple({0: batch, 2: past} for _ in range(2 * layers)),
            },
            prefer_deferred_runtime_asserts_over_guards=True,
        ).run_decompositions({})
    return prefill, decode


def program_step(prefill: ExportedProgram, decode: ExportedProgram) -> StepFn:
    """The two programs as one :data:`conversion.verify_common.StepFn`: prefill when there is no past,
    decode (one token) otherwise."""
    prefill_fn, decode_fn = prefill.module(), decode.module()

    def step(input_ids: np.ndarray, attention_mask: np.ndarray,
             past: list[np.ndarray] | None) -> tuple[np.ndarray, list[np.ndarray]]:
        ids, mask = torch.from_numpy(input_ids), torch.from_numpy(attention_mask)
        with torch.no_grad():
            if past is None:
                out = prefill_fn(ids, mask)
            else:
                if input_ids.shape[1] != 1:
                    raise ValueError(f"decode.pt2 takes one token per step, got {input_ids.shape[1]}")
                out = decode_fn(ids, mask, *(torch.from_numpy(p) for p in past))
        return out[0].numpy(), [t.numpy() for t in out[1:]]

    return step


def _bound(value: Any) -> int | None:
    """A range-constraint bound (a sympy integer or infinity) as an int, None for infinity."""
    text = str(value)
    return int(text) if text.lstrip("-").isdigit() else None


def dynamic_dims(program: ExportedProgram, kind: str) -> dict[str, dict[str, Any]]:
    """Each named dynamic dimension of a program with its symbol and the [min, max] the program accepts
    (max None = unbounded), read from the (loaded) program's input shapes and range constraints."""
    where = {BATCH: (0, 0), SEQUENCE: (0, 1)} if kind == "prefill" else {BATCH: (0, 0), PAST_SEQUENCE: (2, 2)}
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder"]
    user = [n for n in placeholders if n.name in set(program.graph_signature.user_inputs)]
    ranges = program.range_constraints
    dims = {}
    for name, (position, axis) in where.items():
        size = user[position].meta["val"].shape[axis]
        expr = size.node.expr
        bounds = ranges.get(expr)
        dims[name] = {"symbol": str(expr), "min": _bound(bounds.lower) if bounds is not None else None,
                      "max": _bound(bounds.upper) if bounds is not None else None}
    return dims


def describe_program(program: ExportedProgram, kind: str, student: Student, path: Path) -> dict[str, Any]:
    """Inputs/outputs (Optimum names, symbolic shapes), the loaded program's dynamic dims, size."""
    cfg = student.config
    layers = cfg.num_hidden_layers
    seq = SEQUENCE if kind == "prefill" else 1
    total = f"{PAST_SEQUENCE} + 1" if kind == "decode" else SEQUENCE
    cache_in = [BATCH, cfg.num_key_value_heads, PAST_SEQUENCE, cfg.head_dim]
    cache_out = [BATCH, cfg.num_key_value_heads, total, cfg.head_dim]
    inputs = [{"name": INPUT_IDS, "dtype": "int64", "shape": [BATCH, seq]},
              {"name": ATTENTION_MASK, "dtype": "int64", "shape": [BATCH, total]}]
    if kind == "decode":
        inputs += [{"name": n, "dtype": "float32", "shape": cache_in} for n in past_names(layers)]
    outputs = [{"name": LOGITS, "dtype": "float32", "shape": [BATCH, seq, cfg.vocab_size]}]
    outputs += [{"name": n, "dtype": "float32", "shape": cache_out} for n in present_names(layers)]
    return {"file": path.name, "size_bytes": path.stat().st_size, "inputs": inputs, "outputs": outputs,
            "dynamic_dims": dynamic_dims(program, kind)}


def export_pytorch(config: PytorchExportConfig) -> dict[str, Any]:
    """Load (manifest verified), export both programs, save, load back, verify; write DIR; return the report.

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
        t0 = time.perf_counter()
        with quiet_export():
            prefill, decode = export_programs(student)
            torch.export.save(prefill, str(tmp / PREFILL_FILE))
            torch.export.save(decode, str(tmp / DECODE_FILE))
        timings["export"] = time.perf_counter() - t0
        copied = copy_companion_files(config.student_dir, tmp)
        t0 = time.perf_counter()
        with quiet_export():
            loaded_prefill = torch.export.load(str(tmp / PREFILL_FILE))
            loaded_decode = torch.export.load(str(tmp / DECODE_FILE))
        checks, greedy = verify_step(student, program_step(loaded_prefill, loaded_decode), prompts,
                                     rtol=config.rtol, atol=config.atol, max_new_tokens=config.max_new_tokens,
                                     decode_steps=config.decode_steps, chunk=0)
        timings["verify"] = time.perf_counter() - t0
        timings["total"] = time.perf_counter() - start
        report.update({
            "format": REPORT_FORMAT,
            "format_version": 1,
            "model": model_summary(student, config.student_dir),
            "torch_version": torch.__version__,
            "ir": "inference (run_decompositions({}))",
            "position_ids": "computed in the programs from attention_mask (cumsum of real tokens - 1)",
            "programs": {
                "prefill": describe_program(loaded_prefill, "prefill", student, tmp / PREFILL_FILE),
                "decode": describe_program(loaded_decode, "decode", student, tmp / DECODE_FILE),
            },
            "copied_files": copied,
            "prompts": {"source": prompt_set.source,
                        "samples": prompt_set.samples(greedy.continuations, student.config.eos_token_id)},
            "checks": checks.to_dict(),
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
    checks, model, t = report["checks"], report["model"], report["timings_s"]
    sizes = ", ".join(f"{p['file']} {p['size_bytes'] / 1e6:.2f} MB" for p in report["programs"].values())
    return "\n".join([
        f"torch.export of {model['source']} ({model['num_parameters'] / 1e6:.2f}M params) -> {out}: {sizes}",
        f"loaded programs vs eager: max rel {checks['max_rel_error']:.2e} (rtol {checks['rtol']:.0e}), "
        f"max abs {checks['max_abs_error']:.2e}"
        f"{'' if checks['atol'] is None else ' (atol {:.0e})'.format(checks['atol'])}, "
        f"cache max rel {checks['max_rel_error_present']:.2e}, "
        f"{checks['decode_steps_checked']} decode steps; "
        f"greedy tokens {'identical' if checks['greedy_tokens_identical'] else 'DIFFER'} "
        f"({checks['greedy_runs']} runs x {checks['greedy_new_tokens']} tokens): "
        f"{'PASS' if report['passed'] else 'FAIL'}",
        f"time: export {t['export']:.1f} s, verify {t['verify']:.1f} s, total {t['total']:.1f} s",
        *(f"greedy mismatch: {m}" for m in checks["greedy_mismatches"]),
        *(f"failed: {f}" for f in checks["failures"]),
    ])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m conversion.export_pytorch",
        description="Export a Distillery student as torch.export programs (prefill.pt2, decode.pt2 with a "
                    "KV cache and dynamic batch/sequence/past), load them back and verify them against "
                    "eager PyTorch. Exit code 0 = passed, 1 = failed, 2 = input refused.",
    )
    parser.add_argument("student_dir", type=Path, help="student artifact directory (manifest is verified)")
    parser.add_argument("--out", type=Path, required=True, help="output directory (replaced atomically)")
    parser.add_argument("--max-new-tokens", type=int, default=16,
                        help="greedy tokens generated per prompt in the check (default 16)")
    parser.add_argument("--prompts", type=Path, default=None,
                        help="text file, one prompt per line, for the greedy check "
                             "(default: built-in prompts)")
    parser.add_argument("--rtol", type=float, default=FP32_REL_TOLERANCE,
                        help="max relative error of logits and caches vs eager PyTorch, max|Δ| / max|ref| "
                             f"(default {FP32_REL_TOLERANCE:g})")
    parser.add_argument("--atol", type=float, default=None,
                        help="optional extra bound on the max abs error of logits and caches (default: none; "
                             "the check is relative, --rtol)")
    parser.add_argument("--decode-steps", type=int, default=4,
                        help="decode steps checked after each prefill (default 4)")
    parser.add_argument("--threads", type=int, default=None,
                        help="PyTorch intra-op threads (default: its own; 1 is faster on a busy machine)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = PytorchExportConfig(
            student_dir=args.student_dir, out=args.out, max_new_tokens=args.max_new_tokens,
            prompts=args.prompts, rtol=args.rtol, atol=args.atol, decode_steps=args.decode_steps, threads=args.threads,
        )
        report = export_pytorch(config)
    except (ArtifactError, ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary(report, config.out))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
