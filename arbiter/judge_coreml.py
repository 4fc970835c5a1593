"""Convert a whole judge (backbone + heads) to an ANE-optimized Core ML program and verify it on Linux.

    python -m arbiter.judge_coreml JUDGE_DIR --out JUDGE.mlpackage [--precision fp16|fp32]
        [--target iOS17|iOS18] [--seq-lens 32,64,96] [--atol 0.02]

``python -m conversion.convert_coreml JUDGE_DIR`` converts only the backbone's causal LM (a judge artifact is
a student artifact); this module converts what a device needs to grade answers: the scores.

Program interface (one judge input a call, right-padded to one of ``--seq-lens``):

inputs   ``input_ids`` (1, S) int32: ``<bos>`` + prompt + response + ``<eos>`` then padding;
         ``attention_mask`` (1, S): 1 on real tokens; ``response_mask`` (1, S): 1 on the response tokens and
         the final ``<eos>`` (judges with surprise features only); ``mask`` (1, S, 1, S): the additive
         causal mask of :func:`conversion.ane_model.prefill_mask`
outputs  ``score`` (1,); ``clause_logits`` (1, C) with a clause head; ``step_logits`` (1, S) with a step
         head (read them at ``</step>`` positions)

The backbone is :mod:`conversion.ane_model`'s rewrite (conv layout, split heads, fused RMSNorm); the
surprise features are computed as in :func:`arbiter.judge_training.model.surprise_features`, with a
log-softmax that cannot underflow in fp16 and the last real token picked by a mask (no gather).

Checks, against the PyTorch judge in fp32, with the rules of :mod:`conversion.criteria` that also decide
``conversion.convert_coreml`` (relative errors are max|Δ| / max|ref| per output over all inputs): the
rewrite itself in fp32 (relative error at most 1e-5, as the student's ANE rewrite); the converted program
run by the numpy MIL executor (:mod:`conversion.mil_executor`) on the bundled sample pairs and generated
arithmetic pairs (gold vs corrupted): each output's relative error within max(3e-3, 1.5 x the error of the
rewrite run by PyTorch in fp16 on the same inputs) for fp16 programs (1e-4 for fp32 programs), every
output a user reads (score, clause logits, step logits at ``</step>``) also within ``--atol + --rtol *
|reference|`` (defaults 0.02 + 0.3%, in logit units: 0.02 moves a sigmoid probability by at most 0.005),
identical pairwise preferences and identical step verdicts (logit > 0) except where the reference itself
is within ``--atol`` of a tie. Writes ``JUDGE.report.json`` beside the package. Exit status: 0 passed,
1 a check failed, 2 input refused.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import Tensor, nn

from arbiter.judge_training.artifact import load_judge
from arbiter.judge_training.encoding import EncodedInput, encode_input
from arbiter.judge_training.model import JudgeModel
from conversion.ane_model import AnePrefill, prefill_mask
from conversion.criteria import (
    COREML_FP32_TOLERANCE,
    FP32_REL_TOLERANCE,
    fp16_tolerance,
    fp16_verdict,
    fp32_verdict,
)
from training.artifact import ArtifactError
from training.config_base import FrozenStrictModel
from training.tasks.arithmetic import generate as generate_arithmetic
from training.tasks.arithmetic_corrupt import corrupt
from training.tokenizer import DistilleryTokenizer

REPORT_FORMAT = "distillery-judge-coreml"
SAMPLE_PAIRS: tuple[tuple[str, str, str], ...] = (
    ("Q: 7+3*2-4=?\n", "<think><step>3*2=6</step><step>7+6=13</step><step>13-4=9</step></think><answer>9</answer>",
     "<think><step>3*2=5</step><step>7+5=12</step><step>12-4=8</step></think><answer>8</answer>"),
    ("Q: 5-1+8=?\n", "<think><step>5-1=4</step><step>4+8=12</step></think><answer>12</answer>", "<answer>12"),
)


class JudgeCoreMLOptions(FrozenStrictModel):
    """Validated CLI options."""

    precision: Literal["fp16", "fp32"] = Field("fp16", description="compute precision of the program")
    target: Literal["iOS17", "iOS18"] = Field("iOS18", description="minimum deployment target")
    seq_lens: tuple[int, ...] = Field((32, 64, 96),
                                      description="accepted input lengths in tokens (each >= 2; sorted, duplicates "
                                                  "dropped)")
    atol: float = Field(0.02, gt=0,
                        description="absolute part of the program tolerance atol + rtol * |reference|; also the score "
                                    "margin under which a flipped preference is not counted")
    rtol: float = Field(3e-3, ge=0, description="relative part of the program tolerance atol + rtol * |reference|")
    rewrite_rtol: float = Field(FP32_REL_TOLERANCE, gt=0,
                                description="relative tolerance max|Δ| / max|ref| of the ANE rewrite against the judge "
                                            "(fp32)")
    rewrite_atol: float | None = Field(None, gt=0, description="optional extra absolute bound on the rewrite")
    pairs: int = Field(8, ge=0, le=64, description="generated arithmetic pairs to check besides the samples")

    @field_validator("seq_lens")
    @classmethod
    def _sorted_positive(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(n < 2 for n in value):
            raise ValueError(f"seq_lens must be lengths >= 2, got {value}")
        return tuple(sorted(set(value)))


class AneJudge(nn.Module):
    """The judge in the (B, C, 1, S) layout: ``forward(input_ids, attention_mask, response_mask, mask)``
    -> (score (1,), [clause_logits (1, C)], [step_logits (1, S)]) for one right-padded input."""

    def __init__(self, judge: JudgeModel) -> None:
        super().__init__()
        backbone = judge.backbone
        self.backbone = AnePrefill(backbone)
        self.surprise_features = judge.surprise_features
        self.vocab_size = backbone.config.vocab_size
        self.register_buffer("vocab_ids", torch.arange(backbone.config.vocab_size, dtype=torch.int32),
                             persistent=False)
        positions = backbone.config.max_position_embeddings  # (P, P) lower triangle, sliced to (S, S)
        self.register_buffer("lower", torch.ones(positions, positions).tril(), persistent=False)
        self.score_head = _conv_head(judge.score_head)
        self.clause_head = None if judge.clause_head is None else _conv_head(judge.clause_head)
        self.step_head = None if judge.step_head is None else _conv_head(judge.step_head)

    def output_names(self) -> list[str]:
        return ["score", *(["clause_logits"] if self.clause_head is not None else []),
                *(["step_logits"] if self.step_head is not None else [])]

    def input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", *(["response_mask"] if self.surprise_features else []), "mask"]

    def _surprise(self, logits: Tensor, input_ids: Tensor, response_mask: Tensor) -> Tensor:
        """logits (1, S, V), input_ids (1, S), response_mask (1, S) -> features (1, 3, 1, S)."""
        shifted = logits - logits.amax(dim=-1, keepdim=True)
        log_probs = shifted - torch.log(torch.exp(shifted).sum(dim=-1, keepdim=True))  # never log(0)
        chosen = (input_ids[0, 1:, None] == self.vocab_ids[None, :]).to(logits.dtype)  # (S - 1, V)
        taken = (log_probs[0, :-1] * chosen).sum(dim=-1)  # (S - 1,)
        surprise = torch.cat((taken[:1] * 0, -taken)) * response_mask[0]  # (S,), >= 0
        length = surprise.shape[0]
        earlier = self.lower[:length, :length].to(surprise.dtype) * surprise[None, :]  # (S, S): u <= t
        running_max = earlier.amax(dim=-1)  # surprise >= 0, so the masked zeros never win
        running_sum = earlier.sum(dim=-1)
        stacked = torch.stack((surprise, running_max, running_sum))  # (3, S)
        return torch.log1p(stacked)[None, :, None, :]

    def forward(self, input_ids: Tensor, attention_mask: Tensor, *rest: Tensor) -> tuple[Tensor, ...]:
        response_mask, mask = rest if self.surprise_features else (None, rest[0])
        features = self.backbone.hidden(input_ids, mask)  # (1, H, 1, S)
        if self.surprise_features:
            assert response_mask is not None
            extra = self._surprise(self.backbone.core.lm_head(features), input_ids, response_mask)
            features = torch.cat((features, extra), dim=1)  # (1, F, 1, S)
        following = torch.cat((attention_mask[:, 1:], attention_mask[:, :1] * 0), dim=1)
        last = (attention_mask - following)[:, None, None, :]  # (1, 1, 1, S): 1 at the last real token
        pooled = (features * last).sum(dim=3, keepdim=True)  # (1, F, 1, 1)
        outputs = [self.score_head(pooled).reshape(1)]
        if self.clause_head is not None:
            outputs.append(self.clause_head(pooled)[:, :, 0, 0])
        if self.step_head is not None:
            outputs.append(self.step_head(features)[:, 0, 0, :])
        return tuple(outputs)


def _conv_head(linear: nn.Linear) -> nn.Conv2d:
    conv = nn.Conv2d(linear.in_features, linear.out_features, kernel_size=1)
    with torch.no_grad():
        conv.weight.copy_(linear.weight[:, :, None, None])
        conv.bias.copy_(linear.bias)
    return conv


# ---- inputs -----------------------------------------------------------------------------------------

def check_inputs(tokenizer: DistilleryTokenizer, max_length: int, pairs: int) -> list[tuple[EncodedInput, EncodedInput]]:
    """The sample pairs plus ``pairs`` generated arithmetic pairs (gold vs corrupted response)."""
    texts = [(p, a, b) for p, a, b in SAMPLE_PAIRS]
    for example in generate_arithmetic(pairs, 7):
        bad = corrupt(example, random.Random(len(texts)))
        texts.append((example["prompt"], example["completion"], bad["completion"]))
    return [(encode_input(tokenizer, p, a, max_length), encode_input(tokenizer, p, b, max_length))
            for p, a, b in texts]


def program_inputs(item: EncodedInput, length: int, surprise: bool, dtype: type) -> dict[str, np.ndarray]:
    """One input right-padded to ``length`` as the program's named numpy inputs."""
    n = len(item.ids)
    ids = np.zeros((1, length), dtype=np.int32)
    ids[0, :n] = item.ids
    attention = np.zeros((1, length), dtype=dtype)
    attention[0, :n] = 1
    inputs = {"input_ids": ids, "attention_mask": attention}
    if surprise:
        response = np.zeros((1, length), dtype=dtype)
        response[0, item.response_start:n] = 1
        inputs["response_mask"] = response
    inputs["mask"] = prefill_mask(length).numpy().astype(dtype)
    return inputs


def reference_outputs(judge: JudgeModel, item: EncodedInput) -> dict[str, np.ndarray]:
    """The PyTorch judge (fp32) on one unpadded input: score (1,), clause_logits (1, C), step_logits (1, T)."""
    ids = torch.tensor([item.ids])
    mask = torch.ones_like(ids)
    response = torch.zeros_like(ids)
    response[0, item.response_start:] = 1
    with torch.no_grad():
        out = judge(ids, mask, response if judge.surprise_features else None)
    result = {"score": out.score.numpy()}
    if out.clause_logits is not None:
        result["clause_logits"] = out.clause_logits.numpy()
    if out.step_logits is not None:
        result["step_logits"] = out.step_logits.numpy()
    return result


# ---- conversion -----------------------------------------------------------------------------------

def convert(module: AneJudge, options: JudgeCoreMLOptions) -> Any:
    """Trace and convert to an ML Program with enumerated sequence lengths."""
    import coremltools as ct

    fp16 = options.precision == "fp16"
    io_dtype = np.float16 if fp16 else np.float32
    n = options.seq_lens[-1]
    example = {"input_ids": torch.zeros((1, n), dtype=torch.int32), "attention_mask": torch.ones((1, n)),
               "response_mask": torch.ones((1, n)), "mask": prefill_mask(n)}
    names = module.input_names()

    def shapes(rank: int) -> Any:
        if len(options.seq_lens) == 1:
            return (1, n) if rank == 2 else (1, n, 1, n)
        choices = [(1, s) if rank == 2 else (1, s, 1, s) for s in options.seq_lens]
        return ct.EnumeratedShapes(choices, default=choices[-1])

    if options.target == "iOS17" and len(options.seq_lens) > 1:
        raise ValueError("iOS17 accepts one enumerated-shape input only; pass one --seq-lens value or target iOS18")
    inputs = [ct.TensorType(name, shape=shapes(4 if name == "mask" else 2),
                            dtype=np.int32 if name == "input_ids" else io_dtype) for name in names]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, tuple(example[name] for name in names), check_trace=False)
    return ct.convert(traced, inputs=inputs, outputs=[ct.TensorType(name, dtype=io_dtype)
                                                      for name in module.output_names()],
                      convert_to="mlprogram", minimum_deployment_target=getattr(ct.target, options.target),
                      compute_precision=ct.precision.FLOAT16 if fp16 else ct.precision.FLOAT32,
                      skip_model_load=True)


def _decisions(reference: dict[str, np.ndarray], got: dict[str, np.ndarray], step_positions: list[int],
               atol: float) -> list[str]:
    """Step verdicts (logit > 0) that differ where the reference is not within ``atol`` of 0."""
    if "step_logits" not in reference:
        return []
    ref = reference["step_logits"][0, step_positions]
    have = got["step_logits"][0, step_positions]
    return [f"step at {p}: reference {r:.3f}, program {h:.3f}"
            for p, r, h in zip(step_positions, ref, have, strict=True) if abs(r) > atol and (r > 0) != (h > 0)]


def verify(judge: JudgeModel, module: AneJudge, function: Any, pairs: list[tuple[EncodedInput, EncodedInput]],
           options: JudgeCoreMLOptions) -> dict[str, Any]:
    """Rewrite error (PyTorch, fp32) and program error (MIL executor) on every input of ``pairs``: per
    output the max abs errors, the relative errors (max abs error / max|reference|, over all inputs),
    and for fp16 programs the same relative error of the rewrite run by PyTorch in fp16 (its floor)."""
    fp16 = options.precision == "fp16"
    dtype = np.float16 if fp16 else np.float32
    names = module.output_names()
    half = copy.deepcopy(module).half().eval() if fp16 else None
    rewrite = dict.fromkeys(names, 0.0)
    program = dict.fromkeys(names, 0.0)
    torch16 = dict.fromkeys(names, 0.0)
    scale = dict.fromkeys(names, 0.0)
    usage = dict.fromkeys(names, 0.0)
    flips: list[str] = []
    inputs_checked = 0
    for index, pair in enumerate(pairs):
        scores = []
        for item in pair:
            length = next((s for s in options.seq_lens if s >= len(item.ids)), None)
            if length is None:
                raise ValueError(f"a check input has {len(item.ids)} tokens, more than the largest --seq-lens "
                                 f"({options.seq_lens[-1]}); pass a length of at least {len(item.ids)}")
            reference = reference_outputs(judge, item)
            feed = program_inputs(item, length, module.surprise_features, np.float32)
            with torch.no_grad():
                ours = module(*(torch.from_numpy(feed[name]) for name in module.input_names()))
            cast = {k: v.astype(dtype) if v.dtype == np.float32 else v for k, v in feed.items()}
            got = function(cast)
            halves = None
            if half is not None:
                with torch.no_grad():
                    halves = half(*(torch.from_numpy(cast[name]) for name in module.input_names()))
            positions = item.step_positions if "step_logits" in reference else []
            for i, (name, value) in enumerate(zip(names, ours, strict=True)):
                want = reference[name]
                scale[name] = max(scale[name], float(np.abs(_read(name, want, want, positions)[1]).max(initial=0.0)))
                rewrite[name] = max(rewrite[name], _max_error(name, value.numpy(), want, positions))
                have = got[name].astype(np.float64)
                program[name] = max(program[name], _max_error(name, have, want, positions))
                usage[name] = max(usage[name], _tolerance_used(name, have, want, positions, options))
                if halves is not None:
                    torch16[name] = max(torch16[name], _max_error(name, halves[i].float().numpy().astype(np.float64),
                                                                  want, positions))
            flips += [f"pair {index}: {flip}" for flip in _decisions(reference, got, positions, options.atol)]
            scores.append((float(reference["score"][0]), float(got["score"][0])))
            inputs_checked += 1
        (ref_a, got_a), (ref_b, got_b) = scores
        if abs(ref_a - ref_b) > options.atol and (ref_a > ref_b) != (got_a > got_b):
            flips.append(f"pair {index}: preference flipped (reference {ref_a - ref_b:+.3f}, "
                         f"program {got_a - got_b:+.3f})")
    def relative(errors: dict[str, float]) -> dict[str, float]:
        return {name: value / (scale[name] if scale[name] > 0 else 1.0) for name, value in errors.items()}

    return {"rewrite_max_abs_error": rewrite, "program_max_abs_error": program, "tolerance_used": usage,
            "rewrite_rel_error": relative(rewrite), "program_rel_error": relative(program),
            "pytorch_fp16_rel_error": relative(torch16) if fp16 else None,
            "decision_flips": flips,
            "inputs_checked": inputs_checked, "pairs_checked": len(pairs)}


def judge_failures(checks: dict[str, Any], options: JudgeCoreMLOptions) -> tuple[list[str], dict[str, float]]:
    """What failed, under the rules of :mod:`conversion.criteria` (the student's Core ML rules): the fp32
    rewrite's relative error per output (:func:`conversion.criteria.fp32_verdict`), the program's per
    output (fp16: :func:`conversion.criteria.fp16_verdict` against PyTorch's own fp16 error of that
    output; fp32: 1e-4), the elementwise ``--atol``/``--rtol`` bound and decision flips. Returns the
    failures and the relative tolerance applied to each output's program error."""
    errors = [f"rewrite {f}" for f in fp32_verdict(checks["rewrite_rel_error"], tolerance=options.rewrite_rtol).failures]
    if options.rewrite_atol is not None:
        for name, value in checks["rewrite_max_abs_error"].items():
            if not value <= options.rewrite_atol:
                errors.append(f"rewrite {name} max abs error {value:.3g} exceeds {options.rewrite_atol:.3g}")
    tolerances = {}
    for name, value in checks["program_rel_error"].items():
        if checks["pytorch_fp16_rel_error"] is not None:
            floor = checks["pytorch_fp16_rel_error"][name]
            verdict = fp16_verdict({f"{name} rel error": value}, floor, None, None)
            tolerances[name] = fp16_tolerance(floor)
        else:
            verdict = fp32_verdict({f"{name} rel error": value}, tolerance=COREML_FP32_TOLERANCE)
            tolerances[name] = COREML_FP32_TOLERANCE
        errors += [f"program {f}" for f in verdict.failures]
    for name, value in checks["tolerance_used"].items():
        if not value <= 1.0:
            errors.append(f"program {name} differs from PyTorch by {value:.2f}x the tolerance (max abs error "
                          f"{checks['program_max_abs_error'][name]:.3g}; allowed atol {options.atol:g} + rtol "
                          f"{options.rtol:g} x |reference|)")
    return errors + list(checks["decision_flips"]), tolerances


def _read(name: str, have: np.ndarray, want: np.ndarray, step_positions: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The values of an output a user reads: step logits at the ``</step>`` tokens only (the program's are
    padded to its input length), every value of the other outputs."""
    if name == "step_logits":
        return have[0, step_positions], want[0, step_positions]
    return have.reshape(want.shape), want


def _max_error(name: str, have: np.ndarray, want: np.ndarray, step_positions: list[int]) -> float:
    have, want = _read(name, have, want, step_positions)
    return float(np.abs(have - want).max()) if want.size else 0.0


def _tolerance_used(name: str, have: np.ndarray, want: np.ndarray, step_positions: list[int],
                    options: JudgeCoreMLOptions) -> float:
    """max |have - want| / (atol + rtol |want|) over the values a user reads (<= 1 passes)."""
    have, want = _read(name, have, want, step_positions)
    return float((np.abs(have - want) / (options.atol + options.rtol * np.abs(want))).max()) if want.size else 0.0


def convert_judge(judge_dir: Path, out: Path, options: JudgeCoreMLOptions) -> dict[str, Any]:
    """Load (verified), rewrite, convert, save, lint, verify; write the report beside ``out``."""
    import coremltools as ct

    from conversion.ane_lint import lint_program
    from conversion.mil_executor import MilFunction, load_program

    start = time.perf_counter()
    judge, spec, tokenizer = load_judge(judge_dir)
    judge = judge.float().eval()
    if options.seq_lens[-1] > judge.backbone.config.max_position_embeddings:
        raise ValueError(f"--seq-lens {options.seq_lens[-1]} exceeds the judge's max_position_embeddings "
                         f"{judge.backbone.config.max_position_embeddings}")
    module = AneJudge(judge).eval()
    pairs = check_inputs(tokenizer, spec.max_length, options.pairs)
    longest = max(len(item.ids) for pair in pairs for item in pair)
    if longest > options.seq_lens[-1]:
        raise ValueError(f"a check input has {longest} tokens, more than the largest --seq-lens "
                         f"({options.seq_lens[-1]}); pass a length of at least {longest}")
    mlmodel = convert(module, options)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".coreml-", dir=out.parent) as tmp:
        staged = Path(tmp) / out.name
        mlmodel.save(str(staged))
        if out.exists():
            shutil.rmtree(out)
        staged.rename(out)
    convert_seconds = time.perf_counter() - start
    program = load_program(out)
    lint = lint_program(program)
    checks = verify(judge, module, MilFunction(program, "main"), pairs, options)
    errors, checks["program_rel_tolerance"] = judge_failures(checks, options)
    checks["rewrite_rel_tolerance"] = options.rewrite_rtol
    report = {
        "format": REPORT_FORMAT, "format_version": 1, "judge": str(judge_dir), "package": str(out),
        "options": options.model_dump(mode="json"), "inputs": module.input_names(), "outputs": module.output_names(),
        "num_parameters": judge.num_parameters(), "tie_log_nu": float(judge.tie_log_nu.detach()),
        "size_bytes": sum(p.stat().st_size for p in out.rglob("*") if p.is_file()),
        "lint": {k: v for k, v in lint.to_dict().items() if k != "op_histogram"},
        "op_histogram": lint.op_histogram, "checks": checks, "errors": errors, "passed": not errors,
        "executor": "mil-numpy", "versions": {"torch": torch.__version__, "coremltools": ct.__version__},
        "seconds": {"convert": round(convert_seconds, 3), "total": round(time.perf_counter() - start, 3)},
    }
    report_file(out).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report


def report_file(package: Path) -> Path:
    """``X.mlpackage`` -> ``X.report.json`` beside it."""
    return package.with_name(package.name.removesuffix(".mlpackage") + ".report.json")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m arbiter.judge_coreml", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("judge_dir", type=Path, help="judge artifact directory (manifest verified)")
    parser.add_argument("--out", type=Path, required=True, help="the .mlpackage to write")
    parser.add_argument("--precision", choices=("fp16", "fp32"), default="fp16")
    parser.add_argument("--target", choices=("iOS17", "iOS18"), default="iOS18")
    parser.add_argument("--seq-lens", default="32,64,96", help="enumerated input lengths (default 32,64,96)")
    parser.add_argument("--atol", type=float, default=0.02, help="absolute tolerance of each output (logits)")
    parser.add_argument("--rtol", type=float, default=3e-3, help="relative tolerance (of |reference|)")
    parser.add_argument("--pairs", type=int, default=8, help="generated arithmetic pairs to check (default 8)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        lengths = tuple(int(v) for v in args.seq_lens.split(",") if v.strip())
        options = JudgeCoreMLOptions(precision=args.precision, target=args.target, seq_lens=lengths,
                                     atol=args.atol, rtol=args.rtol, pairs=args.pairs)
        if not args.judge_dir.is_dir():
            raise ValueError(f"{args.judge_dir} is not a directory")
        if args.out.suffix != ".mlpackage":
            raise ValueError(f"--out must end in .mlpackage, got {args.out}")
        report = convert_judge(args.judge_dir, args.out, options)
    except (ArtifactError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    checks = report["checks"]
    program = ", ".join(f"{k} {v:.2e}" for k, v in checks["program_max_abs_error"].items())
    print(f"judge Core ML ({report['num_parameters'] / 1e6:.2f}M params, {options.precision}, {options.target}) "
          f"-> {args.out} ({report['size_bytes'] / 1e6:.2f} MB)")
    print(f"  MIL executor vs PyTorch max abs error: {program} (atol {options.atol:g}, rtol {options.rtol:g}) on "
          f"{checks['inputs_checked']} inputs; decision flips: {len(checks['decision_flips'])}")
    relative = ", ".join(f"{k} {v:.2e} (tol {checks['program_rel_tolerance'][k]:.2e})"
                         for k, v in checks["program_rel_error"].items())
    print(f"  relative error (max|Δ| / max|ref|): {relative}; fp32 rewrite "
          f"{max(checks['rewrite_rel_error'].values()):.2e} (tol {options.rewrite_rtol:g})")
    print(f"  ANE lint: {report['lint']['errors']} errors, {report['lint']['warnings']} warnings")
    print(f"{'PASSED' if report['passed'] else 'FAILED'}; report: {report_file(args.out)}")
    for error in report["errors"]:
        print(f"  error: {error}", file=sys.stderr)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
