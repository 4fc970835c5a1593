"""The judge training configuration (``configs/judge.yaml``), validated at the edge (unknown keys refused).

:class:`ConfigFileError` is :class:`training.config_base.ConfigFileError` (re-exported here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from arbiter.data.generate import PAIR_KINDS
from arbiter.data.rubric import CLAUSES
from training.config_base import ConfigFileError, FrozenStrictModel, read_yaml_mapping


class BackboneShape(FrozenStrictModel):
    """Shape of a freshly initialised backbone (ignored fields are refused; vocab comes from the tokenizer)."""

    hidden_size: int = Field(96, ge=8, description="width of the residual stream (embedding size)")
    intermediate_size: int = Field(256, ge=8,
                                   description="hidden width of each decoder layer's feed-forward (MLP) block")
    num_hidden_layers: int = Field(3, ge=1, description="number of decoder layers")
    num_attention_heads: int = Field(4, ge=1, description="query heads per attention layer; divides hidden_size")
    num_key_value_heads: int = Field(2, ge=1,
                                     description="key/value heads per attention layer (grouped-query attention); "
                                                 "divides num_attention_heads")
    max_position_embeddings: int = Field(128, ge=16, description="longest input the backbone accepts, in tokens")
    tie_word_embeddings: bool = Field(True, description="share the input embedding matrix with the LM head")


class PreferencePairsSection(FrozenStrictModel):
    """Where pairs come from: ``dir`` with train/val/test.jsonl, or generated arithmetic pairs (counts)."""

    dir: Path | None = Field(None,
                             description="directory with train.jsonl, val.jsonl and test.jsonl preference pairs; null: "
                                         "generate arithmetic pairs")
    train: int = Field(4000, ge=1, description="generated training pairs (ignored with dir)")
    val: int = Field(300, ge=1, description="generated validation pairs (ignored with dir)")
    test: int = Field(600, ge=1, description="generated test pairs (ignored with dir)")
    mix: dict[str, float] | None = Field(None,
                                         description="share of each generated pair kind "
                                                     "(arbiter.data.generate.PAIR_KINDS); null: the generator's "
                                                     "default mix")
    max_length: int = Field(96, ge=8, description="longest prompt + response, in tokens")

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

    clauses: tuple[str, ...] = Field(CLAUSES,
                                     description="rubric clauses scored by the multi-label clause head; empty: no "
                                                 "clause head")
    step_head: bool = Field(True, description="add the per-step correctness head")
    surprise_features: bool = Field(True, description="feed the heads the backbone LM's per-token surprise")


class PretrainSection(FrozenStrictModel):
    """LM warm-up of the backbone before the judge objective: next-token loss on the good responses of the
    training pairs (:mod:`arbiter.judge_training.batches`). It teaches the task (here: the arithmetic every
    step is checked against) with a dense signal, and the surprise features read this LM; ``steps: 0``
    skips it (e.g. with ``init_from`` a model that already knows the task)."""

    steps: int = Field(0, ge=0, description="LM warm-up steps before the judge objective (0: skip)")
    batch_size: int = Field(32, ge=1, description="responses per warm-up batch")
    lr: float = Field(3e-3, gt=0, description="peak learning rate of the warm-up")
    warmup_steps: int = Field(50, ge=0, description="linear warmup steps of the warm-up's schedule")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final warm-up learning rate as a fraction (0-1) of lr")


class LossSection(FrozenStrictModel):
    """Weights of the clause and step BCE terms and of the auxiliary LM term (next-token loss on preferred
    responses) next to the Davidson pairwise loss (weight 1)."""

    clause_weight: float = Field(0.5, ge=0, description="weight of the clause BCE term")
    step_weight: float = Field(1.0, ge=0, description="weight of the step BCE term")
    lm_weight: float = Field(0.5, ge=0, description="weight of the auxiliary next-token loss on preferred responses")


class OptimSection(FrozenStrictModel):
    """AdamW with linear warmup and cosine decay (:func:`training.kd.optim.warmup_cosine`)."""

    max_steps: int = Field(1500, ge=1, description="optimizer steps of the judge objective")
    batch_pairs: int = Field(32, ge=1, description="preference pairs per batch")
    lr: float = Field(2e-3, gt=0, description="peak learning rate, reached after warmup")
    warmup_steps: int = Field(50, ge=0, description="optimizer steps of linear warmup")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final learning rate as a fraction (0-1) of lr")
    weight_decay: float = Field(0.01, ge=0, description="AdamW decoupled weight decay")
    betas: tuple[float, float] = Field((0.9, 0.98), description="AdamW (beta1, beta2)")
    grad_clip: float = Field(1.0, gt=0, description="clip the global gradient L2 norm to this value")


class JudgeValidationSection(FrozenStrictModel):
    """Validation every ``every`` steps (and at the end); the best ``selection`` value is kept."""

    every: int = Field(250, ge=1, description="validate every N optimizer steps (and at the end)")
    batch_pairs: int = Field(64, ge=1, description="pairs per validation batch")
    selection: Literal["mean", "pairwise_accuracy", "step_auroc", "clause_f1"] = Field(
        "mean", description="validation metric the kept checkpoint maximises: pairwise_accuracy, step_auroc, "
                            "clause_f1, or mean (of those defined)")


class JudgeTrainConfig(FrozenStrictModel):
    """Everything one judge training run needs.

    ``init_from``: a student/teacher artifact whose backbone and tokenizer start the judge (then
    ``backbone`` must be left out); otherwise a fresh backbone of shape ``backbone``, with the tokenizer at
    ``tokenizer`` or, when that is null, a byte-level BPE trained on the training pairs (``vocab_size``).
    """

    seed: int = Field(0, description="seed of data generation, initialisation and batching")
    num_threads: int = Field(1, ge=1, description="torch CPU threads")
    out_dir: Path = Field(Path("runs/judge"), description="run directory (the --out flag overrides it)")
    tokenizer: Path | None = Field(None,
                                   description="tokenizer directory; null: train a byte-level BPE on the training "
                                               "pairs (unless init_from)")
    vocab_size: int = Field(512, ge=272, description="vocabulary size of the BPE trained when tokenizer is null")
    init_from: Path | None = Field(None,
                                   description="student/teacher artifact whose backbone and tokenizer start the judge; "
                                               "excludes backbone")
    backbone: BackboneShape | None = Field(None,
                                           description="shape of a fresh backbone (null: the default shape); excludes "
                                                       "init_from")
    padding_side: Literal["left", "right"] = Field("right", description="side batches are padded on")
    data: PreferencePairsSection = Field(PreferencePairsSection(), description="where preference pairs come from")
    pretrain: PretrainSection = Field(PretrainSection(), description="LM warm-up of the backbone")
    heads: HeadsSection = Field(HeadsSection(), description="optional clause and step heads")
    loss: LossSection = Field(LossSection(), description="weights of the auxiliary loss terms")
    optim: OptimSection = Field(OptimSection(), description="AdamW optimizer and schedule of the judge objective")
    eval: JudgeValidationSection = Field(JudgeValidationSection(), description="validation and checkpoint selection")

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


def load_config(path: str | Path, *, out_dir: Path | None = None) -> JudgeTrainConfig:
    """Read and validate a YAML config; ``out_dir`` (the ``--out`` flag) overrides the file's."""
    path = Path(path)
    data = read_yaml_mapping(path, what="the config")
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
