"""Typed configuration of a KD run (``python -m training.distill_kd --config X.yaml key=value ...``).

Every section is a :class:`~training.config_base.FiniteStrictModel`: an unknown or misspelled key is an
error that names the key, never silently ignored, and so is a non-finite float (``.inf``, ``.nan``).
``docs/config_reference.md`` lists every key with its type, default and meaning.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from training.config_base import (
    ConfigFileError,
    FiniteStrictModel,
    apply_overrides,
    load_yaml_config,
    parse_override,
)
from training.teachers.config import TeacherSection

__all__ = [
    "CheckpointSection",
    "ConfigFileError",
    "KDConfig",
    "LossSection",
    "OptimSection",
    "PeriodicEvalSection",
    "StudentInitSection",
    "StudentShape",
    "TrainingDataSection",
    "apply_overrides",
    "load_config",
    "parse_override",
]



class StudentShape(FiniteStrictModel):
    """Shape of a student built from scratch (vocabulary size comes from the tokenizer)."""

    hidden_size: int = Field(128, gt=0, description="width of the residual stream (embedding size)")
    intermediate_size: int = Field(344, gt=0,
                                   description="hidden width of each decoder layer's feed-forward (MLP) block")
    num_hidden_layers: int = Field(4, gt=0, description="number of decoder layers")
    num_attention_heads: int = Field(4, gt=0, description="query heads per attention layer; divides hidden_size")
    num_key_value_heads: int = Field(2, gt=0,
                                     description="key/value heads per attention layer (grouped-query attention); "
                                                 "divides num_attention_heads")
    max_position_embeddings: int = Field(256, gt=0,
                                         description="longest sequence the model accepts, in tokens (RoPE positions)")
    tie_word_embeddings: bool = Field(True, description="share the input embedding matrix with the output head")
    rope_theta: float = Field(10000.0, gt=0, description="RoPE base frequency")


class StudentInitSection(FiniteStrictModel):
    """Start the student from a subset of a teacher's decoder layers (:mod:`training.student_init`).

    The student copies the teacher's embeddings, the chosen layers (in order), the final norm and the head, so
    its shape is the teacher's with fewer layers; ``student`` shape keys that contradict it are an error.
    """

    from_teacher: str | bool = Field(
        description="a Distillery artifact or Hugging Face Llama directory; true: teacher.path "
                    "(teacher.kind checkpoint or hf)")
    layers: list[int] | None = Field(None, description="teacher layer indices to keep, strictly increasing")
    every_k: int | None = Field(None, gt=0, description="keep layers 0, k, 2k, ... and always the last layer")

    @model_validator(mode="after")
    def _one_choice(self) -> StudentInitSection:
        if (self.layers is None) == (self.every_k is None):
            raise ValueError("give exactly one of student_init.layers and student_init.every_k")
        if self.from_teacher is False or self.from_teacher == "":
            raise ValueError("student_init.from_teacher must be a directory or true (the teacher's path)")
        return self


class TrainingDataSection(FiniteStrictModel):
    """Training and validation files (JSONL or Parquet) and how they are batched."""

    train: list[str] = Field(description="training files (JSONL or Parquet)")
    val: list[str] = Field([], description="validation files (JSONL or Parquet) for val_loss; [] for none")
    max_length: int = Field(128, gt=1,
                            description="longest example in tokens (prompt + completion); longer ones are refused "
                                        "unless truncate is true")
    batch_size: int = Field(16, gt=0, description="rows per micro-batch: examples, or packed rows with batching=pack")
    batching: Literal["bucket", "pack"] = Field(
        "bucket", description="bucket: one example a row, similar lengths together; pack: several examples a "
                              "row (up to max_length tokens), attention kept within each example")
    shuffle_buffer: int = Field(1024, gt=0,
                                description="examples held in the streaming shuffle buffer (larger: better mixing, "
                                            "more memory)")
    truncate: bool = Field(False, description="truncate over-long examples instead of refusing to start")
    max_truncated_share: float = Field(0.0, ge=0, le=1,
                                       description="share (0-1) of examples longer than max_length tolerated when "
                                                   "truncate is false; above it the run refuses to start")
    max_bad_fraction: float = Field(0.01, ge=0, le=1, description="share of malformed lines tolerated")


class LossSection(FiniteStrictModel):
    """Loss mix: ``kd_weight * divergence(teacher, student) + ce_weight * CE(labels)``."""

    kd_weight: float = Field(1.0, ge=0, description="weight of the KD divergence term (0: CE only)")
    ce_weight: float = Field(0.5, ge=0, description="weight of the cross-entropy term on the data's labels")
    divergence: Literal["forward_kl", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl"] = Field(
        "forward_kl", description="teacher/student divergence: forward_kl KL(p||q), reverse_kl KL(q||p), jsd (see "
                                  "jsd_beta), skew_kl / skew_reverse_kl (see skew_alpha)")
    temperature: float = Field(1.0, gt=0,
                               description="softmax temperature T of teacher and student logits in the KD term (the "
                                           "term is scaled by T^2)")
    jsd_beta: float = Field(0.5, ge=0, le=1,
                            description="jsd: mixture weight beta in [0, 1] of the generalized Jensen-Shannon "
                                        "divergence")
    skew_alpha: float = Field(0.1, ge=0, le=1,
                              description="skew_kl / skew_reverse_kl: weight alpha in [0, 1] of the first distribution "
                                          "in the skewed mixture (DistiLLM)")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="label smoothing epsilon of the CE term, in [0, 1)")
    chunked: bool = Field(False, description="chunked KD+CE from hidden states; forward_kl only")
    chunk_size: int = Field(1024, gt=0,
                            description="chunked: token positions per chunk (bounds the logits held in memory at once)")
    hidden_weight: float = Field(0.0, ge=0, description="weight of the intermediate-layer (hidden-state) loss")
    hidden_kind: Literal["mse", "cosine"] = Field("mse", description="hidden-state loss per token")
    hidden_layer_map: list[tuple[int, int]] | None = Field(
        None, description="[[student_layer, teacher_layer], ...] (0-based decoder layer outputs); default: "
                          "student layer i <-> teacher layer student_init's layers[i], else spread evenly")

    @model_validator(mode="after")
    def _hidden_layer_map(self) -> LossSection:
        if self.hidden_layer_map is not None:
            if not self.hidden_layer_map:
                raise ValueError("loss.hidden_layer_map is empty; leave it out for the default map")
            if any(s < 0 or t < 0 for s, t in self.hidden_layer_map):
                raise ValueError(f"loss.hidden_layer_map has a negative layer: {self.hidden_layer_map}")
            students = [s for s, _ in self.hidden_layer_map]
            if len(set(students)) != len(students):
                raise ValueError(f"loss.hidden_layer_map maps a student layer twice: {self.hidden_layer_map}")
        return self

    @model_validator(mode="after")
    def _chunked_supports(self) -> LossSection:
        if self.chunked and self.divergence != "forward_kl":
            raise ValueError("loss.chunked=true supports divergence=forward_kl only")
        return self


class OptimSection(FiniteStrictModel):
    """AdamW with linear warmup then cosine decay to ``min_lr_ratio * lr``."""

    lr: float = Field(3e-3, gt=0, description="peak learning rate, reached after warmup")
    weight_decay: float = Field(0.01, ge=0, description="AdamW decoupled weight decay")
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW (beta1, beta2)")
    warmup_steps: int = Field(20, ge=0, description="optimizer steps of linear warmup from 0 to lr")
    max_steps: int = Field(300, gt=0, description="optimizer steps of the run; the cosine decay ends here")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final learning rate as a fraction (0-1) of lr")
    grad_accum: int = Field(1, gt=0, description="micro-batches per optimizer step")
    clip_grad_norm: float = Field(1.0, gt=0, description="clip the global gradient L2 norm to this value")


class PeriodicEvalSection(FiniteStrictModel):
    """Periodic evaluation and checkpoint selection."""

    every: int = Field(50, gt=0, description="evaluate every N optimizer steps (and at the end)")
    max_batches: int = Field(20, gt=0, description="validation batches per evaluation, at most")
    best_metric: str = Field("val_loss",
                             description="evaluation metric that selects the best student (OUT/best), e.g. val_loss or "
                                         "accuracy")
    best_mode: Literal["min", "max"] = Field("min",
                                             description="min: a lower best_metric is better; max: a higher one is")
    generate_examples: int = Field(64, ge=0, description="held-out prompts decoded greedily for task accuracy")
    max_new_tokens: int = Field(48, gt=0, description="longest greedy completion, in tokens, of a held-out prompt")


class CheckpointSection(FiniteStrictModel):
    """Resumable checkpoints under ``out_dir/checkpoints``."""

    every: int = Field(100, gt=0, description="write a resumable checkpoint every N optimizer steps (and at the end)")
    keep_last: int = Field(2, ge=1, description="checkpoints kept in out_dir/checkpoints; older ones are deleted")


class KDConfig(FiniteStrictModel):
    """A whole KD (or from-scratch, when ``teacher`` is null) training run."""

    out_dir: str = Field(description="run directory: checkpoints, logs, best/ and the student artifact")
    seed: int = Field(0, description="seed of initialisation, data shuffling and sampling")
    tokenizer: str = Field(description="directory holding tokenizer.json (usually the teacher's)")
    task: str | None = Field(None, description="bundled task name, for task accuracy at evaluation")
    student: StudentShape = Field(StudentShape(),
                                  description="shape of a student built from scratch (student_init: the teacher's "
                                              "shape with fewer layers)")
    init_from: str | None = Field(None, description="start the student from this artifact instead of scratch")
    student_init: StudentInitSection | None = Field(
        None, description="start the student from a subset of a teacher's layers (None: scratch or init_from)")
    teacher: TeacherSection | None = Field(None,
                                           description="where teacher targets come from; null: no teacher (CE only, "
                                                       "e.g. the scratch baseline)")
    data: TrainingDataSection = Field(description="training and validation data and batching")
    loss: LossSection = Field(LossSection(), description="the loss mix: KD divergence, CE and hidden-state terms")
    optim: OptimSection = Field(OptimSection(), description="AdamW optimizer and learning-rate schedule")
    eval: PeriodicEvalSection = Field(PeriodicEvalSection(),
                                      description="periodic evaluation and best-checkpoint selection")
    checkpoint: CheckpointSection = Field(CheckpointSection(), description="resumable checkpoints")
    bf16: bool = Field(False, description="bf16 autocast for forward passes (CPU AMX / GPU)")
    num_threads: int | None = Field(None, gt=0, description="torch CPU threads (null: torch's default)")
    max_nonfinite_steps: int = Field(3, ge=1, description="consecutive non-finite losses before the run stops")
    resume: Literal["auto", "never"] | str = Field("auto",
                                                   description="auto: continue from the newest valid checkpoint in "
                                                               "out_dir; never: start fresh; or a checkpoint path")
    progress: bool = Field(True, description="show a progress bar (main rank only)")
    tensorboard: bool = Field(True, description="write TensorBoard event files under out_dir/tensorboard")
    log_every: int = Field(10, gt=0, description="write buffered per-step log records (JSONL, TensorBoard) every N "
                                                 "optimizer steps (and at evaluations, checkpoints and the end)")
    prefetch: int = Field(2, ge=0, description="batches prepared ahead on a background thread (0: in the loop)")
    compile: bool = Field(False, description="torch.compile the student's (and an in-process teacher's) decoder "
                                             "layers; the first step's time, compile included, is logged")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when present, else CPU")
    parallel: Literal["ddp", "fsdp"] = Field(
        "ddp", description="under torchrun: ddp (replicated student, one gradient all-reduce a step) or fsdp "
                           "(PyTorch FSDP2 fully_shard: parameters, gradients and optimizer state sharded)")
    card: dict[str, Any] = Field({},
                                 description="extra fields of the student's model card (e.g. name, description); "
                                             "finite values only")

    @model_validator(mode="after")
    def _student_init_fits(self) -> KDConfig:
        init = self.student_init
        if init is not None:
            if self.init_from:
                raise ValueError("student_init and init_from both say where the student starts; keep one")
            if init.from_teacher is True and (self.teacher is None or self.teacher.kind not in ("checkpoint", "hf")):
                raise ValueError("student_init.from_teacher=true copies teacher.path, which needs teacher.kind "
                                 "checkpoint or hf; name the directory instead")
        if self.loss.hidden_weight > 0 and self.teacher is None:
            raise ValueError("loss.hidden_weight > 0 needs a teacher (kind=checkpoint) to match hidden states with")
        return self

    def student_init_path(self) -> str | None:
        """The directory ``student_init`` copies from (``from_teacher`` true: ``teacher.path``), or None."""
        if self.student_init is None:
            return None
        if self.student_init.from_teacher is True:
            assert self.teacher is not None
            return self.teacher.path
        return str(self.student_init.from_teacher)

    @field_validator("card")
    @classmethod
    def _card_is_finite(cls, value: dict[str, Any]) -> dict[str, Any]:
        """Free-form card fields still go into JSON files: a non-finite float anywhere in them is an error."""
        _reject_non_finite(value, "card")
        return value

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON of this config (used to lock resumed runs)."""
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def _reject_non_finite(value: Any, where: str) -> None:
    """Raise ValueError naming the first non-finite float inside nested dicts / lists ``value``."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where} is {value!r}; values must be finite numbers")
    if isinstance(value, dict):
        for key, item in value.items():
            _reject_non_finite(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _reject_non_finite(item, f"{where}[{index}]")


def load_config(path: str | Path, overrides: list[str] | None = None) -> KDConfig:
    """Read a YAML config, apply overrides, validate. Errors name the file and the offending keys."""
    return load_yaml_config(KDConfig, path, overrides)
