"""Export a whole judge (backbone + heads) to ONNX and prove it matches PyTorch in onnxruntime.

    python -m arbiter.judge_export JUDGE_DIR --out DIR [--exporter dynamo|torchscript] [--opset 18]
        [--atol 1e-4]

``python -m conversion.export_onnx JUDGE_DIR`` exports only the backbone's causal LM (a judge artifact is
a student artifact); this module exports the judge itself. Graph interface:

inputs   ``input_ids`` (B, T) int64: ``<bos>`` + prompt + response + ``<eos>``, left or right padded;
         ``attention_mask`` (B, T) int64, 1 for real tokens; ``response_mask`` (B, T) int64, 1 on the
         response tokens and the final ``<eos>`` (judges with surprise features only)
outputs  ``score`` (B,) reward; ``clause_logits`` (B, C) when the judge has a clause head;
         ``step_logits`` (B, T) when it has a step head (a step's logit is the one at its ``</step>`` token,
         id 7; apply a sigmoid for probabilities)

DIR receives ``model.onnx``, ``judge_config.json`` (with ``tie_log_nu`` added for pairwise probabilities),
the artifact's ``config.json`` and tokenizer files, ``report.json`` and a ``manifest.json``; it is written
atomically. Exit status: 0 when every output is within ``--atol`` of PyTorch on right-padded, left-padded
and real-text batches, 1 when not, 2 when the input is refused.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime
import torch
from pydantic import Field
from torch import Tensor, nn

from arbiter.judge_training.artifact import JUDGE_CONFIG_FILE, load_judge
from arbiter.judge_training.encoding import EncodedInput, PaddedInputs, encode_input, pad_inputs
from arbiter.judge_training.model import JudgeModel
from conversion.onnx_graph import check_graph, describe_io
from conversion.verify_common import REPORT_FILE, check_output_dir, copy_companion_files
from training.artifact import ArtifactError, write_artifact
from training.config_base import FrozenStrictModel
from training.tokenizer import DistilleryTokenizer

MODEL_FILE = "model.onnx"
REPORT_FORMAT = "distillery-judge-onnx-export"
INPUTS = ("input_ids", "attention_mask")
BATCH, SEQUENCE = "batch_size", "sequence_length"
SAMPLE_INPUTS: tuple[tuple[str, str], ...] = (
    ("Q: 7+3*2-4=?\n", "<think><step>3*2=6</step><step>7+6=13</step><step>13-4=9</step></think><answer>9</answer>"),
    ("Q: 7+3*2-4=?\n", "<think><step>3*2=5</step><step>7+5=12</step><step>12-4=8</step></think><answer>8</answer>"),
    ("Q: 5-1+8=?\n", "<answer>12"),
)


class JudgeExportConfig(FrozenStrictModel):
    """Validated options of one export (the CLI flags)."""

    judge_dir: Path = Field(description="judge artifact directory")
    out: Path = Field(description="output directory")
    exporter: Literal["dynamo", "torchscript"] = Field("dynamo",
                                                       description="torch.onnx exporter: dynamo (torch.export based) "
                                                                   "or torchscript")
    opset: int = Field(18, ge=14, le=23, description="ONNX opset version (14-23)")
    atol: float = Field(1e-4, gt=0,
                        description="largest absolute difference allowed between the ONNX graph's and PyTorch's "
                                    "outputs")


class JudgeGraph(nn.Module):
    """``forward(input_ids, attention_mask[, response_mask]) -> (score, [clause_logits], [step_logits])``
    for exporters; ``response_mask`` is an input only for judges with surprise features."""

    def __init__(self, judge: JudgeModel) -> None:
        super().__init__()
        self.judge = judge

    def input_names(self) -> list[str]:
        return [*INPUTS, "response_mask"] if self.judge.surprise_features else list(INPUTS)

    def output_names(self) -> list[str]:
        names = ["score"]
        if self.judge.clause_head is not None:
            names.append("clause_logits")
        if self.judge.step_head is not None:
            names.append("step_logits")
        return names

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        """(B, T) int64 inputs -> score (B,), clause_logits (B, C), step_logits (B, T) (heads present only)."""
        out = self.judge(*inputs)
        outputs = [out.score]
        if out.clause_logits is not None:
            outputs.append(out.clause_logits)
        if out.step_logits is not None:
            outputs.append(out.step_logits)
        return tuple(outputs)


def _as_graph_inputs(padded: PaddedInputs, graph: JudgeGraph) -> dict[str, Tensor]:
    tensors = {"input_ids": padded.input_ids, "attention_mask": padded.attention_mask,
               "response_mask": padded.response_mask}
    return {name: tensors[name] for name in graph.input_names()}


def _random_inputs(vocab_size: int, lengths: Sequence[int], generator: torch.Generator) -> list[EncodedInput]:
    """Random token rows ``<bos> ... <eos>`` whose second half is marked as the response."""
    rows = []
    for n in lengths:
        body = torch.randint(16, vocab_size, (n,), generator=generator).tolist()
        rows.append(EncodedInput(ids=[1, *body, 2], response_start=1 + n // 2, step_positions=[]))
    return rows


def trace_inputs(graph: JudgeGraph, pad_id: int) -> dict[str, Tensor]:
    """Batch 3, length 7 (no dynamic size 0, 1 or equal to another), one left-padded row."""
    rows = _random_inputs(graph.judge.backbone.config.vocab_size, [5, 3, 4], torch.Generator().manual_seed(0))
    return _as_graph_inputs(pad_inputs(rows, pad_id, "left"), graph)


def export_graph(graph: JudgeGraph, path: Path, *, exporter: str, opset: int, pad_id: int) -> None:
    """Write ``path`` with dynamic batch and sequence dimensions."""
    inputs = trace_inputs(graph, pad_id)
    args = tuple(inputs.values())
    names = graph.output_names()
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            if exporter == "dynamo":
                program = torch.onnx.export(
                    graph, args, input_names=list(inputs), output_names=names, opset_version=opset, dynamo=True,
                    verbose=False, dynamic_shapes={"inputs": tuple({0: BATCH, 1: SEQUENCE} for _ in args)},
                )
                assert program is not None
                program.save(str(path))
            else:
                axes = {name: {0: BATCH, 1: SEQUENCE} for name in inputs}
                axes.update({"score": {0: BATCH}, "clause_logits": {0: BATCH}, "step_logits": {0: BATCH, 1: SEQUENCE}})
                torch.onnx.export(graph, args, str(path), input_names=list(inputs), output_names=names,
                                  opset_version=opset, dynamo=False,
                                  dynamic_axes={k: v for k, v in axes.items() if k in (*inputs, *names)})
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def verification_batches(graph: JudgeGraph, tokenizer: DistilleryTokenizer, max_length: int
                         ) -> dict[str, dict[str, Tensor]]:
    """Named graph inputs: random ids right- and left-padded, real judge texts both ways."""
    rows = {
        "random": _random_inputs(graph.judge.backbone.config.vocab_size, [5, 23, 11, 17],
                                 torch.Generator().manual_seed(1)),
        "texts": [encode_input(tokenizer, p, r, max_length) for p, r in SAMPLE_INPUTS],
    }
    return {f"{name}_{side}": _as_graph_inputs(pad_inputs(items, tokenizer.pad_id, side), graph)
            for name, items in rows.items() for side in ("right", "left")}


def compare_outputs(graph: JudgeGraph, session: onnxruntime.InferenceSession,
                    batches: dict[str, dict[str, Tensor]]) -> dict[str, Any]:
    """Max abs error per output (step logits over real tokens only) and per batch."""
    names = graph.output_names()
    worst = dict.fromkeys(names, 0.0)
    per_batch = {}
    for batch_name, inputs in batches.items():
        with torch.no_grad():
            expected = [t.numpy() for t in graph(*inputs.values())]
        got = session.run(names, {name: tensor.numpy() for name, tensor in inputs.items()})
        real = inputs["attention_mask"].numpy().astype(bool)
        errors = {}
        for name, want, have in zip(names, expected, got, strict=True):
            if want.shape != have.shape:
                raise AssertionError(f"{batch_name}: {name} has shape {have.shape} in ONNX, {want.shape} in torch")
            diff = np.abs(want - have)
            if name == "step_logits":
                diff = diff[real]
            errors[name] = float(diff.max()) if diff.size else 0.0
            worst[name] = max(worst[name], errors[name])
        per_batch[batch_name] = errors
    return {"max_abs_error": max(worst.values()), "max_abs_error_per_output": worst, "per_batch": per_batch}


def export_judge(config: JudgeExportConfig) -> dict[str, Any]:
    """Load (verified), export, check, verify in onnxruntime; write DIR atomically; return the report."""
    start = time.perf_counter()
    model, spec, tokenizer = load_judge(config.judge_dir)
    check_output_dir(config.out, config.judge_dir)
    graph = JudgeGraph(model).eval()
    report: dict[str, Any] = {}

    def populate(tmp: Path) -> None:
        path = tmp / MODEL_FILE
        t0 = time.perf_counter()
        export_graph(graph, path, exporter=config.exporter, opset=config.opset, pad_id=tokenizer.pad_id)
        check_graph(path)
        export_seconds = time.perf_counter() - t0
        copied = copy_companion_files(config.judge_dir, tmp)
        head_config = {**spec.model_dump(mode="json"), "tie_log_nu": float(model.tie_log_nu.detach()),
                       "onnx_outputs": graph.output_names()}
        (tmp / JUDGE_CONFIG_FILE).write_text(json.dumps(head_config, indent=2, sort_keys=True) + "\n")
        t0 = time.perf_counter()
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        batches = verification_batches(graph, tokenizer, spec.max_length)
        checks = compare_outputs(graph, session, batches)
        io = describe_io(path)
        report.update({
            "format": REPORT_FORMAT,
            "format_version": 1,
            "source": str(config.judge_dir.resolve()),
            "num_parameters": model.num_parameters(),
            "exporter": config.exporter,
            "opset": io["opset"],
            "inputs": io["inputs"],
            "outputs": io["outputs"],
            "copied_files": [*copied, JUDGE_CONFIG_FILE],
            "atol": config.atol,
            "checks": checks,
            "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
            "timings_s": {"export": round(export_seconds, 3), "verify": round(time.perf_counter() - t0, 3),
                          "total": round(time.perf_counter() - start, 3)},
            "passed": checks["max_abs_error"] <= config.atol,
        })
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")

    write_artifact(config.out, populate)
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m arbiter.judge_export",
        description="Export a judge (backbone + score/clause/step heads) to one ONNX graph and verify it in "
                    "onnxruntime against PyTorch. Exit 0 = within --atol, 1 = not, 2 = input refused.",
    )
    parser.add_argument("judge_dir", type=Path, help="judge artifact directory (manifest verified)")
    parser.add_argument("--out", type=Path, required=True, help="output directory (replaced atomically)")
    parser.add_argument("--exporter", choices=("dynamo", "torchscript"), default="dynamo",
                        help="torch.onnx exporter (default: dynamo)")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    parser.add_argument("--atol", type=float, default=1e-4, help="max abs error allowed (default 1e-4)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        config = JudgeExportConfig(judge_dir=args.judge_dir, out=args.out, exporter=args.exporter,
                                   opset=args.opset, atol=args.atol)
        if not config.judge_dir.is_dir():
            raise ValueError(f"{config.judge_dir} is not a directory")
        report = export_judge(config)
    except (ArtifactError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    checks = report["checks"]
    errors = ", ".join(f"{k} {v:.2e}" for k, v in checks["max_abs_error_per_output"].items())
    print(f"judge ONNX export ({report['num_parameters'] / 1e6:.2f}M params, {report['exporter']}, opset "
          f"{report['opset']}) -> {args.out / MODEL_FILE}")
    print(f"onnxruntime vs PyTorch max abs error: {errors} (atol {config.atol:.0e}): "
          f"{'PASS' if report['passed'] else 'FAIL'}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
