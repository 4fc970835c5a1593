"""Convert a Distillery student to a Core ML ML Program and prove the conversion numerically.

    python -m conversion.convert_coreml STUDENT_DIR --out MODEL.mlpackage [options]

Steps: load the verified artifact; build the ANE rewrite (:mod:`conversion.ane_model`, or the
student's own modules with ``--no-ane``) and check it against the student in fp32; trace it with
``torch.jit.trace`` and convert to an fp16 ML Program (``prefill`` function, plus a stateful
``decode`` function with the KV cache as Core ML states when ``--stateful``; both go into one
multifunction package with shared weights); optionally compress weights; save; read the saved
program back and lint it for the Neural Engine (:mod:`conversion.ane_lint`); run it with the numpy
reference executor (:mod:`conversion.mil_executor`; on macOS also with Core ML's ``predict``) against
PyTorch on fixed prompts; write ``MODEL.report.json`` (:mod:`conversion.coreml_report`) and print a
summary. The exit status is 0 when every check passed, 1 when one failed, 2 for invalid options.

The rules are those of :mod:`conversion.criteria`: the rewrite within 1e-5 of the student
(max|Δ| / max|ref|, both evaluated in float64 so that the check sees the rewrite's algebra and not fp32
rounding noise; :func:`exact_rewrite_errors`); an fp16 program's prefill and decode logits within
max(3e-3, 1.5 x PyTorch's own fp16 error on the same sequences), greedy tokens identical and mean
KL(reference || program) at most 1e-3 nats per token. The checks need only the check sequences' length (prompt + generated tokens): when
``--cache-len`` is longer, the decoder is converted a second time with a cache of that length (same
weights, options and ops; the report's ``checks.verification_program`` says so) and verified in place of
the shipped decode, which is run for one step; the package keeps the requested cache length.

With ``--quantize`` the program is compared with the rewrite carrying the program's own dequantized
weights (after checking each lies within its quantization step of the student's weight), so the
checks isolate conversion from quantization; the quantization damage against the student is reported
under ``checks.quantization``.
"""

from __future__ import annotations

import argparse
import copy
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, ValidationError, field_validator, model_validator
from torch import nn

from conversion.ane_model import (
    ANE_MAX_DIM,
    STATE_ALIGNMENT,
    AneConfig,
    AnePrefill,
    AneStatefulDecoder,
    PlainPrefill,
    PlainStatefulDecoder,
    decode_mask,
    layout_budget,
    prefill_mask,
)
from conversion.coreml_report import (
    Checks,
    ConversionStatus,
    CoreMLReport,
    LintSummary,
    report_path,
    summary,
    write_report,
)
from conversion.criteria import (
    COREML_FP32_TOLERANCE,
    FP16_REL_FLOOR,
    FP32_REL_TOLERANCE,
    KL_PER_TOKEN_TOLERANCE,
    Verdict,
    exceeds,
    fp16_tolerance,
    fp16_verdict,
    fp32_verdict,
    verification_length,
)
from training.artifact import ArtifactError
from training.config_base import FrozenStrictModel
from training.model import Student
from training.model_config import ConfigError, ModelConfig
from training.tokenizer import TOKENIZER_FILE, DistilleryTokenizer, TokenizerMismatchError
from training.user_errors import UserError

__all__ = ["ConversionError", "ConversionStatus", "CoreMLOptions", "OptionsError", "export_coreml", "main"]

DEFAULT_PROMPTS = (
    "Q: 7+3*2-4=?\n",
    "Set a timer for 5 minutes",
    "Will it rain today?",
    "The quick brown fox jumps over",
)
ANE_REWRITE_TOLERANCE = FP32_REL_TOLERANCE
"""Relative logits error (max|Δ| / max|ref|) allowed between the fp32 rewrite and the student."""
FP16_TOLERANCE = FP16_REL_FLOOR
"""The smallest relative tolerance of fp16 logits; the one applied is
:func:`conversion.criteria.fp16_tolerance` of PyTorch's own fp16 error (decode always uses fp16 states)."""
FP32_TOLERANCE = COREML_FP32_TOLERANCE
"""Relative logits error allowed for the prefill of an fp32 program (the rewrite plus conversion)."""
WEIGHT_STEP = {"int8": 1.0 / 127, "int4": 1.0 / 7, "palettize4": 2.0 / 15}
"""Quantization step relative to max|w|; a dequantized weight lies within half a step (+fp16 slack)."""
QUANT_BLOCK_SIZE = 32
PALETTE_GROUP_SIZE = 16


class ConversionError(RuntimeError):
    """coremltools could not convert or compress this model, or the compressed program does not hold the
    student's weights: an outcome of the model and the options, reported in the report (status ``error``),
    unlike a programming error, which is raised with its traceback."""


class OptionsError(ValueError):
    """The options do not fit this model (e.g. ``--seq-lens`` longer than its positions)."""


USER_CAUSED: tuple[type[Exception], ...] = (
    ArtifactError, ConfigError, TokenizerMismatchError, UserError, OSError, OptionsError, ConversionError)
"""What :func:`export_coreml` reports (status ``error``) instead of raising: an unusable artifact, config or
file, options that do not fit the model, a model coremltools cannot convert. Anything else is a programming
error and is raised with its traceback."""

_COREMLTOOLS_ERRORS = (RuntimeError, ValueError, NotImplementedError, AssertionError, KeyError)
"""What coremltools' converter and optimizer raise for a model or option they cannot handle."""


# ---- options ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SeqLens:
    """Sequence lengths a function accepts: enumerated (``16,32,64``) or a range (``1:128``)."""

    low: int
    high: int
    enumerated: tuple[int, ...] | None

    @classmethod
    def parse(cls, text: str) -> SeqLens:
        text = text.strip()
        if ":" in text:
            lo, hi = (int(p) for p in text.split(":", 1))
            if not 1 <= lo <= hi:
                raise ValueError(f"range {text!r} needs 1 <= low <= high")
            return cls(lo, hi, None)
        values = tuple(sorted({int(p) for p in text.split(",") if p.strip()}))
        if not values or values[0] < 1:
            raise ValueError(f"lengths {text!r} must be positive integers")
        return cls(values[0], values[-1], values)

    def with_one(self) -> SeqLens:
        """The same lengths plus 1 (decode steps feed one token)."""
        if self.enumerated is None:
            return SeqLens(1, self.high, None)
        return SeqLens(1, self.high, tuple(sorted({1, *self.enumerated})))

    def __str__(self) -> str:
        return f"{self.low}:{self.high}" if self.enumerated is None else ",".join(map(str, self.enumerated))


class CoreMLOptions(FrozenStrictModel):
    """Validated conversion options (the CLI's flags)."""

    target: Literal["iOS17", "iOS18"] = Field("iOS18",
                                              description="minimum deployment target (--target); states, int4 and "
                                                          "fused attention need iOS18")
    seq_lens: str = Field("16,32,64",
                          description="accepted sequence lengths (--seq-lens): enumerated '16,32,64' or a range "
                                      "'1:128'; decode adds 1")
    stateful: bool = Field(True,
                           description="add a decode function with the KV cache as Core ML states (--stateful; "
                                       "default: on for iOS18)")
    quantize: Literal["none", "int8", "int4", "palettize4"] = Field(
        "none", description="weight compression (--quantize): none, int8 per-channel, int4 per-block (iOS18), "
                            "palettize4 (4-bit palettization)")
    ane: bool = Field(True, description="convert the ANE rewrite (true) or the student's own modules (--no-ane)")
    attention: Literal["split", "fused"] = Field("split",
                                                 description="split: one einsum pair per head; fused: one "
                                                             "scaled_dot_product_attention op per layer (iOS18, ane)")
    precision: Literal["fp16", "fp32"] = Field("fp16", description="compute precision of the program (--precision)")
    max_new_tokens: int = Field(16, ge=1, le=1024,
                                description="greedy tokens generated per check prompt (--max-new-tokens)")
    cache_len: int | None = Field(None, gt=0,
                                  description="KV cache length of the shipped decode, a multiple of 32 (--cache-len; "
                                              "null: max_position_embeddings rounded up, at most 2048)")
    lm_head_chunk: int = Field(ANE_MAX_DIM, ge=1, le=ANE_MAX_DIM,
                               description="rows per lm_head chunk (--lm-head-chunk), at most the ANE's largest "
                                           "dimension")
    prompts: tuple[str, ...] = Field(DEFAULT_PROMPTS, description="check prompts (--prompts FILE: one a line)")

    @field_validator("seq_lens")
    @classmethod
    def _lengths(cls, value: str) -> str:
        return str(SeqLens.parse(value))

    @field_validator("cache_len")
    @classmethod
    def _aligned(cls, value: int | None) -> int | None:
        if value is not None and value % STATE_ALIGNMENT:
            raise ValueError(f"cache_len must be a multiple of {STATE_ALIGNMENT}, got {value}")
        return value

    @field_validator("prompts")
    @classmethod
    def _some_prompts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or not all(p.strip() for p in value):
            raise ValueError("need at least one non-empty prompt")
        return value

    @model_validator(mode="before")
    @classmethod
    def _default_stateful(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("stateful") is None:
            data = {**data, "stateful": data.get("target", "iOS18") == "iOS18"}
        return data

    @model_validator(mode="after")
    def _compatible(self) -> CoreMLOptions:
        if self.stateful and self.target != "iOS18":
            raise ValueError("a stateful KV cache needs --target iOS18 (or pass --no-stateful)")
        if self.quantize == "int4" and self.target != "iOS18":
            raise ValueError("--quantize int4 (per-block) needs --target iOS18")
        if self.attention == "fused" and (self.target != "iOS18" or not self.ane):
            raise ValueError("--attention fused needs --target iOS18 and the ANE rewrite (--ane)")
        return self

    @property
    def lengths(self) -> SeqLens:
        return SeqLens.parse(self.seq_lens)

    @property
    def tolerance(self) -> float:
        """The prefill tolerance before PyTorch's fp16 floor is known (near ties in greedy divergences)."""
        return FP16_TOLERANCE if self.precision == "fp16" else FP32_TOLERANCE


def resolve_cache_len(options: CoreMLOptions, config: ModelConfig) -> int:
    """The decode cache length: ``--cache-len`` or max_position_embeddings rounded up to a multiple of
    32 (at most 2048). Raises ValueError when the sequence lengths do not fit the model."""
    lengths = options.lengths
    if lengths.high > config.max_position_embeddings:
        raise OptionsError(f"--seq-lens up to {lengths.high} exceed max_position_embeddings="
                         f"{config.max_position_embeddings}")
    default = -(-min(config.max_position_embeddings, 2048) // STATE_ALIGNMENT) * STATE_ALIGNMENT
    cache_len = options.cache_len or default
    if options.stateful and lengths.high > cache_len:
        raise OptionsError(f"--seq-lens up to {lengths.high} exceed the cache length {cache_len}")
    return cache_len


def verification_cache_len(prompts: Sequence[list[int]], max_new_tokens: int, options: CoreMLOptions,
                           cache_len: int) -> int:
    """The cache length the checks need: the longest check sequence (prompt, cut as the checks cut it,
    plus ``max_new_tokens`` generated tokens; :func:`conversion.criteria.verification_length`) rounded
    up to a multiple of 32, at most the deployment ``cache_len``. Verifying a 2048-slot program on
    30-token sequences would spend its time moving empty cache slots."""
    max_length = min(options.lengths.high, cache_len)
    needed = verification_length([len(p) for p in prompts], max_new_tokens, max_length)
    return min(cache_len, -(-needed // STATE_ALIGNMENT) * STATE_ALIGNMENT)


def lengths_within(lengths: SeqLens, cache_len: int) -> SeqLens:
    """The accepted lengths (decode's, including 1) that fit a ``cache_len`` cache."""
    if lengths.enumerated is None:
        return SeqLens(lengths.low, min(lengths.high, cache_len), None)
    kept = tuple(n for n in lengths.enumerated if n <= cache_len) or (1,)
    return SeqLens(kept[0], kept[-1], kept)


# ---- building and converting ------------------------------------------------------------------

def build_prefill(student: Student, options: CoreMLOptions) -> nn.Module:
    """The prefill module (ANE rewrite, or the student's own modules with ``ane=False``), in eval mode."""
    if options.ane:
        return AnePrefill(student, AneConfig(lm_head_chunk=options.lm_head_chunk, attention=options.attention)).eval()
    return PlainPrefill(student).eval()


def build_decoder(student: Student, options: CoreMLOptions, cache_len: int,
                  cache_dtype: torch.dtype = torch.float16) -> nn.Module:
    """The stateful decoder with a ``cache_len`` KV cache of ``cache_dtype``, in eval mode."""
    config = AneConfig(lm_head_chunk=options.lm_head_chunk, cache_len=cache_len, cache_dtype=cache_dtype,
                       attention=options.attention)
    module = AneStatefulDecoder(student, config) if options.ane else PlainStatefulDecoder(student, config)
    return module.eval()


def build_modules(student: Student, options: CoreMLOptions, cache_len: int) -> tuple[nn.Module, nn.Module | None]:
    """The prefill module and, when ``options.stateful``, the fp16-cache decoder."""
    decoder = build_decoder(student, options, cache_len) if options.stateful else None
    return build_prefill(student, options), decoder


@torch.no_grad()
def rewrite_errors(student: Student, prefill: nn.Module, decoder: nn.Module | None,
                   prompts: Sequence[list[int]]) -> tuple[float, float]:
    """Max abs and relative (max|Δ| / max|ref|, over everything compared) logits difference of the
    (fp32) modules from the student: prefill on each prompt, and the decoder fed the prompt's first
    half as one chunk and the rest one token at a time."""
    worst, scale = 0.0, 0.0
    for tokens in prompts:
        ids = torch.tensor([tokens])
        ref = student(ids)[0]
        scale = max(scale, float(ref.abs().max()))
        out = prefill(ids.int(), prefill_mask(len(tokens)))[0]
        worst = max(worst, float((out - ref).abs().max()))
        if decoder is None:
            continue
        decoder.reset_cache()
        cache_len = decoder.cache_len
        half = max(1, len(tokens) // 2)
        steps = [(0, tokens[:half])] + [(p, [t]) for p, t in enumerate(tokens[half:], start=half)]
        outs = [decoder(torch.tensor([chunk], dtype=torch.int32), torch.tensor([pos], dtype=torch.int32),
                        decode_mask(pos, len(chunk), cache_len))[0] for pos, chunk in steps]
        worst = max(worst, float((torch.cat(outs) - ref).abs().max()))
        decoder.reset_cache()
    return worst, worst / (scale if scale > 0 else 1.0)


@torch.no_grad()
def exact_rewrite_errors(student: Student, prefill: nn.Module, decoder: nn.Module | None,
                         prompts: Sequence[list[int]]) -> tuple[float, float]:
    """:func:`rewrite_errors` of float64 copies of the student and the modules: the rewrite's algebra
    (folded constants, the fused norm and its epsilon, cache handling) against the student's, free of
    the rounding of either fp32 evaluation, which is what the 1e-5 rewrite criterion is about. Two fp32
    evaluations of the same function in different op orders differ by their rounding noise, which grows
    with depth: on SmolLM2-135M (30 layers) the student's own fp32 logits are 5.4e-6 (relative) from
    float64 and the fp32 rewrite 1.4e-5 from the fp32 student, while the rewrite's algebra is 5.3e-6 off
    (BENCHMARKS.md). Rounding of the converted program is judged by the fp16 checks against the student."""
    return rewrite_errors(copy.deepcopy(student).double(), copy.deepcopy(prefill).double(),
                          None if decoder is None else copy.deepcopy(decoder).double(), prompts)


def rewrite_error(student: Student, prefill: nn.Module, decoder: nn.Module | None,
                  prompts: Sequence[list[int]]) -> float:
    """Max abs logits difference of :func:`rewrite_errors`."""
    return rewrite_errors(student, prefill, decoder, prompts)[0]


def _length_inputs(lengths: SeqLens, mask_rows: int | None, mask_dtype: type, target: str) -> list[Any]:
    """Core ML input types: input_ids (1, S) and mask (1, mask_rows or S, 1, S), enumerated or ranged.

    Below iOS18 Core ML accepts one enumerated-shape input only; the mask then takes ranged sizes.
    """
    import coremltools as ct

    def span() -> Any:
        return ct.RangeDim(lengths.low, lengths.high, default=lengths.high)

    if lengths.enumerated is None:
        ids_shape: Any = (1, span())
        mask_shape: Any = (1, mask_rows or span(), 1, span())
    elif len(lengths.enumerated) == 1:
        ids_shape, mask_shape = (1, lengths.high), (1, mask_rows or lengths.high, 1, lengths.high)
    else:
        ids_shape = ct.EnumeratedShapes([(1, n) for n in lengths.enumerated], default=(1, lengths.high))
        if target == "iOS18":
            mask_shape = ct.EnumeratedShapes([(1, mask_rows or n, 1, n) for n in lengths.enumerated],
                                             default=(1, mask_rows or lengths.high, 1, lengths.high))
        else:
            mask_shape = (1, mask_rows or span(), 1, span())
    return [ct.TensorType("input_ids", shape=ids_shape, dtype=np.int32),
            ct.TensorType("mask", shape=mask_shape, dtype=mask_dtype)]


def convert_module(module: nn.Module, lengths: SeqLens, options: CoreMLOptions, *, stateful: bool) -> Any:
    """Trace (torch.jit.trace) and convert one module to an ML Program (not compiled or loaded)."""
    import coremltools as ct

    fp16 = options.precision == "fp16"
    io_dtype = np.float16 if fp16 else np.float32
    n = lengths.high
    ids = torch.zeros((1, n), dtype=torch.int32)
    if stateful:
        cache_len = module.cache_len
        example: tuple[torch.Tensor, ...] = (ids, torch.zeros(1, dtype=torch.int32), decode_mask(0, n, cache_len))
        inputs = _length_inputs(lengths, cache_len, io_dtype, options.target)
        inputs.insert(1, ct.TensorType("position", shape=(1,), dtype=np.int32))
        states = [ct.StateType(wrapped_type=ct.TensorType(shape=tuple(getattr(module, name).shape),
                                                          dtype=np.float16), name=name)
                  for name in ("key_cache", "value_cache")]
    else:
        example, inputs, states = (ids, prefill_mask(n)), _length_inputs(lengths, None, io_dtype, options.target), None
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(module, example, check_trace=False)
    if stateful:
        module.reset_cache()
    try:
        return ct.convert(
            traced, inputs=inputs, outputs=[ct.TensorType("logits", dtype=io_dtype)], states=states,
            convert_to="mlprogram", minimum_deployment_target=getattr(ct.target, options.target),
            compute_precision=ct.precision.FLOAT16 if fp16 else ct.precision.FLOAT32,
            skip_model_load=True,
        )
    except _COREMLTOOLS_ERRORS as exc:
        kind = "decode" if stateful else "prefill"
        raise ConversionError(f"coremltools could not convert the {kind} module: {type(exc).__name__}: {exc}") \
            from exc


def compressible_weights(mlmodel: Any) -> dict[str, tuple[int, ...]]:
    """Const names (and shapes) worth compressing: float weights of conv/linear/matmul and gathered
    tables, except the RoPE tables (compressing cos/sin would corrupt positions)."""
    from coremltools.converters.mil.mil import types

    weights = {}
    for function in mlmodel._mil_program.functions.values():
        for op in function.operations:
            var = op.outputs[0]
            if op.op_type != "const" or "rope_" in var.name or var.rank < 2 or not types.is_float(var.dtype):
                continue
            if any(child.op_type in ("conv", "linear", "matmul", "gather") for child in var.child_ops):
                weights[op.name] = tuple(int(d) for d in var.shape)
    return weights


def int4_block_size(shape: tuple[int, ...]) -> int:
    """Largest block (32, 16, 8 or 4) dividing axis 1, the axis coremltools blocks along."""
    return next((b for b in (QUANT_BLOCK_SIZE, 16, 8, 4) if shape[1] % b == 0), 1)


def compress(mlmodel: Any, mode: str, target: str) -> Any:
    """Weight compression with coremltools.optimize.coreml: int8 per-channel and int4 per-block
    (block 32, or the largest of 16/8/4 dividing the input axis) symmetric linear quantization, or
    4-bit uniform palettization (per group of 16 channels on iOS18, per tensor on iOS17; k-means would
    need scikit-learn)."""
    from coremltools.optimize.coreml import (
        OpLinearQuantizerConfig,
        OpPalettizerConfig,
        OptimizationConfig,
        linear_quantize_weights,
        palettize_weights,
    )

    def op_config(shape: tuple[int, ...]) -> Any:
        if mode == "int8":
            return OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel")
        if mode == "int4":
            return OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int4", granularity="per_block",
                                           block_size=int4_block_size(shape))
        if target == "iOS18":
            return OpPalettizerConfig(mode="uniform", nbits=4, granularity="per_grouped_channel",
                                      group_size=PALETTE_GROUP_SIZE)
        return OpPalettizerConfig(mode="uniform", nbits=4, granularity="per_tensor")

    weights = compressible_weights(mlmodel)
    config = OptimizationConfig(op_name_configs={name: op_config(shape) for name, shape in weights.items()})
    fn = palettize_weights if mode == "palettize4" else linear_quantize_weights
    try:
        return fn(mlmodel, config)
    except _COREMLTOOLS_ERRORS as exc:
        raise ConversionError(f"coremltools could not compress the weights ({mode}): {type(exc).__name__}: {exc}") \
            from exc


def save_package(prefill: Any, decoder: Any | None, out: Path) -> list[str]:
    """Save to ``out`` atomically: one function ``main`` (prefill only) or a multifunction package with
    ``prefill`` (default) and ``decode`` sharing deduplicated weights. Returns the function names."""
    import coremltools as ct

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".coreml-", dir=out.parent) as tmp:
        staged = Path(tmp) / out.name
        if decoder is None:
            prefill.save(str(staged))
            functions = ["main"]
        else:
            prefill.save(str(Path(tmp) / "prefill.mlpackage"))
            decoder.save(str(Path(tmp) / "decode.mlpackage"))
            desc = ct.utils.MultiFunctionDescriptor()
            desc.add_function(str(Path(tmp) / "prefill.mlpackage"), "main", "prefill")
            desc.add_function(str(Path(tmp) / "decode.mlpackage"), "main", "decode")
            desc.default_function_name = "prefill"
            ct.utils.save_multifunction(desc, str(staged))
            functions = ["prefill", "decode"]
        if out.exists():
            shutil.rmtree(out)
        staged.rename(out)
    return functions


def package_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ---- quantization-aware reference ---------------------------------------------------------------

def dequantized_weights(function: Any) -> dict[str, np.ndarray]:
    """Decompressed weights of a MIL function, keyed by the name of the const they replaced."""
    weights = {}
    for op in function.operations:
        if not op.op_type.startswith("constexpr_"):
            continue
        if any(child.op_type.startswith("constexpr_") for child in op.outputs[0].child_ops):
            continue  # an intermediate of a decompression chain
        source = re.sub(r"_(quantized|palettized)$", "", op.outputs[0].name)
        weights[source] = np.asarray(op.materialized_val_inference(), dtype=np.float32)
    return weights


def quantized_reference(module: nn.Module, program: Any, functions: list[str], mode: str, precision: str,
                        ) -> tuple[nn.Module, dict[str, Any]]:
    """A copy of ``module`` carrying the program's dequantized weights, after checking each lies within
    half a quantization step of the module's own weight. Returns it and a summary."""
    suffix = "_to_fp16" if precision == "fp16" else ""
    params = dict(module.named_parameters(remove_duplicate=False))
    by_const = {name.replace(".", "_") + suffix: name for name in params}
    weights = dequantized_weights(program.functions[functions[0]])
    for other in functions[1:]:
        for name, value in dequantized_weights(program.functions[other]).items():
            if name in weights and not np.array_equal(weights[name], value):
                raise ConversionError(f"function {other!r} compresses {name} differently from {functions[0]!r}")
    if not weights:
        raise ConversionError(f"--quantize {mode}: the program holds no compressed weights")
    reference = copy.deepcopy(module)
    ref_params = dict(reference.named_parameters(remove_duplicate=False))
    worst = 0.0
    for const, value in weights.items():
        if const not in by_const:
            raise ConversionError(f"compressed weight {const} matches no parameter of the converted module")
        name = by_const[const]
        original = params[name].detach().numpy()
        value = value.reshape(original.shape)
        err = float(np.abs(value - original).max() / max(float(np.abs(original).max()), 1e-12))
        worst = max(worst, err)
        with torch.no_grad():
            ref_params[name].copy_(torch.from_numpy(value))
    bound = WEIGHT_STEP[mode] / 2 + 2e-3
    info = {"mode": mode, "compressed_weights": len(weights), "weight_rel_error": worst, "weight_bound": bound}
    if worst > bound:
        raise ConversionError(f"a dequantized weight is {worst:.3g} (relative) from the student's, above the "
                           f"{mode} bound {bound:.3g}")
    return reference.eval(), info


def module_reference(module: nn.Module, dtype: torch.dtype = torch.float32) -> Callable[[list[int]], np.ndarray]:
    """Logits (T, V) of a prefill-style module (ANE or plain) whose parameters are ``dtype``, as fp32."""

    @torch.no_grad()
    def run(tokens: list[int]) -> np.ndarray:
        mask = prefill_mask(len(tokens), dtype)
        return module(torch.tensor([tokens], dtype=torch.int32), mask)[0].float().numpy()

    return run


def student_reference(student: Student) -> Callable[[list[int]], np.ndarray]:
    """Logits (T, V) of the student in fp32."""

    @torch.no_grad()
    def run(tokens: list[int]) -> np.ndarray:
        return student(torch.tensor([tokens]))[0].float().numpy()

    return run


def pytorch_fp16_rel_error(reference: Callable[[list[int]], np.ndarray], half: Callable[[list[int]], np.ndarray],
                           sequences: Sequence[list[int]]) -> float:
    """Largest relative logits error (as :func:`conversion.mil_executor.rel_error`) of ``half`` (the
    reference model run in fp16 by PyTorch) against ``reference`` (fp32), over ``sequences``: what fp16
    arithmetic alone costs this model."""
    from conversion.mil_executor import rel_error

    return max((rel_error(half(tokens), reference(tokens)) for tokens in sequences), default=0.0)


# ---- prompts --------------------------------------------------------------------------------------

def encode_prompts(student_dir: Path, prompts: Sequence[str], vocab_size: int) -> tuple[list[list[int]], str]:
    """Token ids of the prompts with the artifact's tokenizer (BOS first), or, when the directory has no
    tokenizer.json, the prompts' UTF-8 bytes modulo the vocabulary. Returns ids and which was used."""
    if (student_dir / TOKENIZER_FILE).is_file():
        tokenizer = DistilleryTokenizer.load(student_dir)
        return [tokenizer.encode(p, add_bos=True) for p in prompts], "tokenizer"
    return [[b % vocab_size for b in p.encode("utf-8")] for p in prompts], "utf8-bytes"


# ---- the whole conversion -----------------------------------------------------------------------

def _check(report: CoreMLReport, name: str, value: float | None, tolerance: float) -> None:
    failures = exceeds(name, value, tolerance)
    report.errors.extend(failures)
    report.exceeded.extend([name] if failures else [])


def op_counts(program: Any, function: str) -> dict[str, int]:
    """Op type histogram of one function of a MIL program (constants excluded)."""
    from conversion.ane_lint import lint_function

    return lint_function(program.functions[function], function)[1]


def convert_verification_decoder(student: Student, options: CoreMLOptions, cache_len: int, directory: Path) -> Path:
    """The deployment decoder converted again with a ``cache_len`` cache (same module code, weights,
    options and compression; only the state and mask sizes differ), saved as a one-function package in
    ``directory``. Returns its path."""
    decoder = build_decoder(student, options, cache_len)
    mlmodel = convert_module(decoder, lengths_within(options.lengths.with_one(), cache_len), options, stateful=True)
    if options.quantize != "none":
        mlmodel = compress(mlmodel, options.quantize, options.target)
    path = directory / "verify_decode.mlpackage"
    mlmodel.save(str(path))
    return path


def _verdict(checks: Checks, options: CoreMLOptions, result: Any, prefix: str = "") -> Verdict:
    """Failures of one verification (:class:`conversion.mil_executor.Verification`) under the shared rules
    of :mod:`conversion.criteria`: fp16 logits within max(3e-3, 1.5 x PyTorch's own fp16 error) (an fp32
    program's prefill within :data:`FP32_TOLERANCE`; its decode keeps fp16 states, so the fp16 rule),
    greedy tokens identical and mean KL(reference || program) within 1e-3 nats per token."""
    floor = checks.pytorch_fp16_rel_error if options.precision == "fp16" else None
    failures: list[str] = []
    exceeded: list[str] = []
    if options.precision == "fp16":
        rel = {f"{prefix}prefill_rel_error": result.prefill_rel_error,
               f"{prefix}decode_rel_error": result.decode_rel_error}
    else:
        rel = {f"{prefix}decode_rel_error": result.decode_rel_error}
        fp32 = fp32_verdict({f"{prefix}prefill_rel_error": result.prefill_rel_error}, tolerance=FP32_TOLERANCE)
        failures += fp32.failures
        exceeded += fp32.exceeded
    verdict = fp16_verdict(rel, floor, result.greedy_tokens_identical, result.kl_per_token)
    failures += [f if f.startswith(prefix) else prefix + f for f in verdict.failures]
    exceeded += [n if n.startswith(prefix) else prefix + n for n in verdict.exceeded]
    return Verdict(verdict.tolerance, tuple(failures), tuple(exceeded))


def export_coreml(student_dir: str | Path, out: str | Path, options: CoreMLOptions) -> CoreMLReport:
    """Convert, save, lint and verify; writes ``MODEL.report.json`` and returns the report.

    The report's ``status`` (:class:`~conversion.coreml_report.ConversionStatus`) says how it ended: passed,
    only tolerances exceeded (named in ``exceeded``), another check failed, or stopped by an error a user
    can cause (an unusable artifact or file, options that do not fit the model, a :class:`ConversionError`),
    named in ``error_type`` and ``errors``.

    Raises:
        Any other exception (a programming error), with its traceback; no report is left at the report
        path then (a stale one from an earlier run is removed first).
    """
    from conversion.ane_lint import lint_program
    from conversion.mil_executor import ExecutorRunner, PredictRunner, load_program, rel_error, verify_runner

    start, cpu_start = time.perf_counter(), time.process_time()
    student_dir, out = Path(student_dir), Path(out)
    report = CoreMLReport(model=str(student_dir), package=str(out), target=options.target,
                          options=options.model_dump(mode="json"))
    report.checks = checks = Checks(prefill_tolerance=options.tolerance, decode_tolerance=FP16_TOLERANCE,
                                    ane_rewrite_tolerance=ANE_REWRITE_TOLERANCE,
                                    kl_tolerance=KL_PER_TOKEN_TOLERANCE)  # filled in as checks run
    timings: dict[str, float] = {}
    other_failures = False  # a failed check that is not a measurement over its tolerance
    report_path(out).unlink(missing_ok=True)

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - since, 3)
        return now

    def record(verdict: Verdict) -> None:
        nonlocal other_failures
        report.errors.extend(verdict.failures)
        report.exceeded.extend(verdict.exceeded)
        other_failures |= bool(verdict.failures) and not verdict.only_tolerances

    try:
        t = time.perf_counter()
        student = Student.from_pretrained(str(student_dir)).float().eval()
        config = student.config
        cache_len = resolve_cache_len(options, config)
        prompts, encoding = encode_prompts(student_dir, options.prompts, config.vocab_size)
        verify_len = verification_cache_len(prompts, options.max_new_tokens, options, cache_len)
        if options.stateful:
            checks.deployment_cache_len, checks.verification_cache_len = cache_len, verify_len
        t = lap("load", t)

        prefill, decoder = build_modules(student, options, cache_len)
        decoder32 = build_decoder(student, options, verify_len, torch.float32) if options.stateful else None
        limit = min(options.lengths.high, verify_len)
        rewrite_prompts = [p[-limit:] for p in prompts]
        checks.ane_rewrite_max_abs_error, checks.ane_rewrite_rel_error = exact_rewrite_errors(
            student, prefill, decoder32, rewrite_prompts)
        checks.ane_rewrite_fp32_rel_error = rewrite_errors(student, prefill, decoder32, rewrite_prompts)[1]
        record(fp32_verdict({"ane_rewrite_rel_error": checks.ane_rewrite_rel_error},
                            tolerance=ANE_REWRITE_TOLERANCE))
        t = lap("rewrite_check", t)

        prefill_ml = convert_module(prefill, options.lengths, options, stateful=False)
        decode_ml = None
        if decoder is not None:
            decode_ml = convert_module(decoder, options.lengths.with_one(), options, stateful=True)
        t = lap("convert", t)
        if options.quantize != "none":
            prefill_ml = compress(prefill_ml, options.quantize, options.target)
            decode_ml = None if decode_ml is None else compress(decode_ml, options.quantize, options.target)
            t = lap("quantize", t)
        report.functions = save_package(prefill_ml, decode_ml, out)
        report.size_bytes = package_size(out)
        t = lap("save", t)

        program = load_program(out)
        lint = lint_program(program, {name: layout_budget(config, options.attention) for name in report.functions})
        report.op_histogram = lint.op_histogram
        report.lint = LintSummary(**{k: v for k, v in lint.to_dict().items() if k != "op_histogram"})
        if options.ane and lint.errors:
            report.errors.append(f"ANE lint found {len(lint.errors)} error-level issues")
            other_failures = True
        t = lap("lint", t)

        reference = student_reference(student)
        if options.quantize != "none":
            quant_module, quant_info = quantized_reference(prefill, program, report.functions, options.quantize,
                                                           options.precision)
            reference = module_reference(quant_module)
            checks.reference = f"converted module with the program's dequantized {options.quantize} weights"
            checks.quantization = quant_info
        with tempfile.TemporaryDirectory(prefix=".coreml-verify-", dir=out.parent) as scratch:
            decode_package = None
            if options.stateful and verify_len < cache_len:
                decode_package = convert_verification_decoder(student, options, verify_len, Path(scratch))
                verify_program = load_program(decode_package)
                if op_counts(verify_program, "main") != report.op_histogram.get("decode"):
                    report.errors.append("the verification decode program's ops differ from the shipped decode's")
                    other_failures = True
                checks.verification_program = (
                    f"prefill: the shipped function; decode: the same decoder converted again with a "
                    f"{verify_len}-slot cache (shipped: {cache_len}; same weights, options and op histogram), "
                    f"sized to the check sequences; the shipped decode is run for one step "
                    f"(deployment_decode_rel_error)")
                t = lap("convert_verification", t)
            elif options.stateful:
                checks.verification_program = "the shipped package (its cache fits the check sequences)"
            runner = ExecutorRunner(out, pad_id=config.pad_token_id, decode_package=decode_package)
            result = verify_runner(runner, reference, prompts, options.max_new_tokens, config.eos_token_id,
                                   options.tolerance)
        checks.prefill_rel_error = result.prefill_rel_error
        checks.decode_rel_error = result.decode_rel_error
        checks.greedy_tokens_identical = result.greedy_tokens_identical
        checks.prompts_checked = result.prompts_checked
        checks.greedy = result.greedy
        checks.greedy_divergences = result.greedy_divergences
        checks.kl_per_token = result.kl_per_token
        checks.prefill_kl_per_token = result.prefill_kl_per_token
        checks.decode_kl_per_token = result.decode_kl_per_token
        checks.executor = f"mil-numpy (prompts encoded with {encoding})"
        if decode_package is not None:  # the shipped decode function, one step from an empty cache
            shipped = ExecutorRunner(out, pad_id=config.pad_token_id, program=program).decode_session()
            first = prompts[0][:1]
            checks.deployment_decode_rel_error = rel_error(shipped.feed(first), reference(first))
        if options.precision == "fp16":  # the same reference, run by PyTorch in fp16
            half_reference = (student_reference(copy.deepcopy(student).half().eval()) if checks.quantization is None
                              else module_reference(copy.deepcopy(quant_module).half().eval(), torch.float16))
            checks.pytorch_fp16_rel_error = pytorch_fp16_rel_error(
                reference, half_reference, [r["prompt"] + r["reference"][:-1] for r in result.greedy])
        checks.fp16_tolerance = fp16_tolerance(checks.pytorch_fp16_rel_error)
        checks.decode_tolerance = checks.fp16_tolerance
        checks.prefill_tolerance = checks.fp16_tolerance if options.precision == "fp16" else FP32_TOLERANCE
        record(_verdict(checks, options, result))
        _check(report, "deployment_decode_rel_error", checks.deployment_decode_rel_error, checks.fp16_tolerance)
        if checks.quantization is not None:
            _measure_quantization(checks.quantization, reference, student, prompts, runner.max_length,
                                  options.max_new_tokens, config.eos_token_id)
        t = lap("verify", t)

        if sys.platform == "darwin":
            predicted = verify_runner(PredictRunner(out, pad_id=config.pad_token_id), reference, prompts,
                                      options.max_new_tokens, config.eos_token_id, options.tolerance)
            checks.predict = {"prefill_rel_error": predicted.prefill_rel_error,
                              "decode_rel_error": predicted.decode_rel_error,
                              "greedy_tokens_identical": predicted.greedy_tokens_identical,
                              "greedy_divergences": predicted.greedy_divergences,
                              "kl_per_token": predicted.kl_per_token}
            record(_verdict(checks, options, predicted, prefix="predict "))
            lap("predict", t)
    except USER_CAUSED as exc:  # anything else is a programming error: raised, with its traceback
        report.errors.append(f"{type(exc).__name__}: {exc}")
        report.error_type = type(exc).__name__
    report.settle(other_failures=other_failures)
    report.timings = timings
    report.seconds = round(time.perf_counter() - start, 3)
    report.cpu_seconds = round(time.process_time() - cpu_start, 3)
    write_report(report, report_path(out))
    return report


def _measure_quantization(info: dict[str, Any], reference: Callable[[list[int]], np.ndarray], student: Student,
                          prompts: Sequence[list[int]], max_length: int, max_new_tokens: int, eos_id: int) -> None:
    """Add the dequantized rewrite's logits error and greedy agreement against the student to ``info``."""
    from conversion.mil_executor import fit_prompt, greedy_reference, rel_error

    exact = student_reference(student)
    worst, agree = 0.0, 0
    for raw in prompts:
        prompt, new = fit_prompt(raw, max_new_tokens, max_length)
        worst = max(worst, rel_error(reference(prompt), exact(prompt)))
        agree += greedy_reference(reference, prompt, new, eos_id) == greedy_reference(exact, prompt, new, eos_id)
    info["logits_rel_error_vs_student"] = worst
    info["greedy_agreement_vs_student"] = agree / len(prompts)


# ---- CLI ----------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m conversion.convert_coreml",
        description="Convert a Distillery student to a Core ML ML Program (ANE-optimized by default), lint "
                    "it for the Neural Engine and verify it against PyTorch. Writes MODEL.report.json "
                    "beside MODEL.mlpackage; exits 1 when a check fails.")
    parser.add_argument("student_dir", type=Path, help="student artifact directory (manifest verified)")
    parser.add_argument("--out", type=Path, required=True, help="output MODEL.mlpackage")
    parser.add_argument("--target", choices=["iOS17", "iOS18"], default="iOS18",
                        help="minimum deployment target (default iOS18; states need iOS18)")
    parser.add_argument("--seq-lens", default="16,32,64",
                        help="accepted sequence lengths: enumerated '16,32,64' or a range '1:128' (decode adds 1)")
    parser.add_argument("--stateful", action=argparse.BooleanOptionalAction, default=None,
                        help="add a 'decode' function with the KV cache as Core ML states (default: on for iOS18)")
    parser.add_argument("--quantize", choices=["none", "int8", "int4", "palettize4"], default="none",
                        help="weight compression: int8 per-channel, int4 per-block (iOS18), 4-bit palettization")
    parser.add_argument("--ane", action=argparse.BooleanOptionalAction, default=True,
                        help="convert the ANE rewrite (default) or the student's own modules (--no-ane)")
    parser.add_argument("--attention", choices=["split", "fused"], default="split",
                        help="split: one einsum pair per head (ml-ane-transformers, default); fused: one "
                             "scaled_dot_product_attention op per layer (iOS18)")
    parser.add_argument("--precision", choices=["fp16", "fp32"], default="fp16", help="compute precision")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="greedy tokens generated per prompt")
    parser.add_argument("--cache-len", type=int, default=None,
                        help="KV cache length of the shipped decode function, a multiple of 32 (default: "
                             "max_position_embeddings rounded up, at most 2048); the checks run a copy with a "
                             "cache sized to the check prompts")
    parser.add_argument("--lm-head-chunk", type=int, default=ANE_MAX_DIM,
                        help=f"rows per lm_head chunk (at most {ANE_MAX_DIM})")
    parser.add_argument("--prompts", type=Path, default=None, help="file with one check prompt per line")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="PyTorch threads for the reference checks (default 1: the tensors are small and "
                             "extra threads mostly contend)")
    return parser


def options_from_args(args: argparse.Namespace) -> CoreMLOptions:
    """Validate parsed flags into :class:`CoreMLOptions`."""
    fields: dict[str, Any] = {
        "target": args.target, "seq_lens": args.seq_lens, "stateful": args.stateful, "quantize": args.quantize,
        "ane": args.ane, "attention": args.attention, "precision": args.precision,
        "max_new_tokens": args.max_new_tokens,
        "cache_len": args.cache_len, "lm_head_chunk": args.lm_head_chunk,
    }
    if args.prompts is not None:
        fields["prompts"] = tuple(line for line in args.prompts.read_text().splitlines() if line.strip())
    return CoreMLOptions(**fields)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        options = options_from_args(args)
        resolve_cache_len(options, ModelConfig.load(args.student_dir / "config.json"))
    except (ValidationError, ValueError, OSError) as exc:
        parser.error(str(exc))
    if args.torch_threads < 1:
        parser.error("--torch-threads must be >= 1")
    torch.set_num_threads(args.torch_threads)
    report = export_coreml(args.student_dir, args.out, options)
    print(summary(report))
    print(f"report: {report_path(args.out)}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
