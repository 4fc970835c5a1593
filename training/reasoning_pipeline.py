"""Reasoning students compared on the bundled arithmetic task (``make reasoning``).

``python -m training.reasoning_pipeline --config configs/reasoning.yaml --out runs/reasoning`` trains, on the
same data and student shape:

* ``no_cot``: answer-only completions (``<answer>9</answer>``), cross-entropy only (the bundled teacher
  always writes a chain of thought, so its token distributions do not fit answer-only sequences);
* ``cot``: chain-of-thought completions, KD from the teacher + CE (CE alone without a teacher);
* ``latent``: the CoT student continued through the latent curriculum (:mod:`training.latent_curriculum`):
  at the final stage every step is reasoned in hidden states and only the answer is decoded;
* ``process``: process-supervised KD (:mod:`training.distill_process`) on data where a share of the
  solutions is corrupted and step-labelled;
* int8: the CoT student quantized per channel (max-abs scales, ``plain``), against a twin run that shares
  its first ``qat.start_fraction`` of training and then trains quantization-aware (learned scales, ``qat``).

Evaluation is greedy decoding on held-out prompts (never trained on, see :mod:`training.toy_data`):
``accuracy`` (right answer), ``step_accuracy`` (share of generated textual steps that verify as a derivation
from the question; ``null`` for students that write no steps, with the reason in ``step_accuracy_note``),
``mean_generated_tokens`` (decoded tokens after the prompt, eos included; for the latent student the tokens
after ``<eot>``, with its latent positions reported separately). Writes ``OUT/report.json``, ``OUT/report.md``
(the table, also printed), the student artifacts under ``OUT/students`` and the int8 exports under
``OUT/int8``.

The teacher: ``teacher: assets/teacher`` is used when ``assets/teacher/manifest.json`` exists; otherwise (or
with ``teacher: null``) every student trains from scratch with CE and a tokenizer trained on the task.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from training.data_adapter import eval_batches
from training.evaluation import evaluate_loss
from training.generation import generate, left_pad
from training.kd_config import KDConfig, StudentShape
from training.latent_curriculum import LatentCurriculumConfig, LatentTrainer, evaluate_latent, step_metrics
from training.latent_model import save_latent_student
from training.model import Student
from training.quant_qat_int8 import (
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
from training.step_data import mix_corrupted
from training.tasks import get_task
from training.tasks.markup import format_completion
from training.tokenizer import DistilleryTokenizer
from training.toy_data import task_examples, write_jsonl
from training.trainer import KDTrainer

STUDENTS = ("no_cot", "cot", "latent", "process")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSection(_Strict):
    train: int = Field(10000, gt=0, description="training examples (prompts not held out)")
    val: int = Field(64, gt=0, description="held-out examples for the trainers' validation loss")
    test: int = Field(200, gt=0, description="held-out examples every student is scored on")
    max_length: int = Field(80, gt=8)
    tokenizer_vocab: int = Field(300, gt=271, description="vocabulary of the tokenizer trained without a teacher")


class TrainSection(_Strict):
    """Shared optimizer settings of the KD-trainer students, and each one's number of steps."""

    batch_size: int = Field(32, gt=0)
    lr: float = Field(3e-3, gt=0)
    warmup_steps: int = Field(30, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    cot_steps: int = Field(2000, gt=0)
    no_cot_steps: int = Field(2000, gt=0)
    process_steps: int = Field(2000, gt=0)


class KDSection(_Strict):
    divergence: Literal["forward_kl", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl"] = "forward_kl"
    temperature: float = Field(1.0, gt=0)
    kd_weight: float = Field(1.0, ge=0)
    ce_weight: float = Field(0.5, ge=0)


class ProcessSection(_Strict):
    enabled: bool = True
    corrupt_fraction: float = Field(0.5, ge=0, le=1, description="share of training examples given a wrong copy")
    unlikelihood_weight: float = Field(0.1, ge=0)
    wrong_weight: float = Field(1.0, ge=0)


class EvalSection(_Strict):
    max_new_tokens: int = Field(48, gt=0)
    batch_size: int = Field(64, gt=0)


class ReasoningConfig(_Strict):
    """configs/reasoning.yaml"""

    task: Literal["arithmetic"] = "arithmetic"
    teacher: str | None = Field("assets/teacher", description="teacher artifact; used only if its manifest exists")
    seed: int = 0
    num_threads: int | None = Field(1, gt=0, description="torch CPU threads (1 on shared machines)")
    data: DataSection = DataSection()
    student: StudentShape = StudentShape()
    train: TrainSection = TrainSection()
    kd: KDSection = KDSection()
    latent: LatentCurriculumConfig = LatentCurriculumConfig(steps_per_stage=500)
    process: ProcessSection = ProcessSection()
    qat: QATConfig = QATConfig()
    eval: EvalSection = EvalSection()


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


def kd_run_config(cfg: ReasoningConfig, out_dir: Path, tokenizer_dir: str, teacher: str | None, train_file: str,
                  val_file: str, max_steps: int, **extra: Any) -> dict[str, Any]:
    """A KD config (as a dict) for one student run of the shared budget."""
    t = cfg.train
    return {
        "out_dir": str(out_dir),
        "seed": cfg.seed,
        "tokenizer": tokenizer_dir,
        "task": cfg.task,
        "student": cfg.student.model_dump(),
        "teacher": {"kind": "checkpoint", "path": teacher} if teacher else None,
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
    """Train with :class:`~training.trainer.KDTrainer`; returns the student and a summary."""
    result = KDTrainer(KDConfig.model_validate(cfg_dict)).train()
    if result.student_dir is None:
        raise RuntimeError(f"training in {cfg_dict['out_dir']} ended with status {result.status}")
    return Student.from_pretrained(str(result.student_dir)), {
        "steps": result.step, "wall_seconds": round(result.wall_seconds, 1), "student_dir": str(result.student_dir)}


def train_cot_with_qat_twin(cfg: ReasoningConfig, base: dict[str, Any], out: Path
                            ) -> tuple[Student, dict[str, Any], Student, dict[str, Any]]:
    """The CoT student and its QAT twin: one run to the QAT start step, checkpointed; then the plain run and
    the QAT run (:class:`~training.quant_qat_int8.QATHook`) both continue from that checkpoint (same data
    order, same schedule). Returns (plain student, summary, QAT student (QAT modules on), summary)."""
    max_steps = base["optim"]["max_steps"]
    start = min(qat_start_step(max_steps, cfg.qat.start_fraction), max_steps - 1)  # at least one QAT step
    started = time.perf_counter()
    shared_wall = 0.0
    qat_cfg = {**base, "out_dir": str(out / "runs" / "cot_qat")}
    if start > 0:
        first = KDTrainer(KDConfig.model_validate({**base, "resume": "never"}), stop_after_steps=start).train()
        if first.checkpoint is None or first.step != start:
            raise RuntimeError(f"the shared CoT run stopped at step {first.step}, expected {start}")
        fork = out / "runs" / "qat_fork" / first.checkpoint.name
        if fork.exists():
            shutil.rmtree(fork)
        shutil.copytree(first.checkpoint, fork)
        shared_wall = time.perf_counter() - started
        plain_cfg = {**base, "resume": str(fork)}
        qat_cfg["resume"] = str(fork)
    else:
        plain_cfg = base
    plain_student, plain_info = train_kd_student(plain_cfg)
    plain_info["wall_seconds"] = round(plain_info["wall_seconds"] + shared_wall, 1)
    hook = QATHook(start, learn_scales=cfg.qat.learn_scales)
    trainer = KDTrainer(KDConfig.model_validate(qat_cfg), hooks=[hook])
    result = trainer.train()
    if result.student_dir is None or hook.enabled_at is None:
        raise RuntimeError(f"the QAT run ended with status {result.status} (QAT enabled at {hook.enabled_at})")
    qat_student = trainer.student.eval()
    qat_info = {"steps": result.step, "qat_steps": result.step - hook.enabled_at, "qat_start_step": hook.enabled_at,
                "shared_steps": start, "wall_seconds": round(result.wall_seconds, 1),
                "student_dir": str(result.student_dir), "scale_drift": round(scale_drift(qat_student), 5)}
    return plain_student, plain_info, qat_student, qat_info


def train_process(cfg: ReasoningConfig, out: Path, tokenizer_dir: str, teacher: str | None,
                  paths: Mapping[str, str]) -> tuple[Student, dict[str, Any]]:
    """The process-supervised student (:func:`training.distill_process.train_process_student`)."""
    from training.distill_process import train_process_student

    base = kd_run_config(cfg, out / "runs" / "process", tokenizer_dir, teacher, paths["process_train"],
                         paths["val"], cfg.train.process_steps)
    base["process"] = {"unlikelihood_weight": cfg.process.unlikelihood_weight,
                       "wrong_weight": cfg.process.wrong_weight}
    result = train_process_student(base)
    if result.student_dir is None:
        raise RuntimeError(f"process training ended with status {result.status}")
    return Student.from_pretrained(str(result.student_dir)), {
        "steps": result.step, "wall_seconds": round(result.wall_seconds, 1), "student_dir": str(result.student_dir)}


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
    scorer = get_task("arithmetic").score
    prompts = [str(e["prompt"]) for e in examples]
    texts, counts = generate_texts(model, tokenizer, prompts, max_new_tokens, batch_size)
    totals: dict[str, float] = {}
    for example, text in zip(examples, texts, strict=True):
        for key, value in scorer(dict(example), text).items():  # type: ignore[arg-type]
            totals[key] = totals.get(key, 0.0) + float(value)
    n = max(len(texts), 1)
    out: dict[str, Any] = {k: v / n for k, v in totals.items()}
    out.update(step_metrics(prompts, texts))
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
    max_new, max_len = cfg.eval.max_new_tokens, cfg.data.max_length
    sample = [tokenizer.encode(str(e["prompt"]) + str(e["completion"]), add_bos=True) for e in examples[:64]]
    ids, mask = left_pad(sample, tokenizer.pad_id)
    plain_fp32_loss = gold_loss(plain, tokenizer, test_file, max_len, out)
    report: dict[str, Any] = {}
    for name, model in (("plain", plain), ("qat", qat)):
        state = export_int8(model)
        path = save_int8(state, out / "int8" / f"cot_{name}_int8.safetensors")
        int8_model = materialize_int8(model)
        acc = int8_accuracy(model, tokenizer, list(examples), "arithmetic", max_new)
        entry: dict[str, Any] = {"accuracy": acc["accuracy"], "export": str(path),
                                 "export_bytes": int8_size_bytes(state),
                                 "test_loss": gold_loss(int8_model, tokenizer, test_file, max_len, out),
                                 "error_vs_unquantized": quantization_error(model, ids, mask)}
        if name == "plain":
            own_fp32, own_loss = plain_fp32_accuracy, plain_fp32_loss
            entry["scales"] = "max|W|/127 per output channel"
        else:
            shadow = shadow_fp32(model)
            own_fp32 = evaluate_text_student(shadow, tokenizer, examples, max_new, 256)["accuracy"]
            own_loss = gold_loss(shadow, tokenizer, test_file, max_len, out)
            entry["scales"] = "learned (LSQ) per output channel"
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


def format_table(report: Mapping[str, Any]) -> str:
    """The Markdown tables of a report."""
    lines = ["| student | accuracy | step_accuracy | mean_generated_tokens | latent positions | train steps |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name in STUDENTS:
        entry = report["students"].get(name)
        if entry is None:
            lines.append(f"| {name} | not run | | | | |")
            continue
        lines.append(f"| {name} | {_fmt(entry['accuracy'])} | {_fmt(entry['step_accuracy'])} | "
                     f"{_fmt(entry['mean_generated_tokens'], 1)} | {_fmt(entry.get('mean_latent_positions', 0.0), 1)} "
                     f"| {entry['train']['steps']} |")
    int8 = report["int8"]
    lines += ["", "| CoT student int8 | int8 accuracy | own fp32 accuracy | drop vs plain fp32 | int8 test loss | "
              "test loss increase vs plain fp32 |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name in ("plain", "qat"):
        e = int8[name]
        lines.append(f"| {name} | {_fmt(e['accuracy'])} | {_fmt(e['fp32_accuracy'])} | {_fmt(e['drop_vs_plain_fp32'])} "
                     f"| {e['test_loss']:.4f} | {e['test_loss_increase_vs_plain_fp32']:+.4f} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------------------


def run_pipeline(cfg: ReasoningConfig, out: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train and evaluate every student; write ``out/report.json`` and ``out/report.md``."""
    started = time.perf_counter()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        timings[name] = round(time.perf_counter() - since, 1)
        return time.perf_counter()

    t = time.perf_counter()
    teacher, teacher_note = resolve_teacher(cfg.teacher)
    tokenizer, tokenizer_dir = build_tokenizer(cfg, teacher, out)
    data = prepare_data(cfg, out)
    paths, test = data["paths"], data["test"]
    log(f"[1/6] {teacher_note}; data {data['counts']}")
    t = lap("data", t)
    ev = cfg.eval

    def evaluate(model: Student) -> dict[str, Any]:
        return evaluate_text_student(model, tokenizer, test, ev.max_new_tokens, ev.batch_size)

    students: dict[str, dict[str, Any]] = {}
    runs = out / "runs"
    if runs.exists():  # the trainers' work area: a rerun starts fresh (their checkpoints must not mix)
        shutil.rmtree(runs)
    log(f"[2/6] no-CoT student ({cfg.train.no_cot_steps} steps, cross-entropy only)")
    no_cot, info = train_kd_student(kd_run_config(cfg, runs / "no_cot", tokenizer_dir, None, paths["no_cot_train"],
                                                  paths["no_cot_val"], cfg.train.no_cot_steps))
    students["no_cot"] = {**evaluate(no_cot), "train": {**info, "loss": "cross-entropy (answer only)"},
                          "step_accuracy_note": STEP_NOTES["no_cot"]}
    t = lap("no_cot", t)

    log(f"[3/6] CoT student ({cfg.train.cot_steps} steps) and its QAT twin (QAT from "
        f"{qat_start_step(cfg.train.cot_steps, cfg.qat.start_fraction)})")
    base = kd_run_config(cfg, runs / "cot", tokenizer_dir, teacher, paths["cot_train"], paths["val"],
                         cfg.train.cot_steps)
    cot, cot_info, qat_model, qat_info = train_cot_with_qat_twin(cfg, base, out)
    students["cot"] = {**evaluate(cot), "train": {**cot_info, "loss": "KD + CE" if teacher else "cross-entropy"}}
    t = lap("cot_and_qat", t)

    lc = cfg.latent
    log(f"[4/6] latent curriculum from the CoT student: stages {lc.first_stage}..{lc.max_stage}, "
        f"c={lc.latents_per_step}")
    latent_init = Student.from_pretrained(cot_info["student_dir"]).train()
    latent_result = LatentTrainer(lc, latent_init, tokenizer, data["train"], log=log).train()
    latent_dir = save_latent_student(latent_result.student, out / "students" / "latent", tokenizer=tokenizer,
                                     card={"name": "distillery-latent-student",
                                           "description": "CoT student continued through a Coconut curriculum."})
    latent_eval = evaluate_latent(latent_result.student, tokenizer, test, ev.max_new_tokens, ev.batch_size)
    students["latent"] = {**latent_eval, "step_accuracy_note": STEP_NOTES["latent"], "train": {
        "steps": latent_result.steps, "wall_seconds": round(latent_result.wall_seconds, 1),
        "init": "the CoT student", "cot_steps_before": cot_info["steps"], "stages": latent_result.stages,
        "student_dir": str(latent_dir), "loss": "cross-entropy after <eot>"}}
    t = lap("latent", t)

    process_note = None
    if cfg.process.enabled:
        log(f"[5/6] process-supervised student ({cfg.train.process_steps} steps)")
        process, process_info = train_process(cfg, out, tokenizer_dir, teacher, paths)
        students["process"] = {**evaluate(process), "train": {
            **process_info, "loss": ("KD + CE" if teacher else "CE") + " with per-token process weights",
            "wrong_solutions": data["counts"]["process_wrong"]}}
        t = lap("process", t)
    else:
        process_note = "process.enabled is false in the config"

    log("[6/6] int8: plain vs QAT")
    int8 = int8_report(cot, qat_model, students["cot"]["accuracy"], tokenizer, test, paths["test"], cfg, out)
    int8["qat"]["train"] = qat_info
    lap("int8", t)

    report: dict[str, Any] = {
        "task": cfg.task, "teacher": teacher, "teacher_note": teacher_note, "data": data["counts"],
        "params": no_cot.num_parameters(), "students": students, "int8": int8,
        "comparisons": {
            "latent_fewer_tokens_than_cot": students["latent"]["mean_generated_tokens"]
            < students["cot"]["mean_generated_tokens"],
            "accuracy": {k: v["accuracy"] for k, v in students.items()},
            "int8_qat_loses_less": int8["qat_loses_less"],
            "int8_qat_lower_test_loss": int8["qat_lower_int8_test_loss"],
        },
        "timings_seconds": timings, "threads": torch.get_num_threads(),
        "total_train_steps": sum(int(v["train"]["steps"]) for v in students.values())
        + int(qat_info["qat_steps"]),
    }
    if process_note:
        report["process_note"] = process_note
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
    comp = report["comparisons"]
    print(f"latent student generates fewer tokens than CoT: {comp['latent_fewer_tokens_than_cot']}; "
          f"int8 after QAT loses less than plain int8: {comp['int8_qat_loses_less']}")
    print(f"report: {Path(args.out) / 'report.json'}; wall {report['wall_seconds']}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
