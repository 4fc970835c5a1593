"""Latent-reasoning curriculum (Coconut, Hao et al. 2024): train a student to reason in hidden states.

Stages. At stage ``s`` the first ``s`` reasoning steps of each example are replaced by ``s * c`` latent
positions between ``<bot>`` and ``<eot>`` (``c = latents_per_step``); the remaining steps stay text (see
:mod:`training.reasoning.latent_data` for the token layout and :mod:`training.reasoning.latent_model` for the multi-pass forward
and the hidden-state choice). Training starts at ``first_stage`` (0 = full chain of thought between
``<bot><eot>``; 1 when starting from a chain-of-thought student, as Coconut does after its CoT stage) and
advances every ``steps_per_stage`` optimizer steps (or ``epochs_per_stage`` passes over the data) up to
``max_stage``, where it stays for ``final_stage_steps`` (default: one stage's steps; Coconut trains longest at
its last stage); :func:`stage_at` is the schedule. With ``reset_optimizer`` the AdamW state is rebuilt and the
learning-rate warmup/cosine restarts at each stage (Coconut resets the optimizer per stage); without it one
warmup/cosine spans the whole run. With ``mix_prob = p`` each row is, with probability ``p``, drawn at an
earlier stage (uniform over ``0 .. s - 1``), which keeps the earlier regimes alive.

Loss: cross-entropy on the suffix tokens after ``<eot>`` (remaining steps, answer, eos), averaged over the
batch's target tokens; question, markers and latent slots are never targets. Gradients flow through the
whole latent chain (:func:`training.reasoning.latent_model.latent_forward`). With ``step_supervision = w > 0``
the loss adds ``w`` times the step-decoding CE of SIM-CoT (Wei et al. 2025): the thought of each replaced step
must decode that step's text with the student as decoder
(:func:`training.reasoning.latent_model.thought_decoder_loss`); Coconut alone gives a latent no target of its
own, only the answer's loss through the chain. Nothing of this runs at inference.

Inference runs ``max_stage * c`` latent positions for every example and then decodes (batched,
:func:`training.reasoning.latent_model.generate_latent`). With ``halt.enabled`` the curriculum is *adaptive*: an
example takes ``min(s, n_steps) * c`` latents, and a small halt head (an MLP on the detached fed-back hidden
state, so it does not change the language model) learns at the final stage where to stop; inference then
stops each row where the head says so (at most ``max_stage * c``).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from training.config_base import StrictModel
from training.data import IGNORE_INDEX
from training.kd.optim import param_groups, warmup_cosine
from training.model import Student
from training.reasoning.latent_data import (
    LatentBatch,
    LatentExample,
    collate_latent,
    encode_latent_example,
    latent_row,
    sample_stages,
)
from training.reasoning.latent_model import (
    Feedback,
    HaltHead,
    LatentSpec,
    LatentStudent,
    answer_state_distill_loss,
    answer_states,
    halt_loss,
    latent_forward,
    thought_decoder_loss,
)
from training.tasks.arithmetic import verify_steps
from training.tasks.markup import parse_completion
from training.tokenizer import DistilleryTokenizer

__all__ = [
    "HaltSection",
    "LatentCurriculumConfig",
    "LatentTrainResult",
    "LatentTrainer",
    "evaluate_latent",
    "score_texts",
    "latent_loss",
    "stage_at",
    "step_metrics",
    "total_steps",
]


class HaltSection(StrictModel):
    """The optional halt head (adaptive latent counts)."""

    enabled: bool = Field(False, description="adaptive latent counts: min(stage, steps) * c latents and a halt head")
    weight: float = Field(1.0, ge=0, description="weight of the halt BCE in the loss")
    width: int = Field(64, gt=0, description="hidden width of the halt MLP")
    threshold: float = Field(0.5, gt=0, lt=1, description="stop when P(halt) > threshold")


class LatentCurriculumConfig(StrictModel):
    """One latent-curriculum run."""

    latents_per_step: int = Field(1, ge=1, description="c: latent positions per replaced step")
    max_stage: int = Field(3, ge=1, description="last stage (>= the most steps an example has: all latent)")
    first_stage: int = Field(1, ge=0, description="0 trains the full-CoT stage first")
    steps_per_stage: int | None = Field(None, gt=0, description="optimizer steps at each stage before max_stage")
    epochs_per_stage: float | None = Field(None, gt=0, description="alternative to steps_per_stage")
    final_stage_steps: int | None = Field(None, gt=0, description="steps at max_stage (default: one stage's "
                                          "steps); Coconut keeps training at the last stage")
    mix_prob: float = Field(0.0, ge=0, le=1, description="probability of drawing a row at an earlier stage")
    reset_optimizer: bool = Field(True, description="rebuild AdamW and restart the warmup/cosine at each stage "
                                                    "(Coconut); false: one schedule over the whole curriculum")
    batch_size: int = Field(32, gt=0, description="examples per optimizer step")
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine floor as a fraction of lr (1.0 = constant "
                                "after warmup, which measured far worse: BENCHMARKS.md, latent diagnosis)")
    warmup_steps: int = Field(10, ge=0, description="linear warmup steps (per stage with reset_optimizer)")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay on matrices (not norms or embeddings)")
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas")
    clip_grad_norm: float = Field(1.0, gt=0, description="global gradient-norm clip")
    feedback: Feedback = Field("post_norm", description="hidden state fed back at a latent slot: post_norm (after "
                               "the final RMSNorm, Coconut), pre_norm, or post_norm_scaled (to the embedding norm)")
    detach_feedback: bool = Field(False, description="truncate backprop at the fed-back hidden states")
    step_supervision: float = Field(0.0, ge=0, description="weight of the SIM-CoT step-decoding loss: each "
                                    "replaced step's latent thought must decode the step's text (0 = Coconut)")
    answer_state_distill: float = Field(0.0, ge=0, description="weight of CODI's self-distillation: every layer's "
                                        "hidden state at <answer> must match the same model's (detached) state "
                                        "at <answer> after the full chain of thought (0 = off)")
    cot_ce: float = Field(0.0, ge=0, description="with answer_state_distill: weight of the cross-entropy on the "
                          "same rows as chain of thought (CODI's teacher task, trained jointly; 0: the teacher "
                          "states are computed without gradient)")
    halt: HaltSection = Field(HaltSection(), description="the optional halt head (adaptive latent counts)")
    seed: int = Field(0, description="seed of the data order and stage mixing (and the halt head's init)")
    log_every: int = Field(50, gt=0, description="log the loss every this many steps")

    @model_validator(mode="after")
    def _check(self) -> LatentCurriculumConfig:
        if (self.steps_per_stage is None) == (self.epochs_per_stage is None):
            raise ValueError("set exactly one of steps_per_stage and epochs_per_stage")
        if self.first_stage > self.max_stage:
            raise ValueError(f"first_stage ({self.first_stage}) > max_stage ({self.max_stage})")
        return self

    def stage_steps(self, n_examples: int) -> int:
        """Optimizer steps per stage (``epochs_per_stage`` converted with the batch size)."""
        if self.steps_per_stage is not None:
            return self.steps_per_stage
        assert self.epochs_per_stage is not None
        return max(1, math.ceil(self.epochs_per_stage * n_examples / self.batch_size))

    def final_steps(self, n_examples: int) -> int:
        """Optimizer steps at ``max_stage``: ``final_stage_steps``, else one stage's steps."""
        return self.final_stage_steps if self.final_stage_steps is not None else self.stage_steps(n_examples)

    def total(self, n_examples: int) -> int:
        """Optimizer steps of the whole curriculum."""
        return total_steps(self.first_stage, self.max_stage, self.stage_steps(n_examples),
                           self.final_steps(n_examples))

    def spec(self) -> LatentSpec:
        """The inference spec of a student trained with this config."""
        return LatentSpec(latents_per_step=self.latents_per_step, max_stage=self.max_stage,
                          num_latents=self.max_stage * self.latents_per_step, feedback=self.feedback,
                          adaptive=self.halt.enabled, halt_threshold=self.halt.threshold)


def stage_at(step: int, first_stage: int, max_stage: int, steps_per_stage: int) -> int:
    """Stage of 0-based optimizer step ``step``: ``first_stage + step // steps_per_stage``, at most ``max_stage``."""
    if step < 0 or steps_per_stage < 1:
        raise ValueError(f"need step >= 0 and steps_per_stage >= 1, got {step}, {steps_per_stage}")
    return min(max_stage, first_stage + step // steps_per_stage)


def total_steps(first_stage: int, max_stage: int, steps_per_stage: int, final_stage_steps: int | None = None) -> int:
    """Optimizer steps of a whole curriculum: ``steps_per_stage`` for each stage before ``max_stage``, then
    ``final_stage_steps`` (default ``steps_per_stage``) at ``max_stage``."""
    final = steps_per_stage if final_stage_steps is None else final_stage_steps
    return (max_stage - first_stage) * steps_per_stage + final


def latent_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean next-token cross-entropy over target positions: logits (B, S, V), labels (B, S) (-100 ignored)."""
    return nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                       ignore_index=IGNORE_INDEX)


@dataclass
class LatentTrainResult:
    """A finished curriculum: the latent student, steps, wall time and per-stage losses."""

    student: LatentStudent
    steps: int
    wall_seconds: float
    stages: list[dict[str, float]] = field(default_factory=list)


class LatentTrainer:
    """Runs the curriculum on ``model`` (trained in place, usually a chain-of-thought student).

    examples: dicts with ``prompt``, ``steps`` and ``answer`` (the bundled arithmetic task's records).
    """

    def __init__(self, cfg: LatentCurriculumConfig, model: Student, tokenizer: DistilleryTokenizer,
                 examples: Sequence[Mapping[str, Any]], log: Any = print) -> None:
        if not examples:
            raise ValueError("the latent curriculum needs training examples")
        self.cfg = cfg
        self.model = model
        self.tokenizer = tokenizer
        self.log = log
        self.encoded: list[LatentExample] = [encode_latent_example(e, tokenizer) for e in examples]
        most = max(e.n_steps for e in self.encoded)
        if cfg.max_stage < most:
            self.log(f"note: max_stage={cfg.max_stage} < {most} steps of the longest example; its last steps "
                     "stay text at the final stage")
        self.rng = random.Random(f"latent:{cfg.seed}")
        self.halt_head: HaltHead | None = None
        if cfg.halt.enabled:
            with torch.random.fork_rng(devices=[]):  # seeded init, the global RNG left as it was
                torch.manual_seed(cfg.seed)
                self.halt_head = HaltHead(model.config.hidden_size, cfg.halt.width)
        self.steps_per_stage = cfg.stage_steps(len(self.encoded))
        self.final_stage_steps = cfg.final_steps(len(self.encoded))
        self.total = total_steps(cfg.first_stage, cfg.max_stage, self.steps_per_stage, self.final_stage_steps)

    def _optimizer(self) -> torch.optim.AdamW:
        groups = param_groups(self.model, self.cfg.weight_decay)
        if self.halt_head is not None:
            groups.append({"params": list(self.halt_head.parameters()), "weight_decay": 0.0})
        return torch.optim.AdamW(groups, lr=self.cfg.lr, betas=self.cfg.betas)

    def _indices(self) -> Iterator[int]:
        order = list(range(len(self.encoded)))
        while True:
            self.rng.shuffle(order)
            yield from order

    def batch(self, indices: Sequence[int], stage: int) -> LatentBatch:
        """The rows of ``indices`` at ``stage`` (earlier stages mixed in with ``mix_prob``)."""
        stages = sample_stages(len(indices), stage, self.cfg.mix_prob, self.rng)
        rows = [latent_row(self.encoded[i], s, self.cfg.latents_per_step, self.cfg.halt.enabled)
                for i, s in zip(indices, stages, strict=True)]
        return collate_latent(rows, self.tokenizer.pad_id,
                              self.cfg.latents_per_step if self.cfg.step_supervision > 0 else None)

    def cot_batch(self, indices: Sequence[int]) -> LatentBatch:
        """The rows of ``indices`` with their whole chain of thought as text (stage 0): the teacher layout of
        ``answer_state_distill``."""
        return collate_latent([latent_row(self.encoded[i], 0, self.cfg.latents_per_step) for i in indices],
                              self.tokenizer.pad_id)

    def loss(self, batch: LatentBatch, cot: LatentBatch | None = None) -> tuple[Tensor, dict[str, float]]:
        """CE on the suffix (+ the step decoding, the answer-state distillation against ``cot``, the same rows
        at stage 0, and the halt BCE on final-stage rows, each when configured) of one batch."""
        distill = self.cfg.answer_state_distill > 0 and cot is not None
        out = latent_forward(self.model, batch, self.cfg.feedback, self.cfg.detach_feedback,
                             output_hidden_states=distill)
        ce = latent_loss(out.logits, batch.labels)
        terms = {"ce": float(ce.detach())}
        total = ce
        if distill:
            assert cot is not None
            with torch.set_grad_enabled(self.cfg.cot_ce > 0):
                teacher = latent_forward(self.model, cot, self.cfg.feedback, output_hidden_states=True)
            if self.cfg.cot_ce > 0:
                cot_ce = latent_loss(teacher.logits, cot.labels)
                total = total + self.cfg.cot_ce * cot_ce
                terms["cot_ce"] = float(cot_ce.detach())
            answer_id = self.tokenizer.token_id("<answer>")
            answer_distill = answer_state_distill_loss(answer_states(out, batch.suffix_ids, answer_id),
                                                       answer_states(teacher, cot.suffix_ids, answer_id))
            total = total + self.cfg.answer_state_distill * answer_distill
            terms["answer_distill"] = float(answer_distill.detach())
        if self.cfg.step_supervision > 0 and batch.thought_index is not None:
            assert batch.thought_ids is not None and batch.thought_mask is not None
            index = batch.thought_index
            thoughts = (torch.stack(out.latent_inputs, dim=1)[index[:, 0], index[:, 1]] if index.shape[0]
                        else out.decision_hidden.new_zeros((0, out.decision_hidden.shape[-1])))
            steps = thought_decoder_loss(self.model, thoughts, batch.thought_ids, batch.thought_mask)
            total = total + self.cfg.step_supervision * steps
            terms["step_ce"] = float(steps.detach())
        if self.halt_head is not None:
            logits = self.halt_head(out.decision_hidden.detach())
            halt = halt_loss(logits, batch.latent_counts, batch.stages == self.cfg.max_stage)
            total = total + self.cfg.halt.weight * halt
            terms["halt"] = float(halt.detach())
        terms["loss"] = float(total.detach())
        return total, terms

    def train(self) -> LatentTrainResult:
        cfg = self.cfg
        started = time.perf_counter()
        self.model.train()
        optimizer = self._optimizer()
        indices = self._indices()
        history: list[dict[str, float]] = []
        running: dict[str, float] = {}
        count = 0
        stage = cfg.first_stage
        stage_start = 0
        for step in range(self.total):
            new_stage = stage_at(step, cfg.first_stage, cfg.max_stage, self.steps_per_stage)
            if new_stage != stage:
                history.append({"stage": stage, "steps": step - stage_start, **{k: v / max(count, 1)
                                                                              for k, v in running.items()}})
                running, count, stage, stage_start = {}, 0, new_stage, step
                if cfg.reset_optimizer:
                    optimizer = self._optimizer()
            local = step - stage_start if cfg.reset_optimizer else step
            if not cfg.reset_optimizer:
                span = self.total
            else:
                span = self.final_stage_steps if stage == cfg.max_stage else self.steps_per_stage
            lr = cfg.lr * warmup_cosine(local, warmup_steps=cfg.warmup_steps, max_steps=span,
                                        min_ratio=cfg.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr
            chosen = [next(indices) for _ in range(cfg.batch_size)]
            batch = self.batch(chosen, stage)
            loss, terms = self.loss(batch, self.cot_batch(chosen) if cfg.answer_state_distill > 0 else None)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite latent loss at step {step} (stage {stage}); lower lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            params = list(self.model.parameters()) + (list(self.halt_head.parameters()) if self.halt_head else [])
            torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm)
            optimizer.step()
            for k, v in terms.items():
                running[k] = running.get(k, 0.0) + v
            count += 1
            if (step + 1) % cfg.log_every == 0:
                self.log(f"  latent step {step + 1}/{self.total} stage {stage} loss {terms['loss']:.4f}")
        history.append({"stage": stage, "steps": self.total - stage_start,
                        **{k: v / max(count, 1) for k, v in running.items()}})
        self.model.eval()
        if self.halt_head is not None:
            self.halt_head.eval()
        student = LatentStudent(model=self.model, spec=cfg.spec(), halt_head=self.halt_head)
        return LatentTrainResult(student=student, steps=self.total, wall_seconds=time.perf_counter() - started,
                                 stages=history)


def step_metrics(prompts: Sequence[str], texts: Sequence[str]) -> dict[str, float | None]:
    """Textual-step metrics of arithmetic completions: ``step_accuracy`` (generated steps that pass
    :func:`~training.tasks.arithmetic.verify_steps` / generated steps; ``None`` when no step was generated)
    and ``steps_per_example``."""
    generated = verified = 0
    for prompt, text in zip(prompts, texts, strict=True):
        steps, _ = parse_completion(text)
        generated += len(steps)
        verified += sum(verify_steps(prompt, steps))
    return {"step_accuracy": verified / generated if generated else None,
            "steps_per_example": generated / len(texts) if texts else 0.0}


def score_texts(examples: Sequence[Mapping[str, Any]], texts: Sequence[str]) -> dict[str, Any]:
    """Mean arithmetic scores (``accuracy``, ``answer_found``, ``steps_valid``, ...) of completions ``texts``
    of ``examples``, plus :func:`step_metrics`."""
    from training.tasks import get_task

    scorer = get_task("arithmetic").score
    totals: dict[str, float] = {}
    for example, text in zip(examples, texts, strict=True):
        for key, value in scorer(dict(example), text).items():  # type: ignore[arg-type]
            totals[key] = totals.get(key, 0.0) + float(value)
    n = max(len(texts), 1)
    out: dict[str, Any] = {k: v / n for k, v in totals.items()}
    out.update(step_metrics([str(e["prompt"]) for e in examples], texts))
    return out


def evaluate_latent(student: LatentStudent, tokenizer: DistilleryTokenizer, examples: Sequence[Mapping[str, Any]],
                    max_new_tokens: int = 48, batch_size: int = 64) -> dict[str, Any]:
    """Greedy latent generation on ``examples`` scored with the arithmetic scorer.

    Returns ``accuracy``, ``answer_found``, ``step_accuracy`` / ``steps_per_example`` (textual steps only; the
    latent steps cannot be read, so with every step latent there are none and ``step_accuracy`` is ``None``),
    ``mean_generated_tokens`` (decoded after ``<eot>``, eos included), ``mean_latent_positions`` and
    ``mean_positions_after_prompt`` (``<bot>`` + latents + ``<eot>`` + decoded tokens: sequential positions).
    An adaptive student (halt head) also gets ``latent_count_matches_steps``: the share of examples whose latent
    count is ``len(steps) * c``, the count it was trained to stop at.
    """
    prompts = [str(e["prompt"]) for e in examples]
    texts, n_tokens, n_latents = student.generate_text(tokenizer, prompts, max_new_tokens, batch_size)
    n = max(len(texts), 1)
    out = score_texts(examples, texts)
    out["mean_generated_tokens"] = sum(n_tokens) / n
    out["mean_latent_positions"] = sum(n_latents) / n
    out["mean_positions_after_prompt"] = (sum(n_tokens) + sum(n_latents)) / n + 2.0
    if student.spec.adaptive:
        c = student.spec.latents_per_step
        hits = sum(count == min(len(e["steps"]), student.spec.max_stage) * c
                   for e, count in zip(examples, n_latents, strict=True))
        out["latent_count_matches_steps"] = hits / n
    return out
