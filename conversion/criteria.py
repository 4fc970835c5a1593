"""The pass/fail rules every exported program is judged by: pure functions of measured numbers.

One module holds the rules so that the ONNX and torch.export exporters, the Core ML converter and the
arbiter judge's Core ML conversion all decide with the same code. Every logits criterion is relative to
the scale of the reference, so it holds for a toy model and for a 135M model with logits near 40 alike:

* fp32 programs (ONNX, torch.export) and the ANE rewrite before conversion:
  ``max|got - ref| / max|ref| <= 1e-5`` (:data:`FP32_REL_TOLERANCE`), plus identical greedy tokens where
  the exporter generates. The rewrite is compared with the student with both in float64 (its algebra;
  two fp32 evaluations in different op orders differ by ~1e-5 on a 30-layer model from rounding alone).
* fp16 programs (Core ML): ``max|got - ref| / max|ref| <= max(3e-3, 1.5 x e16)`` where ``e16`` is the
  same relative error of the reference itself run by PyTorch in fp16 on the same inputs (the floor no
  fp16 program can beat; :func:`fp16_tolerance`), greedy tokens identical, and the mean
  ``KL(reference || program)`` over compared positions at most 1e-3 nats per token
  (:data:`KL_PER_TOKEN_TOLERANCE`, :func:`kl_per_token`).

Failures are sentences ``"<name> <value> exceeds the tolerance <tolerance>"`` or ``"greedy tokens differ
..."``, for people; a :class:`Verdict` also names the measurements over their tolerance
(:attr:`Verdict.exceeded`), which is what code decides on (never the wording).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

FP32_REL_TOLERANCE = 1e-5
"""max|Δ| / max|ref| allowed for fp32 programs and for the fp32 ANE rewrite."""
COREML_FP32_TOLERANCE = 1e-4
"""max|Δ| / max|ref| allowed for an fp32 Core ML program (the rewrite plus the conversion's own ops)."""
FP16_REL_FLOOR = 3e-3
"""The smallest relative tolerance of an fp16 program (whatever PyTorch's own fp16 achieves)."""
FP16_FLOOR_FACTOR = 1.5
"""An fp16 program may be this many times worse than PyTorch's own fp16 on the same inputs."""
KL_PER_TOKEN_TOLERANCE = 1e-3
"""Mean KL(fp32 reference || program) in nats per compared position."""


def relative_error(candidate: np.ndarray, reference: np.ndarray) -> float:
    """``max|candidate - reference| / max|reference|`` over the whole tensor (any shape, same shape).

    The largest reference magnitude is the scale, so near-zero entries do not dominate; an all-zero
    reference gives the plain max abs difference. Computed in float64.
    """
    candidate = np.asarray(candidate, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if candidate.shape != reference.shape:
        raise ValueError(f"shape {candidate.shape} differs from the reference {reference.shape}")
    if reference.size == 0:
        return 0.0
    scale = float(np.abs(reference).max())
    return float(np.abs(candidate - reference).max()) / (scale if scale > 0 else 1.0)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def kl_divergences(reference_logits: np.ndarray, candidate_logits: np.ndarray) -> np.ndarray:
    """Per-position ``KL(softmax(reference) || softmax(candidate))`` in nats, float64.

    reference_logits, candidate_logits: (..., V) -> (...). Non-negative up to round-off (clipped at 0).
    """
    ref = _log_softmax(np.asarray(reference_logits, dtype=np.float64))
    got = _log_softmax(np.asarray(candidate_logits, dtype=np.float64))
    if ref.shape != got.shape:
        raise ValueError(f"shape {got.shape} differs from the reference {ref.shape}")
    return np.maximum((np.exp(ref) * (ref - got)).sum(axis=-1), 0.0)


def kl_per_token(reference_logits: np.ndarray, candidate_logits: np.ndarray) -> float:
    """Mean over positions of :func:`kl_divergences`: (..., V) pairs -> one number (0.0 when empty)."""
    values = kl_divergences(reference_logits, candidate_logits)
    return float(values.mean()) if values.size else 0.0


def fp16_tolerance(pytorch_fp16_rel_error: float | None) -> float:
    """The relative tolerance of an fp16 program: ``max(3e-3, 1.5 x PyTorch's own fp16 relative error on
    the same inputs)``; 3e-3 when that floor was not measured (None) or is not finite."""
    if pytorch_fp16_rel_error is None or not np.isfinite(pytorch_fp16_rel_error):
        return FP16_REL_FLOOR
    return max(FP16_REL_FLOOR, FP16_FLOOR_FACTOR * float(pytorch_fp16_rel_error))


def exceeds(name: str, value: float | None, tolerance: float) -> list[str]:
    """``[]`` when ``value`` is None (not measured) or ``value <= tolerance``, else one failure sentence.
    NaN fails."""
    if value is None or value <= tolerance:
        return []
    return [f"{name} {value:.3g} exceeds the tolerance {tolerance:.3g}"]


@dataclass(frozen=True)
class Verdict:
    """A decision: ``passed`` when ``failures`` is empty; ``tolerance`` is the relative tolerance used;
    ``exceeded`` names the measurements over their tolerance (one failure sentence each)."""

    tolerance: float
    failures: tuple[str, ...] = field(default_factory=tuple)
    exceeded: tuple[str, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def only_tolerances(self) -> bool:
        """True when it failed and every failure is a measurement over its tolerance (no other check)."""
        return bool(self.failures) and len(self.exceeded) == len(self.failures)


def _exceeded(values: Mapping[str, float | None], tolerance: float) -> tuple[list[str], list[str]]:
    """(names, failure sentences) of the ``values`` over ``tolerance``."""
    names, failures = [], []
    for name, value in values.items():
        failure = exceeds(name, value, tolerance)
        if failure:
            names.append(name)
            failures += failure
    return names, failures


def fp32_verdict(rel_errors: Mapping[str, float | None], greedy_identical: bool | None = None, *,
                 tolerance: float = FP32_REL_TOLERANCE) -> Verdict:
    """fp32 programs and the fp32 ANE rewrite: every named relative error (``max|Δ|/max|ref|``; None =
    not measured) within ``tolerance`` and, when checked (not None), greedy tokens identical."""
    names, failures = _exceeded(rel_errors, tolerance)
    if greedy_identical is False:
        failures.append("greedy tokens differ from the reference")
    return Verdict(tolerance, tuple(failures), tuple(names))


def fp16_verdict(rel_errors: Mapping[str, float | None], pytorch_fp16_rel_error: float | None,
                 greedy_identical: bool | None, kl: float | None, *,
                 kl_tolerance: float = KL_PER_TOKEN_TOLERANCE) -> Verdict:
    """fp16 programs: every named relative error within :func:`fp16_tolerance` of
    ``pytorch_fp16_rel_error``, greedy tokens identical (when checked) and mean KL per token (when
    measured) within ``kl_tolerance`` nats."""
    tolerance = fp16_tolerance(pytorch_fp16_rel_error)
    names, failures = _exceeded(rel_errors, tolerance)
    kl_names, kl_failures = _exceeded({"kl_per_token": kl}, kl_tolerance)
    names, failures = names + kl_names, failures + kl_failures
    if greedy_identical is False:
        failures.append("greedy tokens differ from the reference")
    return Verdict(tolerance, tuple(failures), tuple(names))


def verification_length(prompt_lengths: list[int], max_new_tokens: int, max_length: int) -> int:
    """Tokens one check sequence needs: the longest prompt plus the generated tokens, where a prompt is
    cut to its last tokens so that prompt + continuation fit ``max_length`` (as the checks do)."""
    if not prompt_lengths:
        raise ValueError("no check prompts")
    new = max(0, min(max_new_tokens, max_length - 1))
    return min(max(prompt_lengths), max_length - new) + new
