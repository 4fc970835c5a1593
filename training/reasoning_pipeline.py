"""Reasoning students compared on the bundled arithmetic task (``make reasoning``): a fair ablation.

``python -m training.reasoning_pipeline --config configs/reasoning.yaml --out runs/reasoning`` trains, on the
same data and student shape, **every student for ``train.steps`` optimizer steps and once per seed in
``seeds``** (the training seed: init and data order; the data themselves come from ``seed`` and are shared):

* ``no_cot``: answer-only completions (``<answer>9</answer>``), cross-entropy only (the bundled teacher
  always writes a chain of thought, so its token distributions do not fit answer-only sequences);
* ``cot``: chain-of-thought completions, KD from the teacher + CE (CE alone without a teacher);
* ``latent``: the CoT run forked at ``steps - curriculum`` steps and continued through the latent curriculum
  (:mod:`training.reasoning.latent_curriculum`) for the rest of the budget; at the final stage every step is reasoned
  in hidden states and only the answer is decoded;
* ``cot_corrupted``: CoT (KD + CE) on the partly corrupted data (``process.corrupt_fraction``), step labels
  unused: the fair baseline of the process students;
* ``process``: process-supervised KD (:mod:`training.distill_process`) on the same data with its step labels;
* ``process_judge``: the same with ``weights_from: judge``: step weights from a judge trained here
  (:mod:`arbiter.judge_training`, once, shared by the seeds; its scores computed in batches up front);
* int8: the CoT student quantized per channel (max-abs scales, ``plain``), against a twin run that shares
  its first ``qat.start_fraction`` of training and then trains quantization-aware (learned scales, ``qat``).

Evaluation is greedy decoding on held-out prompts (never trained on, see :mod:`training.data.toy_data`):
``accuracy`` (right answer), ``step_accuracy`` (share of generated textual steps that verify as a derivation
from the question; ``null`` for students that write no steps), ``mean_generated_tokens`` (decoded tokens after
the prompt, eos included; for the latent student the tokens after ``<eot>``, with its latent positions
reported separately). ``OUT/report.json`` holds ``students.<name>.accuracy_mean`` / ``accuracy_std`` /
``step_accuracy_mean`` / ``mean_generated_tokens`` (over the seeds, each seed's entry under ``per_seed``),
the int8 means, the judge's metrics and ``acceptance`` (the targets of issue 17 on the means);
``OUT/report.md`` has the table (also printed). Each seed's artifacts are under ``OUT/seed_<n>``.

The teacher: ``teacher: assets/teacher`` is used when ``assets/teacher/manifest.json`` exists; otherwise (or
with ``teacher: null``) every student trains from scratch with CE and a tokenizer trained on the task.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from pydantic import Field, ValidationError

from training.config_base import StrictModel
from training.data.toy_data import task_examples, write_jsonl
from training.generation import generate, left_pad
from training.kd.config import KDConfig, StudentShape
from training.kd.data_adapter import eval_batches
from training.kd.evaluation import evaluate_loss
from training.kd.quant_qat_int8 import (
    QATConfig,
    QATHook,
    export_int8,
    int8_accuracy,
    int8_size_bytes,
    materialize_int8,
    qat_start_step,
    quantization_error,
    save_int8,
    scale_drift,
    shadow_fp32,
)
from training.kd.trainer import KDTrainer
from training.model import Student
from training.reasoning.latent_curriculum import (
    LatentCurriculumConfig,
    LatentTrainer,
    evaluate_latent,
    score_texts,
)
from training.reasoning.latent_model import save_latent_student
from training.reasoning.step_data import mix_corrupted
from training.tasks import get_task
from training.tasks.markup import format_completion
from training.tokenizer import DistilleryTokenizer

STUDENTS = ("no_cot", "cot", "latent", "cot_corrupted", "process", "process_judge")
METRICS = ("accuracy", "step_accuracy", "mean_generated_tokens")


class DataSection(StrictModel):
    train: int = Field(10000, gt=0, description="training examples (prompts not held out)")
    val: int = Field(64, gt=0, description="held-out examples for the trainers' validation loss")
    test: int = Field(200, gt=0, description="held-out examples every student is scored on")
    max_length: int = Field(80, gt=8, description="longest tokenized example (prompt + completion), tokens")
    tokenizer_vocab: int = Field(300, gt=271, description="vocabulary of the tokenizer trained without a teacher")


class TrainSection(StrictModel):
    """Shared optimizer settings of the KD-trainer students and the one budget every student gets.

    ``steps``: optimizer steps of **every** student (no-CoT, CoT, CoT on corrupted data, both process
    students, and the latent student, whose budget is ``steps - curriculum`` CoT steps, forked from the CoT
    run, plus the curriculum's steps)."""

    batch_size: int = Field(32, gt=0, description="examples per optimizer step")
    lr: float = Field(3e-3, gt=0, description="peak learning rate (AdamW, warmup then cosine)")
    warmup_steps: int = Field(30, ge=0, description="linear warmup steps")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine floor as a fraction of lr")
    steps: int = Field(1200, gt=1, description="optimizer steps of every student")


class JudgeSection(StrictModel):
    """The judge behind ``process_judge`` (trained once with :mod:`arbiter.judge_training`, shared by the
    seeds; its step scores are computed in batches once and handed to the trainer as its step scorer)."""

    seed: int = Field(0, description="the judge's training seed")
    train_pairs: int = Field(1000, gt=0, description="preference pairs it trains on")
    pretrain_steps: int = Field(200, ge=0, description="language-model pretraining steps of its encoder")
    steps: int = Field(300, gt=0, description="judge training steps")
    hidden_size: int = Field(48, gt=0, description="judge width")
    intermediate_size: int = Field(128, gt=0, description="judge MLP width")
    num_hidden_layers: int = Field(2, gt=0, description="judge layers")
    mix: dict[str, float] = Field(default_factory=lambda: {"correct_vs_corrupt": 1.0},
                                  description="pair kinds and their shares (arbiter.judge_training)")


class KDSection(StrictModel):
    divergence: Literal["forward_kl", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl"] = Field(
        "forward_kl", description="KD divergence between teacher and student token distributions")
    temperature: float = Field(1.0, gt=0, description="softmax temperature of both distributions")
    kd_weight: float = Field(1.0, ge=0, description="weight of the KD term")
    ce_weight: float = Field(0.5, ge=0, description="weight of the cross-entropy on the data (1.0 without a teacher)")
    cache_top_k: int | None = Field(None, ge=1, description="run the teacher once per training file into a top-k "
                                    "cache (training.teachers.cache_builder) and distill from it (sparse forward "
                                    "KL, shared by every seed) instead of running the teacher at every step")


class ProcessSection(StrictModel):
    corrupt_fraction: float = Field(0.5, ge=0, le=1, description="share of training examples given a wrong copy")
    distill: bool = Field(True, description="the students of the corrupted mix (cot_corrupted, process, "
                          "process_judge) distill from the teacher; false: cross-entropy on the mix alone, the "
                          "setting where step labels carry information (a teacher that solves the task corrects "
                          "every corrupted token by itself)")
    unlikelihood_weight: float = Field(0.1, ge=0, description="weight of the unlikelihood term on wrong steps")
    wrong_weight: float = Field(1.0, ge=0, description="weight of the wrong steps' tokens in that term")


class EvalSection(StrictModel):
    max_new_tokens: int = Field(48, gt=0, description="greedy decoding budget per held-out prompt")
    batch_size: int = Field(64, gt=0, description="prompts decoded together")


class ReasoningConfig(StrictModel):
    """configs/reasoning.yaml"""

    task: Literal["arithmetic"] = Field("arithmetic", description="the bundled task the students learn")
    teacher: str | None = Field("assets/teacher", description="teacher artifact; used only if its manifest exists")
    seed: int = Field(0, description="data seed (train/held-out draws and the corrupted mix), fixed across seeds")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1,
                             description="training seeds (init, data order); every student runs once per seed")
    num_threads: int | None = Field(1, gt=0, description="torch CPU threads of each worker (1 on shared machines)")
    workers: int = Field(1, ge=1, description="training jobs (a seed's no-CoT, CoT+latent+QAT, corrupted CoT, "
                                              "process, process-judge runs) in parallel processes")
    data: DataSection = Field(DataSection(), description="generated task data")
    student: StudentShape = Field(StudentShape(), description="the shape every student shares")
    train: TrainSection = Field(TrainSection(), description="optimizer settings and the shared step budget")
    kd: KDSection = Field(KDSection(), description="the KD loss of the students with a teacher")
    latent: LatentCurriculumConfig = Field(LatentCurriculumConfig(steps_per_stage=500),
                                           description="the latent student's curriculum")
    process: ProcessSection = Field(ProcessSection(), description="corrupted data and process-supervision weights")
    judge: JudgeSection = Field(JudgeSection(), description="the judge behind process_judge")
    qat: QATConfig = Field(QATConfig(), description="the quantization-aware twin of the CoT student")
    eval: EvalSection = Field(EvalSection(), description="held-out greedy evaluation")


def load_reasoning_config(path: str | Path) -> ReasoningConfig:
    """Read and validate a YAML config; errors name the file and the keys."""
    path = Path(path)
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping at the top level")
    try:
        return ReasoningConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"invalid config {path}: {problems}") from exc


def resolve_teacher(teacher: str | None) -> tuple[str | None, str]:
    """(teacher directory or None, a note saying why): a teacher is used only when its manifest exists."""
    if teacher is None:
        return None, "teacher: null in the config; students trained from scratch with cross-entropy"
    if not (Path(teacher) / "manifest.json").is_file():
        return None, f"{teacher}/manifest.json not found; students trained from scratch with cross-entropy"
    return teacher, f"KD from {teacher}"


# ---------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------


def without_steps(example: Mapping[str, Any]) -> dict[str, Any]:
    """The answer-only version of an arithmetic example (for the no-CoT student)."""
    record = dict(example)
    record["completion"] = format_completion(list(example["steps"]), str(example["answer"]), with_steps=False)
    record.pop("step_labels", None)
    return record


def prepare_data(cfg: ReasoningConfig, out: Path) -> dict[str, Any]:
    """Write the JSONL files under ``out/data``; returns {'paths', 'counts', 'train', 'test'}."""
    d = cfg.data
    train = task_examples(cfg.task, d.train, cfg.seed, heldout=False)
    heldout = task_examples(cfg.task, d.val + d.test, cfg.seed + 1, heldout=True)
    val, test = heldout[:d.val], heldout[d.val:]
    data = out / "data"
    paths = {name: data / f"{name}.jsonl" for name in
             ("cot_train", "no_cot_train", "process_train", "val", "no_cot_val", "test")}
    process_train = mix_corrupted(train, cfg.process.corrupt_fraction, cfg.seed)
    write_jsonl(paths["cot_train"], train)
    write_jsonl(paths["no_cot_train"], [without_steps(e) for e in train])
    write_jsonl(paths["process_train"], process_train)
    write_jsonl(paths["val"], val)
    write_jsonl(paths["no_cot_val"], [without_steps(e) for e in val])
    write_jsonl(paths["test"], test)
    wrong = sum(1 for r in process_train if 0.0 in (r.get("step_labels") or []))
    return {"paths": {k: str(v) for k, v in paths.items()}, "train": train, "test": test,
            "counts": {"train": len(train), "val": len(val), "test": len(test),
                       "process_train": len(process_train), "process_wrong": wrong}}


def build_tokenizer(cfg: ReasoningConfig, teacher: str | None, out: Path) -> tuple[DistilleryTokenizer, str]:
    """The teacher's tokenizer, or one trained on task samples (saved to ``out/tokenizer``)."""
    if teacher is not None:
        return DistilleryTokenizer.load(teacher), teacher
    texts = get_task(cfg.task).sample_texts(3000, cfg.seed + 7919)
    texts += [format_completion([], str(i), with_steps=False) for i in range(100)]
    tokenizer = DistilleryTokenizer.train(texts, vocab_size=cfg.data.tokenizer_vocab)
    tokenizer.save(out / "tokenizer")
    return tokenizer, str(out / "tokenizer")


# ---------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------


def teacher_cache_dir(out: Path, train_file: str) -> Path:
    """Where :func:`build_teacher_caches` puts the top-k cache of ``train_file`` (and its validation file)."""
    return out / "teacher_cache" / Path(train_file).stem


def build_teacher_caches(cfg: ReasoningConfig, teacher: str, paths: Mapping[str, str], out: Path,
                         log: Callable[[str], None] = print) -> dict[str, Any]:
    """Top-``kd.cache_top_k`` caches of the teacher over the two KD training sets (CoT, corrupted mix), each
    with the validation file; a finished cache is reused. Returns {train file stem: manifest summary}."""
    from training.teachers.cache_builder import CacheSettings, build_topk_cache
    from training.teachers.checkpoint_teacher import CheckpointTeacher

    assert cfg.kd.cache_top_k is not None
    model = CheckpointTeacher(teacher)
    settings = CacheSettings(k=cfg.kd.cache_top_k, temperature=cfg.kd.temperature, max_length=cfg.data.max_length,
                             batch_size=64)
    summary: dict[str, Any] = {}
    for train in ("cot_train", "process_train") if cfg.process.distill else ("cot_train",):
        started = time.perf_counter()
        manifest = build_topk_cache(model, [paths[train], paths["val"]], teacher_cache_dir(out, paths[train]),
                                    settings, teacher_description={"kind": "checkpoint", "path": teacher},
                                    progress=False)
        entry = summary[Path(paths[train]).stem] = {"k": cfg.kd.cache_top_k, "kl": manifest.kl,
                                                    "seconds": round(time.perf_counter() - started, 1)}
        log(f"teacher cache {train}: top-{cfg.kd.cache_top_k}, {entry}")
    return summary


def kd_run_config(cfg: ReasoningConfig, out_dir: Path, tokenizer_dir: str, teacher: str | None, train_file: str,
                  val_file: str, max_steps: int, seed: int = 0, cache_root: Path | None = None,
                  **extra: Any) -> dict[str, Any]:
    """A KD config (as a dict) for one student run of the shared budget; with ``kd.cache_top_k`` and a
    ``cache_root`` the teacher is the cache :func:`build_teacher_caches` wrote under ``cache_root``."""
    t = cfg.train
    if teacher and cfg.kd.cache_top_k and cache_root is not None:
        teacher_section: dict[str, Any] | None = {
            "kind": "cache", "path": str(teacher_cache_dir(cache_root, train_file)), "temperature": cfg.kd.temperature}
    else:
        teacher_section = {"kind": "checkpoint", "path": teacher} if teacher else None
    return {
        "out_dir": str(out_dir),
        "seed": seed,
        "tokenizer": tokenizer_dir,
        "task": cfg.task,
        "student": cfg.student.model_dump(),
        "teacher": teacher_section,
        "data": {"train": [train_file], "val": [val_file], "max_length": cfg.data.max_length,
                 "batch_size": t.batch_size, "shuffle_buffer": 4096},
        "loss": {"divergence": cfg.kd.divergence, "temperature": cfg.kd.temperature, "kd_weight": cfg.kd.kd_weight,
                 "ce_weight": cfg.kd.ce_weight if teacher else 1.0},
        "optim": {"lr": t.lr, "warmup_steps": min(t.warmup_steps, max_steps - 1), "max_steps": max_steps,
                  "min_lr_ratio": t.min_lr_ratio},
        "eval": {"every": max_steps, "max_batches": 4, "generate_examples": 0, "best_metric": "val_loss"},
        "checkpoint": {"every": max_steps, "keep_last": 1},
        "num_threads": cfg.num_threads,
        "resume": "never",
        "progress": False,
        "tensorboard": False,
        **extra,
    }


def train_kd_student(cfg_dict: dict[str, Any]) -> tuple[Student, dict[str, Any]]:
    """Train with :class:`~training.kd.trainer.KDTrainer`; returns the student and a summary."""
    result = KDTrainer(KDConfig.model_validate(cfg_dict)).train()
    if result.student_dir is None:
        raise RuntimeError(f"training in {cfg_dict['out_dir']} ended with status {result.status}")
    return Student.from_pretrained(str(result.student_dir)), {
        "steps": result.step, "wall_seconds": round(result.wall_seconds, 1), "student_dir": str(result.student_dir)}


def latent_cot_steps(cfg: ReasoningConfig) -> int:
    """CoT steps before the latent curriculum, so that CoT + curriculum = ``train.steps``."""
    lc = cfg.latent
    curriculum = lc.total(cfg.data.train)
    if curriculum >= cfg.train.steps:
        raise ValueError(f"the latent curriculum takes {curriculum} steps, not less than train.steps "
                         f"({cfg.train.steps}); lower latent.steps_per_stage")
    return cfg.train.steps - curriculum


def train_cot_forks(cfg: ReasoningConfig, base: dict[str, Any], out: Path, latent_fork: int
                    ) -> tuple[Student, dict[str, Any], Student, dict[str, Any], Student]:
    """The CoT run, with two forks of the same trajectory (same data order and schedule up to the fork):

    * at ``latent_fork`` its weights start the latent curriculum (the latent student's CoT stage);
    * at the QAT start step (``qat.start_fraction``) a checkpoint is copied and a twin continues from it
      quantization-aware (:class:`~training.kd.quant_qat_int8.QATHook`).

    Returns (CoT student, summary, QAT student (QAT modules on), summary, latent init).
    """
    max_steps = base["optim"]["max_steps"]
    qat_start = min(qat_start_step(max_steps, cfg.qat.start_fraction), max_steps - 1)  # at least one QAT step
    if not 0 < latent_fork < max_steps:
        raise ValueError(f"latent fork {latent_fork} outside 1..{max_steps - 1}")
    started = time.perf_counter()
    forks = sorted({latent_fork, qat_start} - {0})
    resume: str = "never"
    done = 0
    latent_init: Student | None = None
    qat_resume: str | None = None
    for fork in forks:
        trainer = KDTrainer(KDConfig.model_validate({**base, "resume": resume}), stop_after_steps=fork - done)
        first = trainer.train()
        if first.checkpoint is None or first.step != fork:
            raise RuntimeError(f"the CoT run stopped at step {first.step}, expected {fork}")
        copy = out / "runs" / f"cot_fork_{fork}" / first.checkpoint.name
        if copy.exists():
            shutil.rmtree(copy)
        shutil.copytree(first.checkpoint, copy)
        if fork == latent_fork:
            latent_init = clone_student(trainer.student)
        if fork == qat_start:
            qat_resume = str(copy)
        resume, done = str(copy), fork
    shared_wall = time.perf_counter() - started
    plain_student, plain_info = train_kd_student({**base, "resume": resume})
    plain_info["wall_seconds"] = round(plain_info["wall_seconds"] + shared_wall, 1)
    hook = QATHook(qat_start, learn_scales=cfg.qat.learn_scales, scheme=cfg.qat.scheme)
    qat_cfg = {**base, "out_dir": str(Path(base["out_dir"]).parent / "cot_qat"), "resume": qat_resume or "never"}
    trainer = KDTrainer(KDConfig.model_validate(qat_cfg), hooks=[hook])
    result = trainer.train()
    if result.student_dir is None or hook.enabled_at is None:
        raise RuntimeError(f"the QAT run ended with status {result.status} (QAT enabled at {hook.enabled_at})")
    qat_student = trainer.student.eval()
    qat_info = {"steps": result.step, "qat_steps": result.step - hook.enabled_at, "qat_start_step": hook.enabled_at,
                "shared_steps": qat_start, "wall_seconds": round(result.wall_seconds, 1),
                "student_dir": str(result.student_dir), "scale_drift": round(scale_drift(qat_student), 5)}
    assert latent_init is not None
    return plain_student, plain_info, qat_student, qat_info, latent_init


def clone_student(model: Student) -> Student:
    """A detached copy of ``model`` (same config and weights, training mode)."""
    twin = Student(model.config)
    twin.load_state_dict(model.state_dict())
    return twin.train()


def train_process(cfg: ReasoningConfig, out_dir: Path, tokenizer_dir: str, teacher: str | None,
                  paths: Mapping[str, str], seed: int, step_scorer: Callable[[str, list[str]], list[float]] | None
                  = None, cache_root: Path | None = None) -> tuple[Student, dict[str, Any]]:
    """A process-supervised student (:func:`training.distill_process.train_process_student`): step weights
    from the data's labels, or with ``step_scorer`` from a judge (``weights_from: judge``)."""
    from training.distill_process import train_process_student

    base = kd_run_config(cfg, out_dir, tokenizer_dir, teacher, paths["process_train"], paths["val"],
                         cfg.train.steps, seed, cache_root=cache_root)
    base["process"] = {"unlikelihood_weight": cfg.process.unlikelihood_weight,
                       "wrong_weight": cfg.process.wrong_weight,
                       "weights_from": "judge" if step_scorer is not None else "labels"}
    result = train_process_student(base, step_scorer=step_scorer)
    if result.student_dir is None:
        raise RuntimeError(f"process training ended with status {result.status}")
    return Student.from_pretrained(str(result.student_dir)), {
        "steps": result.step, "wall_seconds": round(result.wall_seconds, 1), "student_dir": str(result.student_dir)}


def train_step_judge(cfg: ReasoningConfig, out: Path) -> tuple[Path, dict[str, Any]]:
    """Train the judge behind ``process_judge`` (:func:`arbiter.judge_training.train.train_judge`); returns its
    artifact directory and the headline metrics of its report."""
    from arbiter.judge_training.config import JudgeTrainConfig
    from arbiter.judge_training.train import train_judge

    j = cfg.judge
    judge_cfg = JudgeTrainConfig.model_validate({
        "seed": j.seed, "num_threads": cfg.num_threads or 1, "out_dir": str(out),
        "backbone": {"hidden_size": j.hidden_size, "intermediate_size": j.intermediate_size,
                     "num_hidden_layers": j.num_hidden_layers, "num_attention_heads": 4, "num_key_value_heads": 2,
                     "max_position_embeddings": 128},
        "data": {"train": j.train_pairs, "val": 60, "test": 120, "max_length": 96, "mix": j.mix},
        "pretrain": {"steps": j.pretrain_steps, "batch_size": 32, "lr": 5e-3, "warmup_steps": 20},
        "optim": {"max_steps": j.steps, "batch_pairs": 16, "lr": 3e-3, "warmup_steps": 10},
        "eval": {"every": j.steps, "batch_pairs": 64}})
    threads = torch.get_num_threads()
    try:
        report = train_judge(judge_cfg)
    finally:
        torch.set_num_threads(threads)
    keep = ("pairwise_accuracy", "step_auroc", "wall_seconds")
    return out / "judge", {k: report[k] for k in keep}


def train_and_score_judge(cfg: ReasoningConfig, out: Path, process_train: str
                          ) -> tuple[dict[str, Any], dict[tuple[str, tuple[str, ...]], list[float]]]:
    """:func:`train_step_judge` into ``out/judge``, then its step scores of every row of ``process_train``
    (:func:`judge_step_scores`); returns (judge metrics with ``scoring_seconds`` and ``dir``, scores)."""
    judge_dir, info = train_step_judge(cfg, out / "judge")
    started = time.perf_counter()
    rows = [json.loads(line) for line in Path(process_train).read_text().splitlines()]
    scores = judge_step_scores(judge_dir, rows)
    info["scoring_seconds"] = round(time.perf_counter() - started, 1)
    info["dir"] = str(judge_dir)
    return info, scores


def judge_step_scores(judge_dir: Path, examples: Sequence[Mapping[str, Any]], batch_size: int = 128
                      ) -> dict[tuple[str, tuple[str, ...]], list[float]]:
    """The judge's step scores of every example, in batches: {(prompt, steps): scores}."""
    from arbiter.judge import Judge

    judge = Judge.load(judge_dir, batch_size=batch_size)
    keys = list(dict.fromkeys((str(e["prompt"]), tuple(str(s) for s in e["steps"])) for e in examples if e["steps"]))
    verdicts = judge.score_steps_batch([k[0] for k in keys], [list(k[1]) for k in keys])
    return {key: list(v.scores) for key, v in zip(keys, verdicts, strict=True)}


def lookup_scorer(scores: Mapping[tuple[str, tuple[str, ...]], list[float]]) -> Callable[[str, list[str]], list[float]]:
    """A ``(prompt, steps) -> scores`` step scorer over precomputed judge scores (``KeyError`` if unseen)."""

    def score(prompt: str, steps: list[str]) -> list[float]:
        return list(scores[(prompt, tuple(steps))])

    return score


# ---------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------


@torch.no_grad()
def generate_texts(model: Student, tokenizer: DistilleryTokenizer, prompts: Sequence[str], max_new_tokens: int,
                   batch_size: int) -> tuple[list[str], list[int]]:
    """Greedy completions (eos dropped, special tokens kept) and generated-token counts (eos included)."""
    texts: list[str] = []
    counts: list[int] = []
    for start in range(0, len(prompts), batch_size):
        encoded = [tokenizer.encode(p, add_bos=True) for p in prompts[start:start + batch_size]]
        ids, mask = left_pad(encoded, tokenizer.pad_id)
        tokens = generate(model, ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                          eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id)
        for row in tokens[:, ids.shape[1]:].tolist():
            if tokenizer.eos_id in row:
                row = row[:row.index(tokenizer.eos_id) + 1]
            counts.append(len(row))
            texts.append(tokenizer.decode([t for t in row if t != tokenizer.eos_id]))
    return texts, counts


def evaluate_text_student(model: Student, tokenizer: DistilleryTokenizer, examples: Sequence[Mapping[str, Any]],
                          max_new_tokens: int, batch_size: int) -> dict[str, Any]:
    """accuracy, answer_found, steps_valid, step_accuracy (None without steps), mean_generated_tokens."""
    prompts = [str(e["prompt"]) for e in examples]
    texts, counts = generate_texts(model, tokenizer, prompts, max_new_tokens, batch_size)
    n = max(len(texts), 1)
    out = score_texts(examples, texts)
    out["mean_generated_tokens"] = sum(counts) / n
    out["mean_positions_after_prompt"] = sum(counts) / n
    return out


STEP_NOTES = {
    "no_cot": "null: trained to answer directly, it writes no steps",
    "latent": "null when every step is latent (max_stage >= the most steps): latent steps are hidden states, "
              "not text; otherwise the share of its textual steps that verify from the question",
}


def gold_loss(model: Student, tokenizer: DistilleryTokenizer, test_file: str, max_length: int, out: Path) -> float:
    """Token cross-entropy (nats/token) of ``model`` on the gold completions of ``test_file``."""
    batches = eval_batches([test_file], tokenizer, max_length, 64, out / "quarantine.test.jsonl")
    return float(evaluate_loss(model, batches, None, max_batches=100_000)["val_loss"])


def int8_report(plain: Student, qat: Student, plain_fp32_accuracy: float, tokenizer: DistilleryTokenizer,
                examples: Sequence[Mapping[str, Any]], test_file: str, cfg: ReasoningConfig, out: Path
                ) -> dict[str, Any]:
    """int8 accuracy and test loss of the plain and QAT CoT students, their quantization error, the exports.

    ``drop_vs_plain_fp32``: the plain float student's accuracy minus the int8 model's (both int8 models are
    compared with the same float baseline); ``drop_vs_own_fp32``: each model's own float weights (for QAT the
    shadow weights) minus its int8 accuracy. ``test_loss`` is the more sensitive measure: gold-completion
    cross-entropy of each model.
    """
    max_new, max_len, scheme = cfg.eval.max_new_tokens, cfg.data.max_length, cfg.qat.scheme
    sample = [tokenizer.encode(str(e["prompt"]) + str(e["completion"]), add_bos=True) for e in examples[:64]]
    ids, mask = left_pad(sample, tokenizer.pad_id)
    plain_fp32_loss = gold_loss(plain, tokenizer, test_file, max_len, out)
    report: dict[str, Any] = {}
    for name, model in (("plain", plain), ("qat", qat)):
        state = export_int8(model, scheme)
        path = save_int8(state, out / "int8" / f"cot_{name}_int{cfg.qat.bits}.safetensors")
        int8_model = materialize_int8(model, scheme)
        acc = int8_accuracy(model, tokenizer, list(examples), "arithmetic", max_new, scheme)
        entry: dict[str, Any] = {"accuracy": acc["accuracy"], "export": str(path),
                                 "export_bytes": int8_size_bytes(state),
                                 "test_loss": gold_loss(int8_model, tokenizer, test_file, max_len, out),
                                 "bits": cfg.qat.bits, "granularity": cfg.qat.granularity,
                                 "error_vs_unquantized": quantization_error(model, ids, mask, scheme)}
        if name == "plain":
            own_fp32, own_loss = plain_fp32_accuracy, plain_fp32_loss
            entry["scales"] = f"max|W|/{scheme.qmax} {cfg.qat.granularity.replace('_', ' ')}"
        else:
            shadow = shadow_fp32(model)
            own_fp32 = evaluate_text_student(shadow, tokenizer, examples, max_new, 256)["accuracy"]
            own_loss = gold_loss(shadow, tokenizer, test_file, max_len, out)
            entry["scales"] = f"learned (LSQ) {cfg.qat.granularity.replace('_', ' ')}"
            with torch.no_grad():
                entry["roundtrip_max_abs_logit_diff"] = float(
                    (model(ids, attention_mask=mask) - int8_model(ids, attention_mask=mask)).abs().max())
        entry.update({"fp32_accuracy": own_fp32, "fp32_test_loss": own_loss,
                      "drop_vs_own_fp32": own_fp32 - entry["accuracy"],
                      "drop_vs_plain_fp32": plain_fp32_accuracy - entry["accuracy"],
                      "test_loss_increase_vs_plain_fp32": entry["test_loss"] - plain_fp32_loss})
        report[name] = entry
    report["qat_loses_less"] = report["qat"]["drop_vs_plain_fp32"] < report["plain"]["drop_vs_plain_fp32"]
    report["qat_lower_int8_test_loss"] = report["qat"]["test_loss"] < report["plain"]["test_loss"]
    return report


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (0.0 for one value) of the non-null values; (None, None) if none."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return None, None
    mean = sum(xs) / len(xs)
    std = (sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5 if len(xs) > 1 else 0.0
    return mean, std


def aggregate(per_seed: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``students.<name>``: ``accuracy_mean``, ``accuracy_std``, ``step_accuracy_mean`` (``None`` when no seed
    wrote steps), ``step_accuracy_std``, ``mean_generated_tokens`` (mean over seeds), ``train_steps`` and
    ``per_seed`` (each seed's full entry)."""
    out: dict[str, Any] = {}
    for name in STUDENTS:
        entries = [run["students"][name] for run in per_seed if name in run["students"]]
        if not entries:
            continue
        acc_mean, acc_std = mean_std([e["accuracy"] for e in entries])
        step_mean, step_std = mean_std([e["step_accuracy"] for e in entries])
        tokens, _ = mean_std([e["mean_generated_tokens"] for e in entries])
        out[name] = {"accuracy_mean": acc_mean, "accuracy_std": acc_std, "step_accuracy_mean": step_mean,
                     "step_accuracy_std": step_std, "mean_generated_tokens": tokens,
                     "train_steps": sorted({int(e["train"]["steps"]) for e in entries}),
                     "seeds": [run["seed"] for run in per_seed if name in run["students"]],
                     "per_seed": entries}
        if "mean_latent_positions" in entries[0]:
            out[name]["mean_latent_positions"] = mean_std([e["mean_latent_positions"] for e in entries])[0]
    return out


def aggregate_int8(per_seed: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean and std over seeds of the int8 accuracies and test losses (plain and QAT)."""
    out: dict[str, Any] = {}
    for name in ("plain", "qat"):
        runs = [run["int8"][name] for run in per_seed]
        entry: dict[str, Any] = {}
        for key in ("accuracy", "fp32_accuracy", "drop_vs_plain_fp32", "test_loss", "test_loss_increase_vs_plain_fp32"):
            entry[f"{key}_mean"], entry[f"{key}_std"] = mean_std([r[key] for r in runs])
        out[name] = entry
    out["bits"] = per_seed[0]["int8"]["plain"]["bits"]
    out["granularity"] = per_seed[0]["int8"]["plain"]["granularity"]
    return out


def acceptance(students: Mapping[str, Any]) -> dict[str, Any]:
    """The issue's targets on the seed means (``None`` where a student is missing)."""
    def get(name: str, key: str) -> float | None:
        return students.get(name, {}).get(key)

    latent, no_cot, cot = get("latent", "accuracy_mean"), get("no_cot", "accuracy_mean"), get("cot", "accuracy_mean")
    checks: dict[str, Any] = {}
    if latent is not None and no_cot is not None and cot is not None:
        checks["latent_ge_no_cot_plus_0.15"] = latent >= no_cot + 0.15
        checks["latent_ge_0.9_cot"] = latent >= 0.9 * cot
        checks["latent_tokens_le_third_of_cot"] = (get("latent", "mean_generated_tokens") or 0.0) <= (
            (get("cot", "mean_generated_tokens") or 0.0) / 3)
    process, corrupted = get("process", "accuracy_mean"), get("cot_corrupted", "accuracy_mean")
    if process is not None and corrupted is not None:
        low = process - (get("process", "accuracy_std") or 0.0)
        high = corrupted + (get("cot_corrupted", "accuracy_std") or 0.0)
        checks["process_ge_cot_corrupted_plus_0.05"] = process >= corrupted + 0.05
        checks["process_cot_corrupted_1std_disjoint"] = low > high
    return checks


def format_table(report: Mapping[str, Any]) -> str:
    """The Markdown tables of a report (means ± std over the seeds)."""
    n = len(report["seeds"])
    lines = [f"| student | accuracy (mean ± std, {n} seeds) | step_accuracy | mean_generated_tokens | "
             "latent positions | train steps |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name in STUDENTS:
        e = report["students"].get(name)
        if e is None:
            lines.append(f"| {name} | not run | | | | |")
            continue
        step = "n/a" if e["step_accuracy_mean"] is None else f"{e['step_accuracy_mean']:.3f}"
        lines.append(f"| {name} | {e['accuracy_mean']:.3f} ± {e['accuracy_std']:.3f} | {step} | "
                     f"{e['mean_generated_tokens']:.1f} | {_fmt(e.get('mean_latent_positions', 0.0), 1)} | "
                     f"{'/'.join(str(x) for x in e['train_steps'])} |")
    int8 = report["int8"]
    q = f"int{int8['bits']}"
    where = str(int8["granularity"]).replace("_", "-")
    lines += ["", f"| CoT student {q} ({where} weights) | {q} accuracy | drop vs plain fp32 | {q} test loss | "
              "test loss increase vs plain fp32 |", "| --- | ---: | ---: | ---: | ---: |"]
    for name in ("plain", "qat"):
        e = int8[name]
        lines.append(f"| {name} | {e['accuracy_mean']:.3f} ± {e['accuracy_std']:.3f} | "
                     f"{e['drop_vs_plain_fp32_mean']:+.3f} | {e['test_loss_mean']:.4f} | "
                     f"{e['test_loss_increase_vs_plain_fp32_mean']:+.4f} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------------------


GROUPS = ("cot", "no_cot", "cot_corrupted", "process", "process_judge")
"""Independent training jobs of one seed (``cot`` also trains the latent student and the QAT twin, which fork
from its trajectory, and scores int8); listed most expensive first, the order the pool takes them in."""


def run_group(cfg: ReasoningConfig, seed: int, group: str, out: Path, tokenizer: DistilleryTokenizer,
              tokenizer_dir: str, teacher: str | None, data: Mapping[str, Any],
              judge_scores: Mapping[tuple[str, tuple[str, ...]], list[float]],
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """One job of one training seed (``train.steps`` optimizer steps per student; see :data:`GROUPS`).

    Returns {'seed', 'group', 'students': {name: entry}, 'timings_seconds', and for ``cot`` 'int8', for
    ``no_cot`` 'params'}. Runs in a pool worker as well as in-process: the job's work area (``out/runs/<group>``,
    and for ``cot`` also ``cot_qat`` and ``cot_fork_*``) is cleared first, so a rerun starts fresh and jobs of the
    same seed never share a directory."""
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(seed)
    paths, test, ev, steps = data["paths"], data["test"], cfg.eval, cfg.train.steps
    timings: dict[str, float] = {}
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        timings[name] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()

    def evaluate(model: Student) -> dict[str, Any]:
        return evaluate_text_student(model, tokenizer, test, ev.max_new_tokens, ev.batch_size)

    kd_loss = "KD + CE" if teacher else "cross-entropy"
    students: dict[str, dict[str, Any]] = {}
    runs = out / "runs"
    owned = [runs / group, *([runs / "cot_qat", *runs.glob("cot_fork_*")] if group == "cot" else [])]
    for stale in owned:
        if stale.is_dir():
            shutil.rmtree(stale)
    result: dict[str, Any] = {"seed": seed, "group": group}
    if group in ("cot_corrupted", "process", "process_judge") and not cfg.process.distill:
        teacher, kd_loss = None, "cross-entropy"  # the corrupted mix alone (ProcessSection.distill)
    if group == "no_cot":
        log(f"[seed {seed}] no-CoT ({steps} steps, cross-entropy on answer-only completions)")
        no_cot, info = train_kd_student(kd_run_config(cfg, runs / "no_cot", tokenizer_dir, None,
                                                      paths["no_cot_train"], paths["no_cot_val"], steps, seed))
        students["no_cot"] = {**evaluate(no_cot), "train": {**info, "loss": "cross-entropy (answer only)"},
                              "step_accuracy_note": STEP_NOTES["no_cot"]}
        result["params"] = no_cot.num_parameters()
        lap("no_cot")
    elif group == "cot":
        fork = latent_cot_steps(cfg)
        log(f"[seed {seed}] CoT ({steps} steps; the latent student forks at {fork}, the QAT twin at "
            f"{qat_start_step(steps, cfg.qat.start_fraction)})")
        base = kd_run_config(cfg, runs / "cot", tokenizer_dir, teacher, paths["cot_train"], paths["val"], steps, seed,
                             cache_root=out.parent)
        cot, cot_info, qat_model, qat_info, latent_init = train_cot_forks(cfg, base, out, fork)
        students["cot"] = {**evaluate(cot), "train": {**cot_info, "loss": kd_loss}}
        lap("cot_and_qat")

        lc = cfg.latent.model_copy(update={"seed": seed})
        log(f"[seed {seed}] latent: {fork} CoT steps then stages {lc.first_stage}..{lc.max_stage} "
            f"({lc.stage_steps(len(data['train']))} steps each, {lc.final_steps(len(data['train']))} at the last; "
            f"c={lc.latents_per_step}; step supervision {lc.step_supervision})")
        latent_result = LatentTrainer(lc, latent_init, tokenizer, data["train"], log=log).train()
        latent_dir = save_latent_student(latent_result.student, out / "students" / "latent", tokenizer=tokenizer,
                                         card={"name": "distillery-latent-student",
                                               "description": "CoT student continued through a Coconut curriculum."})
        latent_eval = evaluate_latent(latent_result.student, tokenizer, test, ev.max_new_tokens, ev.batch_size)
        loss = "cross-entropy after <eot>" + (f" + {lc.step_supervision} x step decoding of the thoughts (SIM-CoT)"
                                              if lc.step_supervision > 0 else "")
        students["latent"] = {**latent_eval, "step_accuracy_note": STEP_NOTES["latent"], "train": {
            "steps": fork + latent_result.steps, "cot_steps": fork, "curriculum_steps": latent_result.steps,
            "wall_seconds": round(latent_result.wall_seconds, 1), "init": f"the CoT run at step {fork}",
            "stages": latent_result.stages, "student_dir": str(latent_dir), "loss": loss}}
        lap("latent")
        int8 = int8_report(cot, qat_model, students["cot"]["accuracy"], tokenizer, test, paths["test"], cfg, out)
        int8["qat"]["train"] = qat_info
        result["int8"] = int8
        lap("int8")
    elif group == "cot_corrupted":
        log(f"[seed {seed}] CoT on the corrupted data, no step labels ({steps} steps)")
        corrupted, info = train_kd_student(kd_run_config(cfg, runs / "cot_corrupted", tokenizer_dir, teacher,
                                                         paths["process_train"], paths["val"], steps, seed,
                                                         cache_root=out.parent))
        students["cot_corrupted"] = {**evaluate(corrupted), "train": {
            **info, "loss": kd_loss + " on the corrupted mix (step labels unused)",
            "wrong_solutions": data["counts"]["process_wrong"]}}
        lap("cot_corrupted")
    elif group in ("process", "process_judge"):
        scorer = lookup_scorer(judge_scores) if group == "process_judge" else None
        source = "a trained judge's step scores" if scorer else "the data's step labels"
        log(f"[seed {seed}] {group}: process supervision with {source} ({steps} steps)")
        model, info = train_process(cfg, runs / group, tokenizer_dir, teacher, paths, seed, scorer,
                                    cache_root=out.parent)
        students[group] = {**evaluate(model), "train": {
            **info, "loss": f"{kd_loss} with per-token process weights from {source}",
            "wrong_solutions": data["counts"]["process_wrong"]}}
        lap(group)
    else:
        raise ValueError(f"unknown student group {group!r}; expected one of {GROUPS}")
    result["students"] = students
    result["timings_seconds"] = timings
    return result


def worker_pool(workers: int) -> concurrent.futures.ProcessPoolExecutor | None:
    """``workers`` spawned processes (no fork after torch has started threads), or None for 1 (in-process)."""
    if workers == 1:
        return None
    return concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def run_groups(cfg: ReasoningConfig, out: Path, tokenizer: DistilleryTokenizer, tokenizer_dir: str,
               teacher: str | None, data: Mapping[str, Any],
               judge_scores: Callable[[], Mapping[tuple[str, tuple[str, ...]], list[float]]],
               log: Callable[[str], None] = print,
               pool: concurrent.futures.ProcessPoolExecutor | None = None) -> list[dict[str, Any]]:
    """Every (seed, group) job, in ``pool``'s workers (in this process without a pool); returns one entry per
    seed, merged from its jobs: {'seed', 'students', 'int8', 'timings_seconds', 'params'}.

    ``judge_scores`` is called (it may wait for the judge) only once every job that does not need it has
    been handed out, so the judge trains while the other students do. A job's result does not depend on the
    worker it ran in: each sets its thread count and its seed."""
    jobs = [(seed, group) for group in GROUPS for seed in cfg.seeds]  # process_judge last (GROUPS order)

    def args(seed: int, group: str) -> tuple[Any, ...]:
        scores = judge_scores() if group == "process_judge" else {}
        return cfg, seed, group, out / f"seed_{seed}", tokenizer, tokenizer_dir, teacher, data, scores

    if pool is None:
        results = [run_group(*args(seed, group), log) for seed, group in jobs]
    else:
        futures = [pool.submit(run_group, *args(seed, group)) for seed, group in jobs]
        results = []
        for (seed, group), future in zip(jobs, futures, strict=True):
            results.append(future.result())
            log(f"[seed {seed}] {group} done: {results[-1]['timings_seconds']}")
    per_seed: list[dict[str, Any]] = []
    for seed in cfg.seeds:
        mine = [r for r in results if r["seed"] == seed]
        merged: dict[str, Any] = {"seed": seed, "students": {}, "timings_seconds": {}}
        for r in mine:
            merged["students"].update(r["students"])
            merged["timings_seconds"].update(r["timings_seconds"])
            for key in ("int8", "params"):
                if key in r:
                    merged[key] = r[key]
        merged["students"] = {name: merged["students"][name] for name in STUDENTS}
        per_seed.append(merged)
    return per_seed


def run_pipeline(cfg: ReasoningConfig, out: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train and evaluate every student for every seed; write ``out/report.json`` and ``out/report.md``."""
    started = time.perf_counter()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    out.mkdir(parents=True, exist_ok=True)
    teacher, teacher_note = resolve_teacher(cfg.teacher)
    tokenizer, tokenizer_dir = build_tokenizer(cfg, teacher, out)
    data = prepare_data(cfg, out)
    log(f"{teacher_note}; data {data['counts']}; seeds {cfg.seeds}; {cfg.train.steps} steps per student; "
        f"{cfg.workers} worker(s) x {cfg.num_threads} thread(s)")
    pool = worker_pool(cfg.workers)
    judge: dict[str, Any] = {}

    def judge_scores() -> Mapping[tuple[str, tuple[str, ...]], list[float]]:
        if "scores" not in judge:  # the judge trains in a worker (submitted first) or here, on first use
            result = (judge["job"].result() if "job" in judge
                      else train_and_score_judge(cfg, out, data["paths"]["process_train"]))
            judge["info"], judge["scores"] = result
            log(f"judge: pairwise accuracy {result[0]['pairwise_accuracy']:.3f}, step AUROC "
                f"{result[0]['step_auroc']}")
        return judge["scores"]

    try:
        if pool is not None:  # the judge trains in one worker while the other builds the caches, then students
            judge["job"] = pool.submit(train_and_score_judge, cfg, out, data["paths"]["process_train"])
        caches = (build_teacher_caches(cfg, teacher, data["paths"], out, log) if teacher and cfg.kd.cache_top_k
                  else None)
        per_seed = run_groups(cfg, out, tokenizer, tokenizer_dir, teacher, data, judge_scores, log, pool)
        judge_scores()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    judge_info = judge["info"]
    students = aggregate(per_seed)
    int8 = aggregate_int8(per_seed)
    report: dict[str, Any] = {
        "task": cfg.task, "teacher": teacher, "teacher_note": teacher_note, "data": data["counts"],
        "seeds": list(cfg.seeds), "steps_per_student": cfg.train.steps,
        "params": per_seed[0]["params"],
        "students": students, "int8": int8, "judge": judge_info, "acceptance": acceptance(students),
        "teacher_cache": caches,
        "per_seed_timings_seconds": {str(r["seed"]): r["timings_seconds"] for r in per_seed},
        "per_seed_int8": {str(r["seed"]): r["int8"] for r in per_seed},
        "threads": torch.get_num_threads(),
        "workers": cfg.workers,
    }
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    (out / "report.md").write_text(format_table(report) + "\n")
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.reasoning_pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/reasoning.yaml", help="YAML config (ReasoningConfig)")
    parser.add_argument("--out", default="runs/reasoning", help="output directory")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_reasoning_config(args.config)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = run_pipeline(cfg, Path(args.out))
    print()
    print(format_table(report))
    print()
    print(f"acceptance: {json.dumps(report['acceptance'])}")
    print(f"report: {Path(args.out) / 'report.json'}; wall {report['wall_seconds']}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
