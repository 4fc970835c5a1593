"""The judge training configuration (``configs/judge.yaml``), validated at the edge (unknown keys refused)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from arbiter.data.generate import PAIR_KINDS
from arbiter.data.rubric import CLAUSES
from training.config_base import FrozenStrictModel


class BackboneShape(FrozenStrictModel):
    """Shape of a freshly initialised backbone (ignored fields are refused; vocab comes from the tokenizer)."""

    hidden_size: int = Field(96, ge=8)
    intermediate_size: int = Field(256, ge=8)
    num_hidden_layers: int = Field(3, ge=1)
    num_attention_heads: int = Field(4, ge=1)
    num_key_value_heads: int = Field(2, ge=1)
    max_position_embeddings: int = Field(128, ge=16)
    tie_word_embeddings: bool = True


class PreferencePairsSection(FrozenStrictModel):
    """Where pairs come from: ``dir`` with train/val/test.jsonl, or generated arithmetic pairs (counts)."""

    dir: Path | None = None
    train: int = Field(4000, ge=1)
    val: int = Field(300, ge=1)
    test: int = Field(600, ge=1)
    mix: dict[str, float] | None = None
    max_length: int = Field(96, ge=8)

    @field_validator("mix")
    @classmethod
    def _known_kinds(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        unknown = sorted(set(value or {}) - set(PAIR_KINDS))
        if unknown:
            raise ValueError(f"unknown pair kinds {unknown}; known: {', '.join(PAIR_KINDS)}")
        return value


class HeadsSection(FrozenStrictModel):
    """Optional heads: clause names for the multi-label head (empty: no clause head) and the step head;
    ``surprise_features`` feeds the heads the backbone LM's per-token surprise (see
    :mod:`arbiter.judge_training.model`)."""

    clauses: tuple[str, ...] = CLAUSES
    step_head: bool = True
    surprise_features: bool = True


class PretrainSection(FrozenStrictModel):
    """LM warm-up of the backbone before the judge objective: next-token loss on the good responses of the
    training pairs (:mod:`arbiter.judge_training.batches`). It teaches the task (here: the arithmetic every
    step is checked against) with a dense signal, and the surprise features read this LM; ``steps: 0``
    skips it (e.g. with ``init_from`` a model that already knows the task)."""

    steps: int = Field(0, ge=0)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(3e-3, gt=0)
    warmup_steps: int = Field(50, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)


class LossSection(FrozenStrictModel):
    """Weights of the clause and step BCE terms and of the auxiliary LM term (next-token loss on preferred
    responses) next to the Davidson pairwise loss (weight 1)."""

    clause_weight: float = Field(0.5, ge=0)
    step_weight: float = Field(1.0, ge=0)
    lm_weight: float = Field(0.5, ge=0)


class OptimSection(FrozenStrictModel):
    """AdamW with linear warmup and cosine decay (:func:`training.schedule.warmup_cosine`)."""

    max_steps: int = Field(1500, ge=1)
    batch_pairs: int = Field(32, ge=1)
    lr: float = Field(2e-3, gt=0)
    warmup_steps: int = Field(50, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float = Field(1.0, gt=0)


class JudgeValidationSection(FrozenStrictModel):
    """Validation every ``every`` steps (and at the end); the best ``selection`` value is kept."""

    every: int = Field(250, ge=1)
    batch_pairs: int = Field(64, ge=1)
    selection: Literal["mean", "pairwise_accuracy", "step_auroc", "clause_f1"] = "mean"


class JudgeTrainConfig(FrozenStrictModel):
    """Everything one judge training run needs.

    ``init_from``: a student/teacher artifact whose backbone and tokenizer start the judge (then
    ``backbone`` must be left out); otherwise a fresh backbone of shape ``backbone``, with the tokenizer at
    ``tokenizer`` or, when that is null, a byte-level BPE trained on the training pairs (``vocab_size``).
    """

    seed: int = 0
    num_threads: int = Field(1, ge=1)
    out_dir: Path = Path("runs/judge")
    tokenizer: Path | None = None
    vocab_size: int = Field(512, ge=272)
    init_from: Path | None = None
    backbone: BackboneShape | None = None
    padding_side: Literal["left", "right"] = "right"
    data: PreferencePairsSection = PreferencePairsSection()
    pretrain: PretrainSection = PretrainSection()
    heads: HeadsSection = HeadsSection()
    loss: LossSection = LossSection()
    optim: OptimSection = OptimSection()
    eval: JudgeValidationSection = JudgeValidationSection()

    @model_validator(mode="after")
    def _consistent(self) -> JudgeTrainConfig:
        if self.init_from is not None and self.backbone is not None:
            raise ValueError("init_from and backbone exclude each other: the backbone's shape comes from init_from")
        if self.eval.selection == "clause_f1" and not self.heads.clauses:
            raise ValueError("eval.selection is clause_f1 but heads.clauses is empty")
        if self.eval.selection == "step_auroc" and not self.heads.step_head:
            raise ValueError("eval.selection is step_auroc but heads.step_head is false")
        return self

    def backbone_shape(self) -> BackboneShape:
        """The configured shape, or the default one."""
        return self.backbone or BackboneShape()


class ConfigFileError(ValueError):
    """A config file is unreadable or invalid; the message names the file and each bad key."""


def load_config(path: str | Path, *, out_dir: Path | None = None) -> JudgeTrainConfig:
    """Read and validate a YAML config; ``out_dir`` (the ``--out`` flag) overrides the file's."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigFileError(f"{path}: cannot read the config ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path}: the config must be a mapping, got {type(data).__name__}")
    if out_dir is not None:
        data["out_dir"] = str(out_dir)
    try:
        return JudgeTrainConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {str(err['msg']).removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        raise ConfigFileError(f"{path}: invalid judge config: {problems}") from exc
