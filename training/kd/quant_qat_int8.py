"""Quantization-aware training (QAT) for int8 weights, the int8 export, and int8 accuracy.

The deployed scheme (what CoreML's ``linear_quantize_weights(mode="linear_symmetric", dtype="int8",
granularity="per_channel")`` and ONNX weight-only int8 store) is, for every ``nn.Linear`` weight
``W`` (O, I) with one scale per output channel ``s`` (O,)::

    q = clamp(round(W / s[:, None]), -127, 127)      int8
    W_hat = q * s[:, None]                          what the int8 model computes with (fp32 activations)

* Plain models use ``s = max|W[o, :]| / 127`` (:func:`max_abs_scale`).
* QAT (:func:`enable_qat`) swaps each ``nn.Linear`` of a :class:`~training.model.Student` for a
  :class:`FakeQuantLinear` that computes with ``W_hat`` in the forward pass. ``round`` passes gradients
  straight through (STE), so ``dL/dW`` is ``dL/dW_hat`` inside the clamp range and 0 outside it. The scales
  are learned (LSQ, Esser et al. 2020), initialised from ``max|W| / 127``. They are stored as
  ``log_scale`` (so they stay positive and Adam's step is relative: with ``lr=3e-3`` a raw scale of ~1e-4
  would be pushed negative in one step). LSQ's gradient scale ``1/sqrt(I * 127)`` is left out because Adam
  ignores a constant gradient factor. The learned scales are what :func:`export_int8` writes.
* Embeddings are not quantized, with one exception. A Student with ``tie_word_embeddings`` has one
  matrix for the embedding and ``lm_head``, and a deployed model stores it once as int8. So QAT also
  routes the embedding lookup through the head's fake-quantized matrix
  (:class:`TiedFakeQuantEmbedding`), and :func:`export_int8` writes it once, under
  ``model.embed_tokens.weight``, with the head's per-row scales.

:class:`QATHook` turns QAT on in a :class:`~training.kd.trainer.KDTrainer` run at a given optimizer step
(``QATConfig.start_fraction`` of ``max_steps``), so only the last part of training is quantization-aware.
:func:`int8_accuracy` evaluates the simulated deployed int8 model on task examples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from training.artifact import load_state_dict, load_student, student_state_dict
from training.config_base import StrictModel
from training.kd.evaluation import evaluate_task
from training.kd.trainer import KDTrainer, TrainerHook
from training.model import Student
from training.tokenizer import DistilleryTokenizer

__all__ = [
    "INT8",
    "QMAX",
    "QuantScheme",
    "FakeQuantLinear",
    "QATConfig",
    "QATHook",
    "TiedFakeQuantEmbedding",
    "dequantize",
    "dequantize_per_channel",
    "enable_qat",
    "export_int8",
    "fake_quantize",
    "int8_accuracy",
    "int8_scales",
    "int8_size_bytes",
    "load_int8",
    "load_qat_student",
    "materialize_int8",
    "max_abs_scale",
    "qat_start_step",
    "quantization_error",
    "quantize_per_channel",
    "save_int8",
    "scale_drift",
    "scheme_of",
    "shadow_fp32",
]

QMAX = 127
SCALE_SUFFIX = "_scale"
LOG_SCALE = "log_scale"
# Smallest scale: a row of zeros quantizes to zeros instead of dividing by zero.
_MIN_SCALE = 1e-10


@dataclass(frozen=True)
class QuantScheme:
    """Integer levels ``-qmax .. qmax`` (127: int8, 7: int4, both stored as int8) and the scale granularity:
    one scale per output channel, or one per tensor (stored as that scale repeated per channel, so the
    export format and the dequantization are the same)."""

    qmax: int = QMAX
    per_tensor: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.qmax <= 127:
            raise ValueError(f"qmax must be in 1..127, got {self.qmax}")


INT8 = QuantScheme()


# ---------------------------------------------------------------------------------------------------------
# The math (pure functions)
# ---------------------------------------------------------------------------------------------------------


def max_abs_scale(weight: Tensor, qmax: int = QMAX, per_tensor: bool = False) -> Tensor:
    """Symmetric scales: weight (O, I) -> (O,) ``max|w[o, :]| / qmax`` per output channel, or with
    ``per_tensor`` ``max|w| / qmax`` repeated for every channel (at least 1e-10)."""
    absmax = weight.detach().abs().amax(dim=1).float()
    if per_tensor:
        absmax = absmax.amax().expand_as(absmax)
    return (absmax / qmax).clamp_min(_MIN_SCALE)


def quantize_per_channel(weight: Tensor, scale: Tensor, qmax: int = QMAX) -> Tensor:
    """weight (O, I), scale (O,) -> int8 (O, I): ``clamp(round(w / s), -qmax, qmax)``."""
    q = torch.clamp(weight.detach().float() / scale.detach().float()[:, None], -qmax, qmax).round()
    return q.to(torch.int8)


def dequantize_per_channel(q: Tensor, scale: Tensor) -> Tensor:
    """int8 (O, I), scale (O,) -> float32 (O, I): ``q * s``."""
    return q.float() * scale.float()[:, None]


class _RoundSTE(torch.autograd.Function):
    """``round`` in the forward pass, identity in the backward pass (straight-through estimator)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return torch.round(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad


def fake_quantize(weight: Tensor, scale: Tensor, qmax: int = QMAX) -> Tensor:
    """Differentiable ``dequantize(quantize(w, s), s)``: weight (O, I), scale (O,) -> (O, I).

    The value equals ``dequantize_per_channel(quantize_per_channel(w, s), s)`` exactly. Gradients:
    ``d/dw`` is 1 where ``|w / s| <= qmax`` and 0 where the clamp cuts; ``d/ds`` is LSQ's
    ``round(w/s) - w/s`` inside the range and ``±qmax`` outside.
    """
    x = torch.clamp(weight / scale[:, None], -qmax, qmax)
    return _RoundSTE.apply(x) * scale[:, None]


def qat_start_step(max_steps: int, start_fraction: float) -> int:
    """The optimizer step at which QAT starts: ``round(max_steps * start_fraction)``, within [0, max_steps]."""
    if not 0.0 <= start_fraction <= 1.0:
        raise ValueError(f"start_fraction must be in [0, 1], got {start_fraction}")
    return min(max_steps, max(0, round(max_steps * start_fraction)))


# ---------------------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------------------


class FakeQuantLinear(nn.Linear):
    """``nn.Linear`` computing with its fake-quantized weight; scales ``exp(log_scale)``, one per output row
    (O,) or, ``per_tensor``, one (1,) for the whole matrix; integer levels ``-qmax .. qmax`` (127: int8, 7: int4).

    ``learn_scale=False`` keeps the scale a buffer fixed at ``max|W| / qmax`` of the weight at wrap time.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, learn_scale: bool = True,
                 qmax: int = QMAX, per_tensor: bool = False, device: torch.device | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.qmax = qmax
        self.per_tensor = per_tensor
        log_scale = torch.zeros(1 if per_tensor else out_features, device=device, dtype=torch.float32)
        if learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer(LOG_SCALE, log_scale)

    @classmethod
    def wrap(cls, linear: nn.Linear, learn_scale: bool = True, scheme: QuantScheme = INT8) -> FakeQuantLinear:
        """A FakeQuantLinear sharing ``linear``'s weight and bias Parameters (an optimizer holding them keeps
        training them), its scales initialised to ``max|W| / qmax``."""
        new = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, learn_scale=learn_scale,
                  qmax=scheme.qmax, per_tensor=scheme.per_tensor, device=linear.weight.device,
                  dtype=linear.weight.dtype)
        new.weight = linear.weight
        new.bias = linear.bias
        with torch.no_grad():
            start = max_abs_scale(linear.weight, scheme.qmax, scheme.per_tensor)
            new.log_scale.copy_((start[:1] if scheme.per_tensor else start).log())
        return new

    @property
    def scheme(self) -> QuantScheme:
        """The levels and granularity this module trains for."""
        return QuantScheme(self.qmax, self.per_tensor)

    def scale(self) -> Tensor:
        """(O,) current per-row scales (a per-tensor scale repeated per row)."""
        return self.log_scale.exp().expand(self.out_features)

    def quantized_weight(self) -> Tensor:
        """(O, I) the fake-quantized weight the forward pass uses (differentiable)."""
        return fake_quantize(self.weight, self.scale().to(self.weight.dtype), self.qmax)

    def forward(self, x: Tensor) -> Tensor:
        """(..., I) -> (..., O) with the fake-quantized weight."""
        return F.linear(x, self.quantized_weight(), self.bias)


class TiedFakeQuantEmbedding(nn.Embedding):
    """The embedding of a tied Student under QAT: looks rows up in the head's fake-quantized matrix.

    Its ``weight`` stays the shared Parameter (so ``model.embed_tokens.weight`` and the artifact keys do not
    change); the head is held outside the module tree so its parameters are not registered twice.
    """

    def __init__(self, embedding: nn.Embedding, head: FakeQuantLinear) -> None:
        super().__init__(embedding.num_embeddings, embedding.embedding_dim, padding_idx=embedding.padding_idx,
                         device=embedding.weight.device, dtype=embedding.weight.dtype)
        if head.weight is not embedding.weight:
            raise ValueError("TiedFakeQuantEmbedding needs the head to share the embedding's weight")
        self.weight = embedding.weight
        object.__setattr__(self, "_head", head)

    def forward(self, input_ids: Tensor) -> Tensor:
        """(B, T) -> (B, T, H) rows of the fake-quantized shared matrix."""
        head: FakeQuantLinear = self._head  # type: ignore[assignment]
        return F.embedding(input_ids, head.quantized_weight(), self.padding_idx)


def _linear_modules(model: nn.Module) -> dict[str, nn.Linear]:
    return {name: module for name, module in model.named_modules() if isinstance(module, nn.Linear)}


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def enable_qat(model: Student, learn_scales: bool = True, scheme: QuantScheme = INT8) -> list[nn.Parameter]:
    """Swap every ``nn.Linear`` of ``model`` for a :class:`FakeQuantLinear` with ``scheme``'s levels and
    granularity (in place; the weights are the same Parameters) and, for a tied model, the embedding for a
    :class:`TiedFakeQuantEmbedding`.

    Returns the new scale Parameters (empty with ``learn_scales=False``), for the optimizer. Calling it on a
    model already under QAT changes nothing and returns ``[]``.
    """
    new_params: list[nn.Parameter] = []
    for name, linear in _linear_modules(model).items():
        if isinstance(linear, FakeQuantLinear):
            continue
        wrapped = FakeQuantLinear.wrap(linear, learn_scale=learn_scales, scheme=scheme)
        _set_submodule(model, name, wrapped)
        if learn_scales:
            new_params.append(wrapped.log_scale)
    head = model.lm_head
    embed = model.model.embed_tokens
    if (model.config.tie_word_embeddings and isinstance(head, FakeQuantLinear)
            and not isinstance(embed, TiedFakeQuantEmbedding)):
        model.model.embed_tokens = TiedFakeQuantEmbedding(embed, head)
    return new_params


# ---------------------------------------------------------------------------------------------------------
# Export, dequantization, the simulated int8 model
# ---------------------------------------------------------------------------------------------------------


def int8_scales(model: Student, scheme: QuantScheme = INT8) -> dict[str, Tensor]:
    """Per-row scales (O,) of every linear weight, keyed by module name: the learned scales of QAT modules,
    ``max|W| / qmax`` (per channel or per tensor, as ``scheme`` says) for plain ``nn.Linear``."""
    out: dict[str, Tensor] = {}
    for name, module in _linear_modules(model).items():
        scale = (module.scale() if isinstance(module, FakeQuantLinear)
                 else max_abs_scale(module.weight, scheme.qmax, scheme.per_tensor))
        out[name] = scale.detach().float().cpu()
    return out


def scheme_of(model: Student, scheme: QuantScheme | None = None) -> QuantScheme:
    """``scheme``, else the one the model's QAT modules train for (all alike), else int8 per channel."""
    if scheme is not None:
        return scheme
    schemes = {m.scheme for m in _linear_modules(model).values() if isinstance(m, FakeQuantLinear)}
    if len(schemes) > 1:
        raise ValueError(f"QAT modules with different schemes {sorted(map(str, schemes))}")
    return schemes.pop() if schemes else INT8


def export_int8(model: Student, scheme: QuantScheme | None = None) -> dict[str, Tensor]:
    """The deployable state dict: every linear weight as int8 (O, I) plus ``<key>_scale`` float32 (O,).

    ``scheme``: the integer levels ``-qmax .. qmax`` (127 for int8; 7 for int4 values, stored in int8) and the
    plain model's scale granularity; by default the scheme of the model's QAT modules, int8 per channel for
    a plain model.

    Other tensors (norms, an untied embedding) stay float32 under their usual names. For a tied model the
    shared matrix is stored once, as ``model.embed_tokens.weight`` (int8) with the head's scales, and
    ``lm_head.weight`` is omitted (as in the float artifact). QAT scales (``log_scale``) are not stored: the
    scales are.
    """
    state = {k: v.float() if v.is_floating_point() else v for k, v in student_state_dict(model).items()
             if not k.endswith("." + LOG_SCALE)}
    tied = model.config.tie_word_embeddings
    scheme = scheme_of(model, scheme)
    scales = int8_scales(model, scheme)
    for name, module in _linear_modules(model).items():
        key = "model.embed_tokens.weight" if tied and name == "lm_head" else f"{name}.weight"
        scale = scales[name]
        state[key] = quantize_per_channel(module.weight.detach().cpu(), scale, scheme.qmax)
        state[key + SCALE_SUFFIX] = scale.contiguous()
    return state


def dequantize(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Inverse of :func:`export_int8`: int8 tensors with a ``<key>_scale`` become float32 ``q * s``; the
    scale entries are dropped. Raises ``ValueError`` for an int8 tensor without its scale."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.endswith(SCALE_SUFFIX) and key[: -len(SCALE_SUFFIX)] in state:
            continue
        if value.dtype == torch.int8:
            scale = state.get(key + SCALE_SUFFIX)
            if scale is None:
                raise ValueError(f"int8 tensor {key!r} has no {key + SCALE_SUFFIX!r}")
            out[key] = dequantize_per_channel(value, scale)
        else:
            out[key] = value
    return out


def save_int8(state: dict[str, Tensor], path: str | Path) -> Path:
    """Write an :func:`export_int8` state dict as safetensors."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata={"format": "distillery-int8"})
    return path


def load_int8(path: str | Path) -> dict[str, Tensor]:
    """Read what :func:`save_int8` wrote."""
    return load_file(str(path))


def _plain_student(model: Student, state: dict[str, Tensor]) -> Student:
    plain = Student(model.config)
    plain.load_state_dict(state, strict=False)
    missing = set(plain.state_dict()) - set(state)
    if model.config.tie_word_embeddings:
        missing.discard("lm_head.weight")
        plain.lm_head.weight = plain.model.embed_tokens.weight
    if missing:
        raise ValueError(f"state lacks {sorted(missing)[:5]}")
    return plain.to(model.device).eval()


def materialize_int8(model: Student, scheme: QuantScheme | None = None) -> Student:
    """A plain Student computing exactly what the deployed int8 model (``scheme``, see :func:`export_int8`)
    computes (dequantized weights)."""
    return _plain_student(model, {k: v.to(model.device) for k, v in dequantize(export_int8(model, scheme)).items()})


def shadow_fp32(model: Student) -> Student:
    """A plain Student with ``model``'s unquantized (for QAT: shadow) weights."""
    state = {k: v for k, v in student_state_dict(model).items() if not k.endswith("." + LOG_SCALE)}
    return _plain_student(model, state)


@torch.no_grad()
def quantization_error(model: Student, input_ids: Tensor, attention_mask: Tensor | None = None,
                       scheme: QuantScheme | None = None) -> dict[str, float]:
    """How far the int8 model is from the unquantized weights on a batch (B, T): ``max_abs_logit_error``,
    ``mean_kl`` (KL(fp32 || int8) per real position, nats) and ``top1_agreement``."""
    fp = shadow_fp32(model)(input_ids, attention_mask=attention_mask).float()
    q = materialize_int8(model, scheme)(input_ids, attention_mask=attention_mask).float()
    real = torch.ones(input_ids.shape, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    real = real.to(fp.device)
    kl = (fp.log_softmax(-1).exp() * (fp.log_softmax(-1) - q.log_softmax(-1))).sum(-1)
    n = max(int(real.sum()), 1)
    return {"max_abs_logit_error": float((fp - q).abs().amax(-1)[real].max()),
            "mean_kl": float(kl[real].sum()) / n,
            "top1_agreement": float((fp.argmax(-1) == q.argmax(-1))[real].sum()) / n}


def int8_accuracy(model: Student, tokenizer: DistilleryTokenizer, examples: Sequence[dict[str, Any]],
                  task: str = "arithmetic", max_new_tokens: int = 48,
                  scheme: QuantScheme | None = None) -> dict[str, float]:
    """Task metrics (greedy, ``accuracy`` etc.) of the simulated deployed int8 model: linear weights quantized
    per channel with the learned (QAT) or max-abs (plain) scales, dequantized, fp32 activations."""
    return evaluate_task(materialize_int8(model, scheme), tokenizer, list(examples), task, max_new_tokens)


def load_qat_student(directory: str | Path, scheme: QuantScheme = INT8) -> Student:
    """Load a Student artifact written during or after QAT, with QAT enabled and its learned scales."""
    _, state = load_state_dict(directory)
    model = load_student(directory)
    enable_qat(model, scheme=scheme)
    for name, module in _linear_modules(model).items():
        key = f"{name}.{LOG_SCALE}"
        if key not in state:
            raise ValueError(f"{directory}: no learned scale {key!r}; this artifact was not trained with QAT")
        assert isinstance(module, FakeQuantLinear)
        with torch.no_grad():
            module.log_scale.copy_(state[key])
    return model.eval()


# ---------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------


class QATConfig(StrictModel):
    """When and how QAT runs inside a KD run."""

    start_fraction: float = Field(0.75, ge=0.0, lt=1.0,
                                  description="QAT starts at round(max_steps * start_fraction)")
    learn_scales: bool = Field(True, description="LSQ scales; false keeps max|W|/qmax of the weights at start")
    bits: Literal[8, 4] = Field(8, description="weight bits: 8 (levels -127..127) or 4 (-7..7, stored in int8)")
    granularity: Literal["per_channel", "per_tensor"] = Field(
        "per_channel", description="one scale per output channel, or one per weight matrix")

    @property
    def qmax(self) -> int:
        """Largest integer level: 127 for 8 bits, 7 for 4."""
        return 2 ** (self.bits - 1) - 1

    @property
    def scheme(self) -> QuantScheme:
        """The quantization scheme this config trains and exports."""
        return QuantScheme(self.qmax, self.granularity == "per_tensor")


class QATHook(TrainerHook):
    """Turns QAT on in a :class:`~training.kd.trainer.KDTrainer` once ``trainer.step >= start_step`` (checked at
    train start, so a resumed run past the start is under QAT from its first step, and after every step).
    Resuming from a checkpoint written under QAT (it holds ``log_scale`` tensors) turns QAT on before the
    checkpoint loads, so its scales and the optimizer's scale group are restored exactly.

    The scales join the optimizer as a parameter group without weight decay; the trainer's schedule sets its
    learning rate like every other group's.
    """

    def __init__(self, start_step: int, learn_scales: bool = True, scheme: QuantScheme = INT8) -> None:
        if start_step < 0:
            raise ValueError(f"start_step must be >= 0, got {start_step}")
        self.start_step = start_step
        self.learn_scales = learn_scales
        self.scheme = scheme
        self.enabled_at: int | None = None

    def _maybe_enable(self, trainer: KDTrainer) -> None:
        if self.enabled_at is not None or trainer.step < self.start_step:
            return
        self._enable(trainer)
        self.enabled_at = trainer.step

    def before_resume(self, trainer: KDTrainer, checkpoint: Path) -> None:
        with safe_open(str(checkpoint / "model.safetensors"), framework="pt") as f:
            under_qat = any(name.endswith("." + LOG_SCALE) for name in f.keys())  # noqa: SIM118
        if under_qat and self.enabled_at is None:
            self._enable(trainer)
            self.enabled_at = self.start_step

    def _enable(self, trainer: KDTrainer) -> None:
        params = enable_qat(trainer.student, learn_scales=self.learn_scales, scheme=self.scheme)
        if params:
            lr = trainer.optimizer.param_groups[0]["lr"]
            trainer.optimizer.add_param_group({"params": params, "weight_decay": 0.0, "lr": lr})

    def on_train_start(self, trainer: KDTrainer) -> None:
        self._maybe_enable(trainer)

    def on_step_end(self, trainer: KDTrainer, terms: dict[str, float]) -> None:
        del terms
        self._maybe_enable(trainer)


def scale_drift(model: Student) -> float:
    """Mean |log(learned scale / (max|W|/qmax))| over all rows of QAT modules (0.0 without QAT modules)."""
    total, count = 0.0, 0
    for module in _linear_modules(model).values():
        if isinstance(module, FakeQuantLinear):
            ref = max_abs_scale(module.weight, module.qmax, module.per_tensor).log()
            total += float((module.scale().detach().float().log().cpu() - ref.cpu()).abs().sum())
            count += module.out_features
    return total / count if count else 0.0


def int8_size_bytes(state: dict[str, Tensor]) -> int:
    """Bytes of an exported state dict (int8 weights, float32 scales and other tensors)."""
    return int(sum(v.numel() * v.element_size() for v in state.values()))
