"""Process-supervised distillation: ``python -m training.distill_process --config configs/process.yaml [key=value ...]``.

KD + CE with per-token weights from step correctness (see :mod:`training.reasoning.process_losses` for the scheme):
:class:`ProcessTrainer` is a :class:`~training.kd.trainer.KDTrainer` whose stream yields step-annotated batches
(:mod:`training.step_data`) and whose micro-batch loss applies the weights; resume, checkpoints, gradient
accumulation, evaluation and the student artifact are the KD trainer's.

Config: a KD config (:class:`~training.kd.config.KDConfig`, same sections) plus a ``process`` section
(:class:`ProcessSection`): ``correct_weight``, ``wrong_weight``, ``answer_weight``, ``unlikelihood_weight``,
``unlikelihood_scope``, ``toolcall_name_weight``, ``toolcall_structure_weight``, ``weights_from``
(``labels``: the data's ``step_labels``; ``judge``: a judge's step scores) and ``judge`` (a directory loaded
through ``arbiter.judge``: ``Judge.load(DIR)``, scored with
``arbiter.judge.step_weights(judge, prompt, steps)``). ``num_threads`` defaults to 1 here.
``loss.chunked`` is refused (the chunked loss takes no per-token weights).

Evaluation adds, for ``task: arithmetic``, ``step_accuracy`` (share of generated steps that pass
:func:`training.tasks.arithmetic.verify_steps`) and ``steps_per_example``; for ``task: toolcall``,
``json_valid`` / ``json_repaired`` / ``json_invalid`` (:func:`training.reasoning.toolcall_supervision.json_validity`).

Step-labelled data: ``python -m training.step_data --task arithmetic --n 4000 --corrupt-fraction 0.5
--out data/process``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, ValidationError, model_validator
from torch import Tensor

from training.config_base import apply_overrides, load_yaml_config, validation_problems
from training.distill_kd import run_and_report
from training.kd.config import ConfigFileError, KDConfig
from training.kd.data_adapter import val_batches
from training.kd.evaluation import evaluate_loss, generate_completions
from training.kd.trainer import KDTrainer, TrainerHook, TrainResult
from training.losses import IGNORE_INDEX, KDLossWeights
from training.reasoning.process_losses import ProcessWeights, process_loss, process_token_weights
from training.reasoning.step_data import KIND_STEP, StepExampleStream, StepScorer
from training.reasoning.toolcall_supervision import json_validity
from training.tasks import get_task
from training.tasks.arithmetic import verify_steps
from training.tasks.markup import parse_completion

__all__ = [
    "ProcessConfig",
    "ProcessSection",
    "ProcessTrainer",
    "bind_step_scorer",
    "load_judge_scorer",
    "load_process_config",
    "main",
    "process_task_metrics",
    "train_process_student",
]

STEP_BATCH_KEYS = ("step_weight", "span_kind", "step_index")


class ProcessSection(ProcessWeights):
    """The ``process`` section: the weights of :class:`~training.reasoning.process_losses.ProcessWeights` and where
    step scores come from."""

    weights_from: Literal["labels", "judge"] = Field("labels",
                                                     description="where step scores come from: labels (the data's "
                                                                 "step_labels) or judge (a judge's step scores)")
    judge: str | None = Field(None, description="judge directory (arbiter.judge) when weights_from=judge")

    @model_validator(mode="after")
    def _judge_fits(self) -> ProcessSection:
        if self.judge is not None and self.weights_from != "judge":
            raise ValueError("process.judge is set but process.weights_from is 'labels'; set weights_from=judge")
        return self

    def weights(self) -> ProcessWeights:
        """The loss weights alone."""
        return ProcessWeights(**{k: getattr(self, k) for k in ProcessWeights.model_fields})


class ProcessConfig(KDConfig):
    """A KD run with process supervision: :class:`~training.kd.config.KDConfig` plus ``process``."""

    num_threads: int | None = Field(1, gt=0, description="torch CPU threads (default 1 on shared machines)")
    process: ProcessSection = Field(ProcessSection(),
                                    description="process-supervision weights and the source of step scores")

    @model_validator(mode="after")
    def _no_chunked_loss(self) -> ProcessConfig:
        if self.loss.chunked:
            raise ValueError("loss.chunked=true is not supported with process supervision (per-token weights)")
        if self.data.batching != "bucket":
            raise ValueError("data.batching=pack is not supported with process supervision (one example a row)")
        return self


def load_process_config(path: str | Path, overrides: Sequence[str] | None = None) -> ProcessConfig:
    """Read a YAML config, apply ``key=value`` overrides, validate. Errors name the file and the keys."""
    return load_yaml_config(ProcessConfig, path, overrides)


# ---------------------------------------------------------------------------------------------------------
# Judge scores
# ---------------------------------------------------------------------------------------------------------

StepWeightsFn = Callable[[Any, str, list[str]], list[float]]
"""``step_weights(judge, prompt, steps) -> list[float]`` (the ``arbiter.judge`` signature)."""


def bind_step_scorer(judge: Any, step_weights: StepWeightsFn) -> StepScorer:
    """A ``(prompt, steps) -> scores`` scorer from a judge and a ``step_weights`` function.

    The scores are checked: one finite number in ``[0, 1]`` per step (``ValueError`` otherwise).
    """

    def score(prompt: str, steps: list[str]) -> list[float]:
        values = [float(v) for v in step_weights(judge, prompt, list(steps))]
        if len(values) != len(steps):
            raise ValueError(f"step_weights returned {len(values)} scores for {len(steps)} steps")
        if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values):
            raise ValueError(f"step_weights must return scores in [0, 1], got {values}")
        return values

    return score


def load_judge_scorer(directory: str | Path) -> StepScorer:
    """Load a judge with :meth:`arbiter.judge.Judge.load` and bind it to :func:`arbiter.judge.step_weights`
    (which scores through ``judge.score_steps``).

    Raises:
        ConfigFileError: the loaded judge has no ``score_steps``.
    """
    from arbiter.judge import Judge, step_weights  # on use: runs on step labels do not load the judge stack

    path = Path(directory)
    judge = Judge.load(path)
    if not callable(getattr(judge, "score_steps", None)):
        raise ConfigFileError(f"the judge loaded from {path} ({type(judge).__name__}) has no score_steps")
    return bind_step_scorer(judge, step_weights)


# ---------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------


def process_task_metrics(task: str, examples: Sequence[Mapping[str, Any]], texts: Sequence[str]) -> dict[str, float]:
    """Process metrics of generated completions.

    ``arithmetic``: ``step_accuracy`` (verified generated steps / generated steps, over all examples; 0.0
    when no step was generated) and ``steps_per_example``. ``toolcall``: the shares of
    :func:`~training.reasoning.toolcall_supervision.json_validity`. Other tasks: ``{}``.
    """
    if len(examples) != len(texts):
        raise ValueError(f"{len(examples)} examples but {len(texts)} generated texts")
    if task == "arithmetic":
        generated = verified = 0
        for example, text in zip(examples, texts, strict=True):
            steps, _ = parse_completion(text)
            generated += len(steps)
            verified += sum(verify_steps(str(example["prompt"]), steps))
        return {"step_accuracy": verified / generated if generated else 0.0,
                "steps_per_example": generated / len(texts) if texts else 0.0}
    if task == "toolcall":
        metrics = json_validity(list(texts))
        metrics.pop("json_examples")
        return metrics
    return {}


# ---------------------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------------------


class ProcessTrainer(KDTrainer):
    """:class:`~training.kd.trainer.KDTrainer` with step-annotated batches and per-token process weights.

    Args:
        cfg: the run's :class:`ProcessConfig`.
        stop_after_steps, hooks, teacher: as for :class:`~training.kd.trainer.KDTrainer`.
        step_scorer: ``(prompt, steps) -> scores`` used when ``process.weights_from=judge`` (overrides
            ``process.judge``; see :func:`bind_step_scorer`).
    """

    cfg: ProcessConfig

    def __init__(self, cfg: ProcessConfig, *, stop_after_steps: int | None = None,
                 hooks: list[TrainerHook] | None = None, teacher: Any | None = None,
                 step_scorer: StepScorer | None = None) -> None:
        if not isinstance(cfg, ProcessConfig):
            raise TypeError(f"ProcessTrainer needs a ProcessConfig, got {type(cfg).__name__}")
        process = cfg.process
        if process.weights_from == "judge":
            if step_scorer is None and process.judge is None:
                raise ConfigFileError("process.weights_from=judge needs process.judge (a judge directory)")
            step_scorer = step_scorer if step_scorer is not None else load_judge_scorer(process.judge or "")
        else:
            step_scorer = None
        super().__init__(cfg, stop_after_steps=stop_after_steps, hooks=hooks, teacher=teacher)
        self.step_scorer = step_scorer
        self.process_weights = process.weights()
        inner = self.stream.stream
        self.stream.stream = StepExampleStream(inner.paths, self.tokenizer, inner.config, rank=inner.rank,
                                               world_size=inner.world_size, quarantine=inner.quarantine,
                                               step_scorer=step_scorer)

    def loss_weights(self) -> KDLossWeights:
        """KD / CE coefficients of this run (CE alone, weight 1, without a teacher, as in the KD trainer)."""
        cfg = self.cfg.loss
        with_teacher = self.teacher is not None
        return KDLossWeights(kd=cfg.kd_weight if with_teacher else 0.0, ce=cfg.ce_weight if with_teacher else 1.0,
                             divergence=cfg.divergence, temperature=cfg.temperature, jsd_beta=cfg.jsd_beta,
                             skew_alpha=cfg.skew_alpha, label_smoothing=cfg.label_smoothing)

    def micro_batch_loss(self, batch: dict[str, Tensor], normalizer: float) -> tuple[Tensor, dict[str, float]]:
        """Process-weighted loss of one micro-batch, normalized by the optimizer step's target-token count."""
        missing = [key for key in STEP_BATCH_KEYS if key not in batch]
        if missing:
            raise ValueError(f"batch lacks the step annotations {missing}; build it with step_data.collate_steps")
        ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        weights = process_token_weights(labels, batch["step_weight"], batch["span_kind"], batch["step_index"],
                                        self.process_weights)
        loss = self.loss_weights()
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.cfg.bf16)
        with autocast:
            logits = self.student.run(ids, attention_mask=mask, position_ids=batch.get("position_ids")).logits
        assert logits is not None
        logits = logits.float()
        teacher: dict[str, Tensor] = {}
        if loss.kd > 0:
            assert self.teacher is not None
            with autocast:
                targets = self.teacher.targets(ids, mask)
            if targets.is_sparse:
                assert targets.topk_ids is not None and targets.topk_logprobs is not None
                teacher = {"teacher_topk_ids": targets.topk_ids, "teacher_topk_logprobs": targets.topk_logprobs.float()}
            else:
                assert targets.logits is not None
                teacher = {"teacher_logits": targets.logits.float()}
        total, terms = process_loss(logits, labels, weights, loss, self.process_weights.unlikelihood_weight,
                                    normalizer=normalizer, **teacher)
        wrong = (batch["span_kind"] == KIND_STEP) & (labels != IGNORE_INDEX) & (batch["step_weight"] < 1)
        out = {"ce": terms["ce"], "unlikelihood": terms["unlikelihood"], "loss": terms["total"],
               "wrong_step_tokens": float(wrong.sum())}
        if loss.kd > 0:
            out["kd"] = terms["kd"]
        return total, out

    def evaluate(self) -> dict[str, float]:
        """Validation loss metrics, task metrics of greedy generations, and the process metrics."""
        metrics = evaluate_loss(self.student, val_batches(self.cfg, self.tokenizer), self.teacher,
                                self.cfg.eval.max_batches)
        if self.cfg.task and self.eval_examples:
            examples = self.eval_examples
            texts = generate_completions(self.student, self.tokenizer, [e["prompt"] for e in examples],
                                         self.cfg.eval.max_new_tokens)
            scorer = get_task(self.cfg.task).score
            totals: dict[str, float] = {}
            for example, text in zip(examples, texts, strict=True):
                for key, value in scorer(example, text).items():  # type: ignore[arg-type]
                    totals[key] = totals.get(key, 0.0) + float(value)
            metrics.update({k: v / len(examples) for k, v in totals.items()})
            metrics.update(process_task_metrics(self.cfg.task, examples, texts))
        self.last_metrics = metrics
        return metrics

    def save_student(self, directory: Path, metrics: dict[str, float]) -> Path:
        """The KD trainer's artifact, its card also naming the process-supervision settings."""
        card = dict(self.cfg.card)
        card.setdefault("process_supervision", self.cfg.process.model_dump(mode="json"))
        original = self.cfg.card
        self.cfg.card = card
        try:
            return super().save_student(directory, metrics)
        finally:
            self.cfg.card = original


# ---------------------------------------------------------------------------------------------------------
# Python API and command line
# ---------------------------------------------------------------------------------------------------------


def train_process_student(config: ProcessConfig | Mapping[str, Any] | str | Path, overrides: Sequence[str] = (), *,
                          step_scorer: StepScorer | None = None, teacher: Any | None = None,
                          hooks: list[TrainerHook] | None = None,
                          stop_after_steps: int | None = None) -> TrainResult:
    """Train a process-supervised student and return the :class:`~training.kd.trainer.TrainResult`.

    Args:
        config: a :class:`ProcessConfig`, a mapping of one (validated here), or a YAML file.
        overrides: dotted ``key=value`` overrides applied before validation.
        step_scorer: judge scores for ``process.weights_from=judge`` (see :func:`bind_step_scorer`).
        teacher, hooks, stop_after_steps: passed to :class:`ProcessTrainer`.

    Raises:
        ConfigFileError: an invalid config.
    """
    if isinstance(config, str | Path):
        cfg = load_process_config(config, overrides)
    else:
        data = config.model_dump(mode="json") if isinstance(config, ProcessConfig) else dict(config)
        data = apply_overrides(json.loads(json.dumps(data)), list(overrides))
        try:
            cfg = ProcessConfig.model_validate(data)
        except ValidationError as exc:
            raise ConfigFileError(f"invalid process config: {validation_problems(exc)}") from exc
    trainer = ProcessTrainer(cfg, stop_after_steps=stop_after_steps, hooks=hooks, teacher=teacher,
                             step_scorer=step_scorer)
    return trainer.train()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.distill_process",
        description="Process-supervised distillation: KD + CE with per-token weights from step labels or a "
        "judge's step scores (wrong steps get no CE; optional unlikelihood), tool-call name and JSON-structure "
        "upweighting. Resumes from the newest checkpoint in out_dir unless resume=never.",
        epilog="Example: python -m training.distill_process --config configs/process.yaml "
        "process.unlikelihood_weight=0.1 optim.max_steps=200",
    )
    parser.add_argument("--config", required=True, help="YAML config file (a KD config plus a process section)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. process.wrong_weight=0")
    parser.add_argument("--stop-after-steps", type=int, default=None,
                        help="checkpoint and exit after this many optimizer steps (resume later)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_and_report(lambda: train_process_student(args.config, args.overrides,
                                                        stop_after_steps=args.stop_after_steps))


if __name__ == "__main__":
    sys.exit(main())
