"""The KD training loop: micro-batches, accumulation, clipping, schedule, evaluation, checkpoints, resume.

One optimizer step = ``grad_accum`` micro-batches; every loss is normalized by the number of target
tokens of the whole step, so the update does not depend on how the step is split. Interrupts
(SIGINT/SIGTERM) finish the current step, write a checkpoint and return; a resumed run continues from
the exact data position, optimizer, schedule and RNG state.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import queue
import signal
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from training.artifact import ArtifactError, verify_manifest
from training.kd.checkpoint import (
    NonFiniteStateError,
    checkpoint_step,
    checkpoint_verifies,
    latest_valid_checkpoint,
    load_checkpoint,
    remove_stale_run_temporaries,
    save_checkpoint,
)
from training.kd.config import KDConfig
from training.kd.data_adapter import TrainStream, load_eval_examples, val_batches
from training.kd.distributed import (
    DistInfo,
    all_reduce_gradients_,
    all_reduce_sum_,
    barrier,
    global_sum,
    init_distributed,
    shard_batch,
)
from training.kd.evaluation import evaluate_loss, evaluate_task
from training.kd.optim import build_optimizer, warmup_cosine
from training.losses import (
    HiddenProjector,
    cross_entropy,
    divergence_kwargs,
    hidden_state_loss,
    kd_divergence,
)
from training.losses.dense_kd_ce import dense_kd_ce_loss
from training.losses.sparse_kd_ce import sparse_kd_ce_loss
from training.model import Student
from training.model_config import ModelConfig
from training.ops.structured_log import StructuredLogger
from training.teachers.base import TeacherTargets, ensure_same_vocabulary
from training.teachers.factory import build_teacher
from training.teachers.on_batch import TeacherOnBatch, TeacherOutputs
from training.tokenizer import DistilleryTokenizer

# Keys that must not change when a run resumes: a different value would silently train another model.
LOCKED_KEYS = ("student", "init_from", "student_init", "tokenizer", "teacher", "data.max_length", "seed", "optim.max_steps",
               "optim.grad_accum", "data.batch_size", "data.batching")


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite losses; the last good state was checkpointed."""


class ResumeMismatchError(ValueError):
    """A resumed run's config differs from the checkpoint's in a locked key."""


@dataclass
class TrainResult:
    """What a run produced: final step, why it stopped, last evaluation, paths."""

    step: int
    status: str  # "completed" | "interrupted" | "stopped_early" | "stopped"
    metrics: dict[str, float] = field(default_factory=dict)
    best_metric: float | None = None
    student_dir: Path | None = None
    checkpoint: Path | None = None
    wall_seconds: float = 0.0
    tokens_per_second: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)  # TrainStream.summary(): quarantined_lines, ...

    def checkpoint_message(self) -> str:
        """What a stopped run tells its user: "checkpoint written" only when a checkpoint of this very step
        exists and verifies now, else that none was written and where a rerun will start."""
        path = self.checkpoint
        if path is not None and checkpoint_step(path) == self.step and checkpoint_verifies(path):
            return f"checkpoint written: {path} (verified)"
        return (f"no checkpoint of step {self.step} could be written (see the warnings above); a rerun resumes from "
                "the newest valid checkpoint, if there is one")


def _locked_values(cfg: KDConfig) -> dict[str, Any]:
    data = cfg.model_dump(mode="json")
    out: dict[str, Any] = {}
    for key in LOCKED_KEYS:
        node: Any = data
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        out[key] = node
    return out


def resolve_device(name: str) -> torch.device:
    """``device`` config value -> torch device (auto: CUDA when present, else CPU)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: cuda, but torch sees no CUDA device; use device: auto or cpu")
    return torch.device(name)


class _InterruptFlag:
    """Turns SIGINT/SIGTERM into a flag checked after every optimizer step."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _InterruptFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not in the main thread
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal = signum

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _Prefetcher:
    """Batches of a stream made ahead on a background thread (tokenization, collation, pinning), each with
    the stream's resumable position right after it, so a checkpoint records the position of the last batch
    *trained on*, never of one only prefetched. ``depth`` 0: made in the calling thread, as before."""

    _END = object()

    def __init__(self, stream: TrainStream, depth: int, pin: bool) -> None:
        self._stream = stream
        self._pin = pin
        self._it = iter(stream)
        self.depth = depth
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if depth > 0:
            self._thread = threading.Thread(target=self._run, name="distillery-prefetch", daemon=True)
            self._thread.start()

    def _make(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        batch = next(self._it)
        if self._pin:
            batch = {k: v.pin_memory() if isinstance(v, Tensor) else v for k, v in batch.items()}
        return batch, copy.deepcopy(self._stream.state_dict())

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item: Any = self._make()
            except BaseException as exc:  # noqa: BLE001 - handed to the training thread, which raises it
                item = exc
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if isinstance(item, BaseException):
                return

    def next(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """(batch, stream position after it)."""
        if self._thread is None:
            return self._make()
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class TrainerHook:
    """Called by :class:`KDTrainer` around every optimizer step (subclass and override what you need).

    ``on_step_end`` runs after each completed optimizer step and may call ``trainer.request_stop()``;
    it may also block (e.g. while a run is paused): the loop waits for it.
    """

    def before_resume(self, trainer: KDTrainer, checkpoint: Path) -> None:
        """Before ``checkpoint`` is loaded into the student and optimizer: a hook that changes the model or
        the optimizer's parameter groups (e.g. QAT) restores that structure here so the state fits."""

    def on_train_start(self, trainer: KDTrainer) -> None:
        """Once, after resume and before the first step."""

    def on_step_end(self, trainer: KDTrainer, terms: dict[str, float]) -> None:
        """After every optimizer step; ``terms`` holds loss terms, lr, grad_norm, tokens."""

    def on_eval(self, trainer: KDTrainer, metrics: dict[str, float]) -> None:
        """After every evaluation."""

    def on_checkpoint(self, trainer: KDTrainer, path: Path) -> None:
        """After every checkpoint write."""

    def on_train_end(self, trainer: KDTrainer, result: TrainResult) -> None:
        """Once, when the loop ends (completed, interrupted or stopped)."""


class KDTrainer:
    """Distills ``cfg.teacher`` into a student, or trains it from scratch when there is no teacher."""

    def __init__(self, cfg: KDConfig, *, stop_after_steps: int | None = None,
                 hooks: list[TrainerHook] | None = None, teacher: Any | None = None) -> None:
        self.cfg = cfg
        self.stop_after_steps = stop_after_steps
        self.dist = DistInfo()
        self.hooks = list(hooks or [])
        self._stop_requested: str | None = None
        self.out = Path(cfg.out_dir)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        torch.manual_seed(cfg.seed)
        self.tokenizer = DistilleryTokenizer.load(cfg.tokenizer)
        self.teacher = teacher if teacher is not None else (build_teacher(cfg.teacher) if cfg.teacher else None)
        if cfg.loss.chunked and self.teacher is not None and not hasattr(self.teacher, "final_hidden"):
            raise ValueError(f"loss.chunked=true needs a teacher with hidden states (kind=checkpoint), not "
                             f"kind={cfg.teacher.kind if cfg.teacher else None}")
        self.init_layers: list[int] | None = None  # teacher layers the student was copied from (student_init)
        self.student = self._build_student()
        if self.teacher is not None:
            ensure_same_vocabulary(self.teacher, self.tokenizer, self.student.config.vocab_size)
        # the teacher as the losses see it: packed rows split and merged, one forward per micro-batch
        self.teacher_on_batch = (TeacherOnBatch(self.teacher, self.tokenizer.pad_id)
                                 if self.teacher is not None else None)
        self.hidden_projector = self._build_hidden_projector()
        self.device = resolve_device(cfg.device)
        self._place_models()
        self.dist = init_distributed()
        self.fsdp = cfg.parallel == "fsdp" and self.dist.enabled
        if self.fsdp:
            from training.kd.distributed import fully_shard_student

            fully_shard_student(self.student)
        self.optimizer = build_optimizer(self.student, cfg)
        self._data_state: dict[str, Any] | None = None  # stream position after the last batch trained on
        self._teacher_head_f32: Tensor | None = None
        self.stream = TrainStream(cfg, self.tokenizer, self.dist.rank, self.dist.world_size)
        self.eval_examples = load_eval_examples(cfg)
        self.step = 0
        self.best: float | None = None
        self.last_metrics: dict[str, float] = {}
        self.run_id = uuid.uuid4().hex[:12]
        self.last_checkpoint: Path | None = None
        self.last_terms: dict[str, float] = {}
        self.started_at = time.perf_counter()
        self.tokens_seen = 0.0

    def _place_models(self) -> None:
        """Student (and an in-process teacher) on ``self.device``; with ``bf16: true`` a checkpoint teacher whose
        ``teacher.dtype`` was not set runs in bf16 (its matmuls ran in bf16 under autocast already; bf16 weights
        drop the per-step weight casts and halve its memory); ``compile: true`` compiles the decoder layers
        in place (state_dict keys unchanged)."""
        from training.teachers.checkpoint_teacher import CheckpointTeacher

        self.student.to(self.device)
        teacher_model = self.teacher.model if isinstance(self.teacher, CheckpointTeacher) else None
        if teacher_model is not None:
            teacher_model.to(self.device)
            if self.cfg.bf16 and self.cfg.teacher is not None and "dtype" not in self.cfg.teacher.model_fields_set:
                teacher_model.to(torch.bfloat16)
        if self.cfg.compile:
            for model in (self.student, teacher_model):
                if model is not None:
                    for layer in model.model.layers:
                        layer.compile()

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast on the training device when ``bf16: true``."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16)

    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask the loop to checkpoint and return after the current optimizer step."""
        self._stop_requested = reason

    def _build_student(self) -> Student:
        if self.cfg.init_from:
            return Student.from_pretrained(self.cfg.init_from).train()
        init = self.cfg.student_init
        if init is not None:
            from training.student_init import build_student_from_teacher

            shape = self.cfg.student
            student, self.init_layers = build_student_from_teacher(
                str(self.cfg.student_init_path()), init.layers, init.every_k,
                shape.model_dump(include=shape.model_fields_set))
            if self.tokenizer.vocab_size > student.config.vocab_size:
                raise ValueError(f"student_init: the tokenizer has {self.tokenizer.vocab_size} ids but the teacher's "
                                 f"vocab_size is {student.config.vocab_size}; use the teacher's tokenizer")
            return student
        vocab = self.teacher.vocab_size if self.teacher is not None else self.tokenizer.vocab_size
        shape = self.cfg.student
        config = ModelConfig(vocab_size=vocab, **shape.model_dump(),
                             bos_token_id=self.tokenizer.bos_id, eos_token_id=self.tokenizer.eos_id,
                             pad_token_id=self.tokenizer.pad_id)
        return Student(config).train()

    def _build_hidden_projector(self) -> HiddenProjector | None:
        """The projector of the hidden-state loss (``loss.hidden_weight > 0``), or None when the term is off.

        Only equal student and teacher widths are supported (identity projector, no parameters): a learned
        projection would have to be saved in checkpoints next to the student.
        """
        from training.student_init import hidden_layer_map

        if self.cfg.loss.hidden_weight <= 0 or self.teacher is None:
            return None
        t_config = getattr(getattr(self.teacher, "model", None), "config", None)
        if not hasattr(self.teacher, "hidden_states") or not isinstance(t_config, ModelConfig):
            raise ValueError("loss.hidden_weight > 0 needs a teacher with hidden states (teacher.kind=checkpoint), "
                             f"not kind={self.cfg.teacher.kind if self.cfg.teacher else type(self.teacher).__name__}")
        s_config = self.student.config
        if s_config.hidden_size != t_config.hidden_size:
            raise ValueError(f"loss.hidden_weight > 0 needs student.hidden_size ({s_config.hidden_size}) equal to the "
                             f"teacher's ({t_config.hidden_size}); learned projections are not supported")
        layer_map = hidden_layer_map(s_config.num_hidden_layers, t_config.num_hidden_layers,
                                     self.cfg.loss.hidden_layer_map, self.init_layers)
        # positions in the hidden-state lists: 0 is the embedding output, layer i's output is i + 1
        return HiddenProjector(s_config.hidden_size, t_config.hidden_size,
                               {s + 1: t + 1 for s, t in layer_map.items()})

    def _hidden_term(self, student_hidden: list[Tensor], teacher_hidden: list[Tensor] | None, target: Tensor,
                     normalizer: float) -> Tensor:
        """Hidden-state loss of one micro-batch (:func:`training.losses.hidden_state_loss` over the mapped
        layers): student states (L_s + 1 tensors (B, T, H)) against the teacher's, on target tokens, divided by
        the step's target-token count like every other term."""
        assert self.hidden_projector is not None and teacher_hidden is not None
        return hidden_state_loss([h.float() for h in student_hidden], [h.float() for h in teacher_hidden],
                                 self.hidden_projector, kind=self.cfg.loss.hidden_kind, mask=target,
                                 normalizer=normalizer)

    # ---- losses ------------------------------------------------------------------------------------
    def micro_batch_loss(self, batch: dict[str, Tensor], normalizer: float) -> tuple[Tensor, dict[str, float]]:
        """Loss of one micro-batch, normalized by the optimizer step's target-token count."""
        loss, terms = self._micro_batch_loss(batch, normalizer)
        return loss, {k: float(v) for k, v in terms.items()}

    def _micro_batch_loss(self, batch: dict[str, Tensor], normalizer: float) -> tuple[Tensor, dict[str, Tensor]]:
        """:meth:`micro_batch_loss` with the logged terms as detached 0-d tensors (no host sync): the student
        forward, one teacher call for every output the terms need, then the logit terms (chunked from hidden
        states, or over full logits) plus the hidden-state term."""
        cfg = self.cfg.loss
        batch = {k: v.to(self.device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}
        ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        pos = batch.get("position_ids")
        seq = batch["sequence_ids"] if self.cfg.data.batching == "pack" else None
        target = labels != -100
        if seq is None and self.device.type == "cpu" and bool(mask.all()):
            mask = None  # no padding: causal attention without a (B, 1, T, T) bias (same result)
        want_hidden = self.hidden_projector is not None
        with self._autocast():
            out = self.student.run(ids, attention_mask=mask, position_ids=pos, sequence_ids=seq,
                                   compute_logits=not cfg.chunked, output_hidden_states=want_hidden)
            teacher = TeacherOutputs()
            if self.teacher_on_batch is not None:
                teacher = self.teacher_on_batch.run(
                    ids, mask, seq, targets=cfg.kd_weight > 0 and not cfg.chunked,
                    final_hidden=cfg.kd_weight > 0 and cfg.chunked, hidden_states=want_hidden)
        if cfg.chunked:
            total, terms = self._chunked_logit_terms(out.last_hidden_state, teacher, labels, target, normalizer)
        else:
            assert out.logits is not None
            total, terms = self._logit_terms(out.logits.float(), teacher.targets, labels, target, normalizer)
        if want_hidden:
            assert out.hidden_states is not None
            hid = self._hidden_term(out.hidden_states, teacher.hidden_states, target, normalizer)
            total = total + cfg.hidden_weight * hid
            terms["hidden"] = hid.detach()
        terms["loss"] = total.detach()
        return total, terms

    def _chunked_logit_terms(self, hidden: Tensor, teacher: TeacherOutputs, labels: Tensor, target: Tensor,
                             normalizer: float) -> tuple[Tensor, dict[str, Tensor]]:
        """KD + CE from final hidden states ``(B, T, H)`` without full logits (:mod:`training.losses.chunked`)."""
        from training.losses.chunked import chunked_kd_ce_loss

        cfg = self.cfg.loss
        h = hidden.float().reshape(-1, hidden.shape[-1])
        if teacher.final_hidden is not None:
            th = teacher.final_hidden.float().reshape(-1, teacher.final_hidden.shape[-1])
            t_weight, kd_w = self._teacher_head(), cfg.kd_weight
        else:  # no teacher, or kd_weight 0: CE only
            th, t_weight, kd_w = h.detach(), self.student.lm_head.weight.detach(), 0.0
        loss = chunked_kd_ce_loss(
            h, self.student.lm_head.weight, th, t_weight, labels.reshape(-1), target.reshape(-1),
            temperature=cfg.temperature, kd_weight=kd_w, ce_weight=cfg.ce_weight if self.teacher is not None else 1.0,
            normalizer=normalizer, chunk_size=cfg.chunk_size, label_smoothing=cfg.label_smoothing)
        return loss, {}

    def _logit_terms(self, logits: Tensor, targets: TeacherTargets | None, labels: Tensor, target: Tensor,
                     normalizer: float) -> tuple[Tensor, dict[str, Tensor]]:
        """KD + CE over full logits ``(B, T, V)``: closed-form sparse or dense forward KL, or autograd through
        the other divergences; CE alone without a teacher."""
        cfg = self.cfg.loss
        terms: dict[str, Tensor] = {}
        if targets is not None and targets.is_sparse:
            # top-k teacher: KD and CE share one softmax, gradients in closed form (training.losses.sparse_kd_ce)
            assert targets.topk_ids is not None and targets.topk_logprobs is not None
            total, fused = sparse_kd_ce_loss(
                logits, targets.topk_ids, targets.topk_logprobs, labels, kd_weight=cfg.kd_weight,
                ce_weight=cfg.ce_weight, kd_mask=target, temperature=cfg.temperature,
                label_smoothing=cfg.label_smoothing, normalizer=normalizer)
            if cfg.ce_weight > 0:
                terms["ce"] = fused.ce
            terms["kd"] = fused.kd
            return total, terms
        if targets is not None and cfg.divergence == "forward_kl":
            # dense teacher, forward KL: the same closed form over full logits (training.losses.dense_kd_ce)
            assert targets.logits is not None
            total, kd, ce = dense_kd_ce_loss(
                logits, targets.logits, labels, kd_weight=cfg.kd_weight, ce_weight=cfg.ce_weight, kd_mask=target,
                temperature=cfg.temperature, label_smoothing=cfg.label_smoothing, normalizer=normalizer)
            if cfg.ce_weight > 0:
                terms["ce"] = ce
            terms["kd"] = kd
            return total, terms
        if self.teacher is None or cfg.ce_weight > 0:
            ce = cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing, normalizer=normalizer)
            total = cfg.ce_weight * ce if self.teacher is not None else ce
            terms["ce"] = ce.detach()
        else:  # ce_weight 0: the term is not computed (nor logged)
            total = torch.zeros((), device=logits.device)
        if targets is not None:
            assert targets.logits is not None
            kd = kd_divergence(cfg.divergence, logits, targets.logits.float(), mask=target,
                               temperature=cfg.temperature, normalizer=normalizer,
                               **divergence_kwargs(cfg.divergence, jsd_beta=cfg.jsd_beta, skew_alpha=cfg.skew_alpha))
            total = total + cfg.kd_weight * kd
            terms["kd"] = kd.detach()
        return total, terms

    def _teacher_head(self) -> Tensor:
        """(V, H_t) fp32 teacher output projection; a bf16 head is converted once, not every step."""
        assert self.teacher is not None
        weight = self.teacher.lm_head_weight
        if weight.dtype == torch.float32:
            return weight
        if self._teacher_head_f32 is None:
            self._teacher_head_f32 = weight.float()
        return self._teacher_head_f32

    # ---- one optimizer step --------------------------------------------------------------------------
    def train_step(self, micro_batches: list[dict[str, Tensor]]) -> tuple[bool, dict[str, float]]:
        """Accumulate gradients over micro-batches and update; returns (finite, logged terms).

        Every micro-batch loss is divided by the target-token count of the whole step (all micro-batches,
        all ranks), and gradients are summed across ranks, so the update equals the single-process,
        single-batch update on the same global batch.
        """
        micro_batches = [shard_batch(mb, self.dist) for mb in micro_batches]
        local_tokens = float(sum(int(mb["num_target_tokens"]) for mb in micro_batches))
        total_tokens = global_sum(local_tokens, self.dist)
        # the default loss keeps its terms on the device; a subclass's micro_batch_loss gives floats
        # (a subclass or an instance attribute may replace micro_batch_loss)
        loss_fn = (self._micro_batch_loss if getattr(self.micro_batch_loss, "__func__", None)
                   is KDTrainer.micro_batch_loss else self.micro_batch_loss)
        sums: dict[str, Tensor | float] = {}
        nonfinite = torch.zeros((), device=self.device)
        for mb in micro_batches:
            loss, t = loss_fn(mb, normalizer=max(total_tokens, 1.0))
            # a non-finite loss makes non-finite gradients, so the step is skipped below either way; the
            # check is one flag on the device instead of a host sync per micro-batch
            nonfinite = nonfinite + (~torch.isfinite(loss.detach())).float()
            loss.backward()
            for k, v in t.items():
                sums[k] = sums.get(k, 0.0) + v
        params = [p for p in {id(p): p for p in self.student.parameters()}.values() if p.requires_grad]
        if self.fsdp:  # FSDP reduce-scattered the gradients as a mean over ranks: back to the sum
            for p in params:
                if p.grad is not None:
                    p.grad.mul_(self.dist.world_size)
        elif self.dist.enabled:
            all_reduce_gradients_(params, self.dist)
        keys = sorted(sums)
        values = [torch.as_tensor(sums[k], dtype=torch.float64, device=self.device).reshape(()) for k in keys]
        if self.dist.enabled:
            summed = torch.stack([*values, nonfinite.double()])
            all_reduce_sum_([summed], self.dist)
            values, nonfinite = list(summed[:-1].unbind()), summed[-1]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.clip_grad_norm, foreach=True)
        if hasattr(grad_norm, "full_tensor"):  # FSDP: a DTensor
            grad_norm = grad_norm.full_tensor()
        # the one host sync of a step: the logged terms, the non-finite flag and the gradient norm together
        host = torch.stack([*values, nonfinite.double(), grad_norm.detach().double()]).tolist()
        terms = dict(zip(keys, host[:len(keys)], strict=True))
        finite = host[len(keys)] == 0 and math.isfinite(host[-1])
        if host[len(keys)] == 0:
            terms["grad_norm"] = host[-1]
        if finite:
            lr = self.cfg.optim.lr * warmup_cosine(
                self.step, warmup_steps=self.cfg.optim.warmup_steps, max_steps=self.cfg.optim.max_steps,
                min_ratio=self.cfg.optim.min_lr_ratio)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.step()
            terms["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        terms["tokens"] = total_tokens
        return finite, terms

    # ---- evaluation, checkpoints -----------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        metrics = evaluate_loss(self.student, val_batches(self.cfg, self.tokenizer), self.teacher,
                                self.cfg.eval.max_batches)
        if self.cfg.task and self.eval_examples:
            task_metrics = evaluate_task(self.student, self.tokenizer, self.eval_examples, self.cfg.task,
                                         self.cfg.eval.max_new_tokens)
            metrics.update(task_metrics)
        self.last_metrics = metrics
        return metrics

    def _trainer_state(self) -> dict[str, Any]:
        data = self._data_state if self._data_state is not None else self.stream.state_dict()
        return {"data": data, "best": self.best, "locked": _locked_values(self.cfg),
                "config_fingerprint": self.cfg.fingerprint(), "run_id": self.run_id,
                "last_metrics": self.last_metrics}

    def save_checkpoint(self) -> Path | None:
        """Write, verify and prune a checkpoint (:func:`training.kd.checkpoint.save_checkpoint`). A state holding
        NaN/inf is not written (a warning says so) and None is returned: the newest checkpoint on disk stays
        the last good state."""
        try:
            path = save_checkpoint(self.out / "checkpoints", self.step, self.student, self.optimizer,
                                   self._trainer_state(), self.cfg.checkpoint.keep_last)
        except NonFiniteStateError as exc:
            warnings.warn(str(exc), RuntimeWarning, stacklevel=2)
            return None
        self.last_checkpoint = path
        for hook in self.hooks:
            hook.on_checkpoint(self, path)
        return path

    def maybe_resume(self) -> Path | None:
        """Resume from ``cfg.resume`` ('auto': newest valid checkpoint in out_dir; or a path)."""
        if self.cfg.resume == "never":
            return None
        path = (latest_valid_checkpoint(self.out / "checkpoints") if self.cfg.resume == "auto"
                else Path(self.cfg.resume))
        if path is None:
            return None
        try:
            verify_manifest(path)
        except ArtifactError as exc:
            raise ArtifactError(f"cannot resume from {path}: {exc}; name another checkpoint with resume=PATH, or "
                                "start over with resume=never") from exc
        saved = json.loads((path / "trainer_state.json").read_text())
        locked_now = _locked_values(self.cfg)
        for key, old in saved.get("locked", {}).items():
            if locked_now.get(key) != old:
                raise ResumeMismatchError(
                    f"cannot resume {path}: config key {key!r} changed from {old!r} to {locked_now.get(key)!r}; "
                    "use a new out_dir (or resume=never) to start a different run"
                )
        for hook in self.hooks:
            hook.before_resume(self, path)
        if self.fsdp:  # the checkpoint is in the single-process format: load full copies, then shard them
            from training.kd.distributed import fsdp_load_full_state

            full = Student(self.student.config)
            full_optimizer = build_optimizer(full, self.cfg)
            state = load_checkpoint(path, full, full_optimizer)
            fsdp_load_full_state(self.student, self.optimizer, full, full_optimizer)
        else:
            state = load_checkpoint(path, self.student, self.optimizer)
        self.step = int(state["step"])
        self.stream.load_state_dict(state["data"])
        self.best = state.get("best")
        self.last_metrics = state.get("last_metrics", {})
        self.run_id = state.get("run_id", self.run_id)
        return path

    def _is_better(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        return value < self.best if self.cfg.eval.best_mode == "min" else value > self.best

    def save_student(self, directory: Path, metrics: dict[str, float]) -> Path:
        card = {
            "data": {"train": self.cfg.data.train, "val": self.cfg.data.val},
            "teacher": self.cfg.teacher.describe() if self.cfg.teacher else "none (trained from scratch)",
            "losses": self.cfg.loss.model_dump(mode="json") if self.teacher is not None else "cross-entropy only",
            "training": {"steps": self.step, "optimizer": self.cfg.optim.model_dump(mode="json"),
                         "seed": self.cfg.seed,
                         **({"student_init": {"from": self.cfg.student_init_path(), "teacher_layers": self.init_layers}}
                            if self.init_layers is not None else {})},
            **self.cfg.card,
        }
        return self.student.save_pretrained(directory, tokenizer=self.tokenizer, metrics=metrics, card=card)

    # ---- the loop ------------------------------------------------------------------------------------------
    def _micro_batches(self, it: Iterator[dict[str, Tensor]] | _Prefetcher) -> list[dict[str, Tensor]]:
        """``grad_accum`` micro-batches; from a :class:`_Prefetcher` the stream position after the last one is
        kept for the next checkpoint."""
        if isinstance(it, _Prefetcher):
            out = []
            for _ in range(self.cfg.optim.grad_accum):
                batch, self._data_state = it.next()
                out.append(batch)
            return out
        return [next(it) for _ in range(self.cfg.optim.grad_accum)]

    def _stop_reason(self, interrupt: _InterruptFlag, start_step: int, done: bool) -> str | None:
        """Why the loop should stop after this step (agreed across ranks), or None."""
        if done:
            return None
        flags = [self._stop_requested is not None, interrupt.signal is not None,
                 self.stop_after_steps is not None and self.step - start_step >= self.stop_after_steps]
        if self.dist.enabled:
            t = torch.tensor([float(f) for f in flags], dtype=torch.float64)
            all_reduce_sum_([t], self.dist)
            flags = [bool(v > 0) for v in t.tolist()]
        for flag, reason in zip(flags, ("stopped", "interrupted", "stopped_early"), strict=True):
            if flag:
                return reason
        return None

    def _checkpoint_all_ranks(self) -> Path | None:
        """Rank 0 writes the checkpoint (all ranks hold identical state); everyone waits for it. Returns the
        checkpoint on rank 0 (None elsewhere, or when the state was not finite and nothing was written).
        Under FSDP the sharded student and optimizer are gathered into full copies first (a collective)."""
        if self.fsdp:
            from training.kd.distributed import fsdp_full_copies

            student, optimizer = fsdp_full_copies(self.student, self.optimizer, self.cfg)
            path = None
            if self.dist.is_main:
                live = self.student, self.optimizer
                self.student, self.optimizer = student, optimizer  # type: ignore[assignment]
                try:
                    path = self.save_checkpoint()
                finally:
                    self.student, self.optimizer = live
            barrier(self.dist)
            return path
        path = self.save_checkpoint() if self.dist.is_main else None
        barrier(self.dist)
        return path

    def _save_student_all_ranks(self, directory: Path, metrics: dict[str, float]) -> Path | None:
        """:meth:`save_student` on rank 0; under FSDP from a gathered full copy (every rank joins the gather)."""
        if not self.fsdp:
            return self.save_student(directory, metrics)
        from training.kd.distributed import fsdp_full_copies

        student, _ = fsdp_full_copies(self.student, None, self.cfg)
        path = None
        if self.dist.is_main:
            live = self.student
            self.student = student  # type: ignore[assignment]
            try:
                path = self.save_student(directory, metrics)
            finally:
                self.student = live
        barrier(self.dist)
        return path

    def train(self) -> TrainResult:
        """Run to ``optim.max_steps`` (or an interrupt) and write the student artifact (rank 0)."""
        main = self.dist.is_main
        removed: list[Path] = []
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            # what crashed writes (killed mid-checkpoint) left behind; before resume, which may need a restore
            removed = remove_stale_run_temporaries(self.out, started_at=time.time())
        barrier(self.dist)
        resumed = self.maybe_resume()
        # rank 0 writes logs/train.jsonl (buffered: per-step records every log_every steps); other ranks nothing
        logger = (StructuredLogger("trainer", self.run_id, self.out / "logs" / "train.jsonl", buffered=True,
                                   tensorboard_dir=self.out / "tensorboard" if self.cfg.tensorboard else None)
                  if main else StructuredLogger("trainer", self.run_id))
        logger.log("start", step=self.step, resumed_from=str(resumed) if resumed else None,
                   params=self.student.num_parameters(), teacher=bool(self.teacher),
                   world_size=self.dist.world_size, removed_stale_temporaries=[str(p) for p in removed])
        started = time.perf_counter()
        tokens_seen = 0.0
        nonfinite = 0
        status = "completed"
        start_step = self.step
        progress = None
        if self.cfg.progress and main:
            from training.ops.progress import progress as progress_bar

            progress = progress_bar(total=self.cfg.optim.max_steps, initial=self.step, desc="distill",
                                    unit="step", dynamic_ncols=True)
        it = _Prefetcher(self.stream, self.cfg.prefetch, pin=self.device.type == "cuda")
        self.started_at = started
        self.tokens_seen = 0.0
        for hook in self.hooks:
            hook.on_train_start(self)
        try:
            with _InterruptFlag() as interrupt:
                while self.step < self.cfg.optim.max_steps:
                    self.student.train()
                    step_started = time.perf_counter()
                    finite, terms = self.train_step(self._micro_batches(it))
                    if self.cfg.compile and self.step == start_step:
                        logger.log("compiled", step=self.step + 1, compile_seconds=time.perf_counter() - step_started,
                                   note="first step's wall time, compilation included")
                    if not finite:
                        nonfinite += 1
                        logger.log("nonfinite_loss", "warning", step=self.step, consecutive=nonfinite)
                        if nonfinite >= self.cfg.max_nonfinite_steps:
                            saved = self._checkpoint_all_ranks()
                            where = (f"last good state saved in {saved}" if saved is not None else
                                     "the model or optimizer holds NaN/inf, so no checkpoint was written; the "
                                     f"newest valid checkpoint in {self.out / 'checkpoints'} (if any) is the "
                                     "last good state")
                            raise TrainingDiverged(
                                f"{nonfinite} consecutive non-finite losses at step {self.step}; {where}. "
                                "Lower optim.lr or check the data."
                            )
                        continue
                    nonfinite = 0
                    self.step += 1
                    tokens_seen += terms["tokens"]
                    self.tokens_seen = tokens_seen
                    self.last_terms = terms
                    elapsed = time.perf_counter() - started
                    logger.buffer("train", at=time.time(), step=self.step,
                                  tokens_per_second=tokens_seen / max(elapsed, 1e-9), **terms)
                    if self.step % self.cfg.log_every == 0:
                        logger.flush()
                    if progress is not None:
                        progress.update(1)
                        progress.set_postfix(loss=f"{terms['loss']:.3f}", lr=f"{terms.get('lr', 0):.2e}")
                    done = self.step >= self.cfg.optim.max_steps
                    if (main or self.fsdp) and (self.step % self.cfg.eval.every == 0 or done):
                        metrics = self.evaluate()  # FSDP: every rank evaluates (forward passes are collective)
                        logger.log("eval", step=self.step, **metrics)
                        for hook in self.hooks:
                            hook.on_eval(self, metrics)
                        value = metrics.get(self.cfg.eval.best_metric, float("nan"))
                        if self._is_better(value):
                            self.best = value
                            self._save_student_all_ranks(self.out / "best", metrics)
                    if self.step % self.cfg.checkpoint.every == 0 or done:
                        logger.flush()
                        self._checkpoint_all_ranks()
                    for hook in self.hooks:
                        hook.on_step_end(self, terms)
                    reason = self._stop_reason(interrupt, start_step, done)
                    if reason is not None:
                        self._checkpoint_all_ranks()
                        status = reason
                        logger.log(reason, step=self.step, reason=self._stop_requested, signal=interrupt.signal)
                        break
        except BaseException:
            if main:  # a failed checkpoint write cleans up after itself; this catches anything it could not
                remove_stale_run_temporaries(self.out, started_at=time.time())
            raise
        finally:
            it.close()
            logger.flush()
            if progress is not None:
                progress.close()
        wall = time.perf_counter() - started
        result = TrainResult(step=self.step, status=status, metrics=self.last_metrics, best_metric=self.best,
                             wall_seconds=wall, tokens_per_second=tokens_seen / max(wall, 1e-9),
                             data=self.stream.summary())
        if status == "completed" and (main or self.fsdp):
            result.student_dir = self._save_student_all_ranks(self.out / "student", self.last_metrics)
        result.checkpoint = self.last_checkpoint
        barrier(self.dist)
        logger.log("end", step=self.step, status=status, wall_seconds=wall)
        logger.close()
        for hook in self.hooks:
            hook.on_train_end(self, result)
        return result
